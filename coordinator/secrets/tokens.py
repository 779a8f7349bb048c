"""Secret access tokens: short-lived JWTs bound to one secret and one audience (pure core; `now` is a parameter).

A token lets one consumer (its *audience*: a workload, a service, a person's tool — any name the secret lists
in its allowed audiences) read one secret's value. Claims: `iss` "cloudless-secrets", `sub` "NS/NAME", `sid`
the secret's uid (a secret deleted and re-created with the same name does not honour old tokens), `aud` exactly
one audience, `jti` the token id, `iat`, `exp`. The header's `kid` names the master key the signing key was
derived from.

Signing key: HS256 with a key derived from a master key, `HKDF-SHA256(master, info="cloudless-secrets-token-
signing/v1" 0 key-id)` (RFC 5869), instead of a token secret kept in the store. Why: the store holds only
ciphertext; a signing secret stored beside it would let anyone with a copy of the database mint tokens and read
every secret through the API. Derived keys need no storage, survive restarts, match on every coordinator that has
the key file, and domain separation keeps them independent of the wrapping use of the same master key. Tokens
are signed with the active key; after a master-key rotation old tokens keep verifying as long as the old key is
in the keyring (and they expire within 24 h anyway).

The token is a bearer capability, but its uses, expiry and revocation are tracked in a `TokenRecord` in the
store by `jti`: `verify` checks the signature and claims, `admit` checks the record, and both return a
`TokenRejected` value naming the failure instead of raising. The service counts uses with compare-and-swap.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coordinator.secrets.envelope import Keyring

ISSUER = "cloudless-secrets"
ALGORITHM = "HS256"
SIGNING_INFO = b"cloudless-secrets-token-signing/v1"
DEFAULT_TTL_S = 3600.0
MAX_TTL_S = 24 * 3600.0
MIN_TTL_S = 1.0
MAX_USES = 1_000_000
MAX_TOKEN_LEN = 4096
AUDIENCE_MAX_LEN = 253
# One consumer, named exactly: letters, digits and . _ : / @ - (e.g. "billing-api", "workload:prod/web",
# "node:pi-1"). No wildcard or pattern characters: a token or a secret never names a class of consumers.
AUDIENCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}")
WILDCARD_CHARS = frozenset("*?[]{}+#%!^$|\\")


class TokenFailure(StrEnum):
    MALFORMED = "malformed"
    SIGNATURE = "signature-invalid"
    EXPIRED = "expired"
    WRONG_AUDIENCE = "wrong-audience"
    WRONG_SECRET = "wrong-secret"  # noqa: S105 - a failure name
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class TokenRejected:
    failure: TokenFailure
    message: str
    token_id: str = ""  # set once the signature held (for the audit record)


@dataclass(frozen=True, slots=True)
class Claims:
    token_id: str
    namespace: str
    name: str
    secret_uid: str
    audience: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store remembers about a token (never the token itself)."""

    token_id: str
    namespace: str
    name: str
    secret_uid: str
    audience: str
    issued_at: float
    expires_at: float
    max_uses: int | None = None  # None: unlimited within the TTL
    uses: int = 0  # counted only when max_uses is set
    revoked: bool = False
    issued_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.token_id, "namespace": self.namespace, "name": self.name, "secretUid": self.secret_uid,
                "audience": self.audience, "issuedAt": self.issued_at, "expiresAt": self.expires_at,
                "maxUses": self.max_uses, "uses": self.uses, "revoked": self.revoked, "issuedBy": self.issued_by}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TokenRecord:
        return cls(str(doc["id"]), str(doc["namespace"]), str(doc["name"]), str(doc["secretUid"]),
                   str(doc["audience"]), float(doc["issuedAt"]), float(doc["expiresAt"]),
                   None if doc.get("maxUses") is None else int(doc["maxUses"]), int(doc.get("uses", 0)),
                   bool(doc.get("revoked", False)), str(doc.get("issuedBy", "")))

    def used(self) -> TokenRecord:
        return dataclasses.replace(self, uses=self.uses + 1)


class SigningKeys:
    """HS256 keys by master key id, derived once per keyring. `repr` is redacted."""

    __slots__ = ("_active", "_keys")

    def __init__(self, keyring: Keyring) -> None:
        self._keys = {kid: _derive(k.material, kid) for kid, k in keyring.keys.items()}
        self._active = keyring.active_id

    @property
    def active_id(self) -> str:
        return self._active

    def get(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        return f"SigningKeys(ids={sorted(self._keys)}, active={self._active!r}, keys=<redacted>)"


def _derive(master: bytes, key_id: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=SIGNING_INFO + b"\x00" + key_id.encode()).derive(master)


# ---- validation (each returns the problem, or None) ------------------------------------------------------------

def audience_problem(audience: object) -> str | None:
    if not isinstance(audience, str) or not audience:
        return "must be a non-empty string"
    if WILDCARD_CHARS & set(audience):
        return (f"{audience[:80]!r}: wildcards and patterns are not allowed; name exactly one consumer "
                "(letters, digits, '.', '_', ':', '/', '@', '-')")
    if len(audience) > AUDIENCE_MAX_LEN or AUDIENCE_PATTERN.fullmatch(audience) is None:
        return (f"{audience[:80]!r}: 1-{AUDIENCE_MAX_LEN} letters, digits, '.', '_', ':', '/', '@', '-', "
                "starting with a letter or digit")
    return None


def ttl_problem(ttl_s: float) -> str | None:
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        return f"must be between {MIN_TTL_S:g}s and 24h (default 1h), got {ttl_s:g}s"
    return None


def max_uses_problem(max_uses: object) -> str | None:
    if max_uses is None:
        return None
    if isinstance(max_uses, bool) or not isinstance(max_uses, int) or not 1 <= max_uses <= MAX_USES:
        return f"must be a whole number from 1 to {MAX_USES} (or absent for unlimited)"
    return None


# ---- minting and checking -------------------------------------------------------------------------------------

def mint(keys: SigningKeys, record: TokenRecord) -> str:
    claims = {"iss": ISSUER, "sub": f"{record.namespace}/{record.name}", "sid": record.secret_uid,
              "aud": record.audience, "jti": record.token_id, "iat": int(record.issued_at),
              "exp": int(record.expires_at)}
    key = keys.get(keys.active_id)
    assert key is not None  # SigningKeys always holds its active key
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": keys.active_id})


def verify(keys: SigningKeys, token: str, *, now: float, namespace: str, name: str,
           audience: str) -> Claims | TokenRejected:
    """Signature, then the secret, the audience and expiry against `now` (no leeway: the coordinator issues and
    checks with its own clock)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LEN:
        return TokenRejected(TokenFailure.MALFORMED, "access token is missing or too long")
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return TokenRejected(TokenFailure.SIGNATURE, "access token is signed by an unknown key (forged, from "
                                 "another cluster, or its master key was removed)")
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "jti", "sub", "aud", "sid"], "verify_aud": False, "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        return TokenRejected(TokenFailure.SIGNATURE, "access token signature is invalid")
    except jwt.InvalidTokenError as exc:
        return TokenRejected(TokenFailure.MALFORMED, f"access token is malformed: {exc}")
    jti = str(claims["jti"])[:64]
    if claims.get("sub") != f"{namespace}/{name}":
        return TokenRejected(TokenFailure.WRONG_SECRET, f"access token is for another secret, not {namespace}/{name}",
                             jti)
    if claims.get("aud") != audience:
        return TokenRejected(TokenFailure.WRONG_AUDIENCE, f"access token is not for audience {audience[:80]!r}", jti)
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return TokenRejected(TokenFailure.MALFORMED, "access token is malformed: exp is not a number", jti)
    if now >= exp:
        return TokenRejected(TokenFailure.EXPIRED, "access token expired; ask for a new one", jti)
    return Claims(str(claims["jti"]), namespace, name, str(claims["sid"]), audience, float(exp))


def admit(claims: Claims, record: TokenRecord | None, *, now: float, secret_uid: str,
          allowed_audiences: tuple[str, ...]) -> TokenRejected | None:
    """The store's side of a verified token: known, not revoked, not expired, uses left, for this incarnation of
    the secret, and the audience still allowed by the secret (audiences can be removed after a token is issued)."""
    if record is None:
        return TokenRejected(TokenFailure.UNKNOWN, "access token is unknown (its secret was deleted, or it is from "
                             "another cluster)")
    if record.revoked:
        return TokenRejected(TokenFailure.REVOKED, f"access token {record.token_id} was revoked")
    if now >= record.expires_at:
        return TokenRejected(TokenFailure.EXPIRED, "access token expired; ask for a new one")
    if record.max_uses is not None and record.uses >= record.max_uses:
        return TokenRejected(TokenFailure.EXHAUSTED, f"access token used {record.uses} of {record.max_uses} times")
    if claims.secret_uid != secret_uid or record.secret_uid != secret_uid:
        return TokenRejected(TokenFailure.WRONG_SECRET, f"access token is for an earlier {claims.namespace}/"
                             f"{claims.name}, deleted and re-created since")
    if claims.audience not in allowed_audiences:
        return TokenRejected(TokenFailure.WRONG_AUDIENCE, f"audience {claims.audience!r} is no longer allowed to "
                             f"read {claims.namespace}/{claims.name}")
    return None
