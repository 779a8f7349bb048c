"""Enrolment: one-time join tokens (signed JWTs) and the decision to issue a node certificate (pure core).

A token is an HS256 JWT signed with the coordinator's enrolment secret. Its claims: `jti` (tracked in the
store: uses counted against `max`, revocable), `exp`, `iat`, optional `labels`/`zone` for the node, and — so
a new device can trust the coordinator before it has any certificate — `urls` (every address the coordinator is
advertised at, tried in order by the device), `url` (the first of them: what agents before `urls` read) and `ca`
(the SHA-256 fingerprint of the cluster CA: the device pins it, like kubeadm's discovery-token-ca-cert-hash).

`check()` decides, from the verified claims, the token's record, the node's certificate record and `now`,
whether to issue: a value `Issue` or `Refuse(reason)`; every refusal names what to do next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from broker.wire import valid_id

ALGORITHM = "HS256"
ISSUER = "cloudless"
CLOCK_SKEW_S = 120  # small devices boot with wrong clocks until NTP catches up


def utc_time(epoch: float) -> str:
    """Unix seconds as people read them in messages and events: 2026-12-07T10:33:00Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    max_uses: int
    uses: int = 0
    revoked: bool = False
    expires_at: float = 0.0
    created_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    zone: str = ""
    nodes: tuple[str, ...] = ()  # node ids enrolled with it


@dataclass(frozen=True, slots=True)
class NodeCertRecord:
    node_id: str
    serial: int
    not_after: float
    revoked: bool = False
    revoked_at: float = 0.0  # coordinator time of the revocation (0: unknown, a record from before it was kept)
    previous: tuple[tuple[int, float], ...] = ()  # (serial, not_after) of renewed-away, still unexpired certs
    certificate: str = ""  # the current certificate (PEM): its public key is what secrets are sealed to

    def live_serials(self, now: float) -> list[tuple[int, float]]:
        """Every certificate of this node that is still valid by date: all of them go on a revocation."""
        return [(self.serial, self.not_after), *((s, t) for s, t in self.previous if t > now)]


@dataclass(frozen=True, slots=True)
class Issue:
    node_id: str
    labels: dict[str, str]
    zone: str


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    status: int = 403


MAX_URLS = 16


def enrol_urls(url: str | Sequence[str]) -> list[str]:
    """The URLs a token carries, in order, without duplicates: a sequence, or one string holding a comma-separated
    list (what `cloudless coordinator --advertise` passes through from `cloudless up --advertise A,B`)."""
    items = url.split(",") if isinstance(url, str) else list(url)
    return list(dict.fromkeys(u.strip().rstrip("/") for u in items if u.strip()))[:MAX_URLS]


def mint(secret: bytes, record: TokenRecord, *, url: str | Sequence[str], ca_fingerprint: str, now: float) -> str:
    urls = enrol_urls(url)
    claims: dict[str, Any] = {"iss": ISSUER, "jti": record.token_id, "iat": int(now), "exp": int(record.expires_at),
                              "max": record.max_uses, "url": urls[0] if urls else "", "urls": urls,
                              "ca": ca_fingerprint}
    if record.labels:
        claims["labels"] = record.labels
    if record.zone:
        claims["zone"] = record.zone
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: bytes, token: str, now: float) -> Mapping[str, Any] | Refuse:
    """Signature, issuer and expiry (against `now`, with clock-skew leeway); a Refuse names the failed check."""
    try:
        claims: Mapping[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "jti", "iss"], "verify_exp": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        return Refuse("token signature is invalid (forged, or minted by another cluster)", 401)
    except jwt.InvalidTokenError as exc:
        return Refuse(f"token is malformed: {exc}", 401)
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return Refuse("token is malformed: exp is not a number", 401)
    if now > exp + CLOCK_SKEW_S:
        return Refuse("token expired: ask an admin for a new one (`cloudless token create`)", 401)
    return claims


def unverified_claims(token: str) -> Mapping[str, Any]:
    """What a device reads from its token before it trusts anything: where to enrol and which CA to pin.
    Safe to read unverified: a forged url/ca only leads the device to a server the CA pin then rejects."""
    try:
        claims: Mapping[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise ValueError(f"--token: not a Cloudless enrolment token ({exc})") from None
    return claims


def check(claims: Mapping[str, Any], record: TokenRecord | None, existing: NodeCertRecord | None, node_id: str,
          now: float) -> Issue | Refuse:
    if not valid_id(node_id):
        return Refuse(f"nodeId {node_id[:80]!r} is not a valid node id (1-63 letters, digits, '.', '_', '-')", 400)
    if record is None:
        return Refuse("token unknown to this cluster (deleted, or from another cluster)", 401)
    if record.revoked:
        return Refuse("token was revoked", 401)
    if now > record.expires_at + CLOCK_SKEW_S:
        return Refuse("token expired: ask an admin for a new one (`cloudless token create`)", 401)
    if record.uses >= record.max_uses:
        return Refuse(f"token already used {record.uses} time(s) (max {record.max_uses})", 401)
    if existing is not None and not existing.revoked and existing.not_after > now:
        return Refuse(f"node {node_id} already has a valid certificate (until {utc_time(existing.not_after)}); "
                      f"renew it from that node, or revoke it (`cloudless node revoke {node_id}`) before "
                      "re-enrolling", 409)
    if existing is not None and existing.revoked and record.created_at <= existing.revoked_at:
        return Refuse(f"node {node_id} was revoked after this token was created: only a token created since "
                      "(`cloudless token create`) enrols it again, so a copy of an older token cannot bring a "
                      "revoked node back", 403)
    labels = claims.get("labels") if isinstance(claims.get("labels"), dict) else {}
    zone = claims.get("zone") if isinstance(claims.get("zone"), str) else ""
    return Issue(node_id, {str(k): str(v) for k, v in dict(labels or {}).items()}, str(zone or ""))
