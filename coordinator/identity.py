"""Node identities (adapter): the cluster CA on disk, enrolment tokens and node certificates in the store,
revocation published as files the brokers read. Decisions come from `coordinator.enroll` (pure)."""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.wire import valid_id
from coordinator import enroll
from coordinator.enroll import Issue, NodeCertRecord, Refuse, TokenRecord
from coordinator.files import atomic_write
from coordinator.pki import CertificateAuthority, CertRole, Issued, PkiError, fingerprint
from coordinator.store import Conflict, Store, put

log = logging.getLogger(__name__)

SECRET_FILE = "enroll.secret"  # noqa: S105 - a file name
REVOKED_FILE = "revoked"  # hex serials, read by `cloudless broker --revoked`
CRL_FILE = "crl.pem"  # for Mosquitto's crlfile
MAX_TOKEN_TTL_S = 7 * 86400
ENROL_ATTEMPTS = 16  # compare-and-swap rounds on a token's use count before asking the device to retry


def token_key(token_id: str) -> str:
    return f"/tokens/{token_id}"


def cert_key(node_id: str) -> str:
    return f"/certs/{node_id}"


@dataclass(frozen=True)
class IdentityConfig:
    node_cert_lifetime_s: float = 3 * 86400  # short-lived; agents renew at 2/3 of it
    enroll_url: str = ""  # the API URL put into tokens
    broker_url: str = ""  # what enrolled agents are told to dial (mqtts://...)


LOCAL_CERT_LIFETIME_S = 365 * 86400
RENEW_AT = 2 / 3  # of a certificate's lifetime


class IdentityService:
    def __init__(self, pki_dir: Path, store: Store, cfg: IdentityConfig, *, clock: Callable[[], float]) -> None:
        self.dir = pki_dir
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.ca, created = CertificateAuthority.load_or_create(pki_dir, "cluster", clock())
        if created:
            log.warning("created the cluster CA in %s (key 0600): back it up; losing it means re-enrolling every "
                        "node", pki_dir)
        self.secret = _load_or_create_secret(pki_dir / SECRET_FILE)
        self.ca_fingerprint = fingerprint(self.ca.cert_pem)

    # ---- tokens --------------------------------------------------------------------------------------------

    async def create_token(self, *, ttl_s: float, max_uses: int, labels: dict[str, str],
                           zone: str) -> tuple[str, TokenRecord]:
        if not 60 <= ttl_s <= MAX_TOKEN_TTL_S:
            raise PkiError(f"ttl: must be between 1m and {MAX_TOKEN_TTL_S // 86400}d")
        if not 1 <= max_uses <= 10_000:
            raise PkiError("maxUses: must be 1-10000")
        now = self.clock()
        record = TokenRecord(token_id=secrets.token_hex(8), max_uses=max_uses, expires_at=now + ttl_s,
                             created_at=now, labels=dict(labels), zone=zone)
        await self.store.txn([put(token_key(record.token_id), _json(record), expect=0)])
        token = enroll.mint(self.secret, record, url=self.cfg.enroll_url, ca_fingerprint=self.ca_fingerprint, now=now)
        return token, record

    async def tokens(self) -> list[TokenRecord]:
        return [_token(e.value) for e in await self.store.list("/tokens/")]

    async def revoke_token(self, token_id: str) -> TokenRecord | None:
        entry = await self.store.get(token_key(token_id))
        if entry is None:
            return None
        record = dataclasses.replace(_token(entry.value), revoked=True)
        await self.store.txn([put(entry.key, _json(record), expect=entry.mod_revision)])
        return record

    # ---- certificates --------------------------------------------------------------------------------------

    async def enroll(self, token: str, node_id: str, csr_pem: bytes) -> tuple[Issued, Issue] | Refuse:
        now = self.clock()
        claims = enroll.verify(self.secret, token, now)
        if isinstance(claims, Refuse):
            return claims
        issued: Issued | None = None
        for _ in range(ENROL_ATTEMPTS):
            entry = await self.store.get(token_key(str(claims["jti"])))
            record = _token(entry.value) if entry else None
            existing = await self.node_cert(node_id) if valid_id(node_id) else None
            verdict = enroll.check(claims, record, existing, node_id, now)
            if isinstance(verdict, Refuse):
                return verdict
            assert record is not None and entry is not None
            if issued is None:
                issued = self.ca.issue(csr_pem, identity=node_id, role=CertRole.NODE, now=now,
                                       lifetime_s=self.cfg.node_cert_lifetime_s)
            used = dataclasses.replace(record, uses=record.uses + 1, nodes=(*record.nodes, node_id))
            cert = NodeCertRecord(node_id, issued.serial, issued.not_after, certificate=issued.cert_pem.decode())
            # the use is counted with a compare-and-swap: two devices racing on a one-use token cannot both win; a
            # device that lost the race to another use of a many-use token reads the count again and is checked again
            try:
                await self.store.txn([put(entry.key, _json(used), expect=entry.mod_revision),
                                      put(cert_key(node_id), _json(cert))])
            except Conflict:
                continue
            return issued, verdict
        return Refuse(f"token {claims['jti']} is being used by many devices at once; enrol again in a moment", 503)

    async def renew(self, node_id: str, serial: int, csr_pem: bytes) -> Issued | Refuse:
        """Renewal over an authenticated channel: the caller proved `node_id` with a certificate of `serial`."""
        current = await self.node_cert(node_id)
        if current is None or current.revoked or current.serial != serial:
            return Refuse(f"certificate {serial:x} is not {node_id}'s current certificate (revoked or replaced); "
                          "re-enrol with a new token", 403)
        now = self.clock()
        issued = self.ca.issue(csr_pem, identity=node_id, role=CertRole.NODE, now=now,
                               lifetime_s=self.cfg.node_cert_lifetime_s)
        record = NodeCertRecord(node_id, issued.serial, issued.not_after, certificate=issued.cert_pem.decode(),
                                previous=tuple(current.live_serials(now)))  # the old one stays valid a while
        entry = await self.store.get(cert_key(node_id))
        await self.store.txn([put(cert_key(node_id), _json(record), expect=entry.mod_revision if entry else 0)])
        return issued

    async def node_cert(self, node_id: str) -> NodeCertRecord | None:
        entry = await self.store.get(cert_key(node_id))
        return _cert(entry.value) if entry else None

    async def revoke_node(self, node_id: str) -> NodeCertRecord | None:
        """Put the node's certificate on the deny list; the brokers refuse it (the embedded one at once)."""
        current = await self.node_cert(node_id)
        if current is None:
            return None
        now = self.clock()
        record = dataclasses.replace(current, revoked=True, revoked_at=now)
        at = json.dumps({"node": node_id, "at": now}).encode()
        await self.store.txn([put(cert_key(node_id), _json(record)),
                              *(put(f"/revoked/{serial:x}", at) for serial, _ in current.live_serials(now))])
        await self.publish_revocations()
        return record

    async def publish_revocations(self) -> None:
        entries = await self.store.list("/revoked/")
        pairs = [(int(e.key.rsplit("/", 1)[1], 16), float(json.loads(e.value)["at"])) for e in entries]
        atomic_write(self.dir / REVOKED_FILE, "".join(f"{s:x}\n" for s, _ in pairs).encode(), mode=0o644)
        atomic_write(self.dir / CRL_FILE, self.ca.crl(pairs, self.clock()), mode=0o644)

    def issue_local(self, name: str, role: CertRole, key_pem_path: Path, cert_path: Path) -> None:
        """Certificates for this machine's own components (coordinator, dashboard), written 0600."""
        from coordinator.pki import key_pem, make_csr, new_key

        key = new_key()
        issued = self.ca.issue(make_csr(key, name), identity=name, role=role, now=self.clock(),
                               lifetime_s=LOCAL_CERT_LIFETIME_S)
        atomic_write(key_pem_path, key_pem(key), mode=0o600)
        atomic_write(cert_path, issued.cert_pem, mode=0o644)

    def ensure_own_certs(self, coordinator_id: str, hosts: list[str], *, server: bool = False) -> set[str]:
        """This coordinator's MQTT client certificate (`coordinator@<id>.pem`) and its API server certificate
        (`api.pem`), issued again when missing or due (`server`: the server one in any case, e.g. at start, as the
        host names may have changed). Returns what was issued: "client", "server"."""
        from coordinator.pki import key_pem, new_key

        issued: set[str] = set()
        name = f"coordinator@{coordinator_id}"
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        if self.local_cert_due(cert, key):
            self.issue_local(name, CertRole.COORDINATOR, key, cert)
            issued.add("client")
        if server or self.local_cert_due(self.dir / "api.pem", self.dir / "api.key"):
            api_key = new_key()
            names = sorted({*hosts, "localhost", "127.0.0.1"} - {"", "0.0.0.0"})
            server_cert = self.ca.issue_server(api_key, hosts=names, now=self.clock(), lifetime_s=LOCAL_CERT_LIFETIME_S)
            atomic_write(self.dir / "api.key", key_pem(api_key), mode=0o600)
            atomic_write(self.dir / "api.pem", server_cert.cert_pem, mode=0o644)
            issued.add("server")
        return issued

    def local_cert_due(self, cert_path: Path, key_path: Path) -> bool:
        """A certificate of this machine's own (see `issue_local`) is missing, unreadable, not from this CA, not
        the pair of its key (a crash between writing the two), or past two thirds of its lifetime: issue it again
        (the node agents renew at the same point)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return True
        if cert.issuer != x509.load_pem_x509_certificate(self.ca.cert_pem).subject:
            return True
        if cert.public_key() != key.public_key():
            return True
        start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
        return self.clock() >= start + RENEW_AT * (end - start)


def _json(record: object) -> bytes:
    return json.dumps(dataclasses.asdict(record), sort_keys=True).encode()  # type: ignore[call-overload]


def _known(cls: type[Any], d: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` has: a record a newer coordinator wrote (during a rolling upgrade, or after a downgrade)
    may carry more, which this one ignores, as the wire does."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _token(raw: bytes) -> TokenRecord:
    d = json.loads(raw)
    d["nodes"] = tuple(d.get("nodes", ()))
    return TokenRecord(**_known(TokenRecord, d))


def _cert(raw: bytes) -> NodeCertRecord:
    d = json.loads(raw)
    d["previous"] = tuple((int(s), float(t)) for s, t in d.get("previous", ()))
    return NodeCertRecord(**_known(NodeCertRecord, d))


def _load_or_create_secret(path: Path) -> bytes:
    if path.exists():
        secret = path.read_bytes().strip()
        if len(secret) < 32:
            raise PkiError(f"{path}: enrolment secret too short; restore it or delete it to invalidate all tokens")
        return secret
    secret = secrets.token_hex(32).encode()
    atomic_write(path, secret + b"\n")
    return secret
