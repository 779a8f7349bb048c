"""Who is on the other end of an overlay connection (pure: certificates and `now` in, a verdict out).

Every overlay connection — peer to peer, node to relay — is mutually authenticated with the certificates the
cluster CA issues at enrolment (ARCHITECTURE §6, §8). The TLS handshake proves that each side holds the private key
of the certificate it presents (CertificateVerify, RFC 8446 §4.4.3); whether that certificate is one of *ours*, for
*whom*, and still good is decided here, because aioquic verifies no client chain at all (PLATFORM-NOTES).

A chain is accepted when, at `now`:
- it is rooted in the cluster CA (cryptography's RFC 5280 path validation, `build_client_verifier`: key usage,
  extended key usage clientAuth, validity of every certificate, signatures, at most one intermediate);
- its leaf names exactly one identity the way the CA writes it (coordinator.pki: O=cloudless, OU=role, CN=id; a
  node's or relay's id again as its only DNS SAN) with an allowed role;
- that identity is the one the control plane said we would meet (`expect`), when it said one;
- neither its serial number nor its identity has been revoked.

Refusals are values (`Refused`, with a reason a metric can count and a detail a log can show), never exceptions:
a bad peer is an event, not a crash (STYLE §4).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

ORG = "cloudless"  # coordinator.pki.ORG: the organisation every certificate of the cluster names


class Reason(StrEnum):
    NO_CERTIFICATE = "no-certificate"
    MALFORMED = "malformed"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNTRUSTED = "untrusted"  # not issued by this cluster's CA (a foreign CA, a self-signed key, a bad signature)
    WRONG_ROLE = "wrong-role"
    WRONG_NODE = "wrong-node"  # a valid certificate for another identity than the one expected
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A verified peer: its identity (node id), role, and what a revocation or a log line may name."""

    identity: str
    role: str
    serial: int
    not_after: float
    fingerprint: str  # sha256 of the leaf's DER, hex


@dataclass(frozen=True, slots=True)
class Revocations:
    """What the control plane says is revoked: serial numbers and whole identities (a revoked node id)."""

    serials: frozenset[int] = frozenset()
    identities: frozenset[str] = frozenset()

    def covers(self, peer: PeerIdentity) -> bool:
        return peer.serial in self.serials or peer.identity in self.identities


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """The cluster CA, parsed once. `from_pem` refuses anything but exactly one CA certificate."""

    ca: x509.Certificate
    _store: Store = field(compare=False, repr=False)

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustAnchor:
        certs = x509.load_pem_x509_certificates(pem)
        if len(certs) != 1:
            raise ValueError(f"the cluster CA file must hold exactly one certificate, found {len(certs)}")
        return cls(certs[0], Store(certs))


def load_chain(ders: Sequence[bytes]) -> list[x509.Certificate] | Refused:
    """DER certificates as a peer sent them (leaf first) -> certificates, or a refusal naming the bad one."""
    chain = []
    for i, der in enumerate(ders):
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            return Refused(Reason.MALFORMED, f"certificate {i} does not parse: {exc}")
    return chain


def check_peer(chain: Sequence[x509.Certificate], *, trust: TrustAnchor, now: float, expect: str | None = None,
               roles: Collection[str] = ("node",), revoked: Revocations = Revocations()) -> PeerIdentity | Refused:
    """Verify a peer's chain (leaf first) for the overlay; see the module docstring for the rules. Never raises: a
    certificate whose fields do not parse (cryptography parses extensions lazily) is refused as malformed."""
    try:
        return _check(chain, trust=trust, now=now, expect=expect, roles=roles, revoked=revoked)
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return Refused(Reason.MALFORMED, f"the certificate does not parse: {exc}"[:300])


def _check(chain: Sequence[x509.Certificate], *, trust: TrustAnchor, now: float, expect: str | None,
           roles: Collection[str], revoked: Revocations) -> PeerIdentity | Refused:
    if not chain:
        return Refused(Reason.NO_CERTIFICATE, "the peer presented no certificate")
    if len(chain) > 2:
        return Refused(Reason.MALFORMED, f"a chain of {len(chain)} certificates (at most leaf + one intermediate)")
    leaf = chain[0]
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    if leaf.not_valid_after_utc < when:
        return Refused(Reason.EXPIRED, f"the certificate of {_cn(leaf)!r} expired at {leaf.not_valid_after_utc:%F %T}Z"
                       " (renew it, or re-enrol a device that was offline past expiry)")
    if leaf.not_valid_before_utc > when:
        return Refused(Reason.NOT_YET_VALID, f"the certificate of {_cn(leaf)!r} is valid only from "
                       f"{leaf.not_valid_before_utc:%F %T}Z (is this device's clock behind?)")
    named = _identity(leaf)
    if isinstance(named, Refused):
        return named
    identity, role = named
    if role not in roles:
        return Refused(Reason.WRONG_ROLE, f"{identity!r} is a {role} certificate; the overlay takes {sorted(roles)}")
    verifier = PolicyBuilder().store(trust._store).time(when).max_chain_depth(1).build_client_verifier()
    try:
        verifier.verify(leaf, list(chain[1:]))
    except VerificationError as exc:
        return Refused(Reason.UNTRUSTED, f"not issued by this cluster's CA: {exc}")
    if expect is not None and identity != expect:
        return Refused(Reason.WRONG_NODE, f"expected {expect!r}, the certificate is for {identity!r}")
    peer = PeerIdentity(identity=identity, role=role, serial=leaf.serial_number,
                        not_after=leaf.not_valid_after_utc.timestamp(),
                        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest())
    if revoked.covers(peer):
        return Refused(Reason.REVOKED, f"{identity!r} (serial {peer.serial:x}) is revoked")
    return peer


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "?"


def _identity(leaf: x509.Certificate) -> tuple[str, str] | Refused:
    """(identity, role) from a leaf written the way coordinator.pki writes them, or why it is not."""
    subject = leaf.subject
    parts = {oid: [str(a.value) for a in subject.get_attributes_for_oid(oid)]
             for oid in (NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME)}
    if any(len(values) != 1 for values in parts.values()) or len(subject) != 3:
        return Refused(Reason.MALFORMED, f"the subject {subject.rfc4514_string()!r} is not O=cloudless,OU=role,CN=id")
    org, role, identity = (parts[oid][0] for oid in parts)
    if org != ORG:
        return Refused(Reason.MALFORMED, f"organisation {org!r} is not {ORG!r}")
    if role in ("node", "relay"):
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return Refused(Reason.MALFORMED, f"{role} certificate {identity!r} has no subject alternative name")
        if sans.get_values_for_type(x509.DNSName) != [identity] or len(sans) != 1:
            return Refused(Reason.MALFORMED, f"{role} certificate {identity!r} names other identities in its SAN")
    return identity, role
