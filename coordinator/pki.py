"""The cluster's certificate authority and the certificates it issues (cryptography; ECDSA P-256).

Every certificate names one identity: the subject CN is the node id (or `coordinator@ID`, `dashboard@ID`),
O = "cloudless", OU = the role (node | coordinator | dashboard | server); node certificates also carry the
node id as a DNS SAN. SubjectKeyIdentifier and AuthorityKeyIdentifier are set so strict RFC 5280 verifiers
(cryptography's PolicyBuilder, Go, OpenSSL 3) accept the chain (RFC 5280 §4.2.1.1-2).

`CertificateAuthority` is pure given its key and `now`; `load_or_create()` is the only part that touches the
disk: the key is written 0600 once and never silently regenerated — a data dir with a certificate but no key
is an error, because a new CA would orphan every enrolled node.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coordinator.errors import CoordinatorError

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
ORG = "cloudless"


class PkiError(CoordinatorError):
    """A CA file is missing, unreadable or inconsistent; a CSR is invalid."""


class CertRole(StrEnum):
    NODE = "node"
    COORDINATOR = "coordinator"
    DASHBOARD = "dashboard"
    SERVER = "server"
    RELAY = "relay"  # an overlay relay (dataplane.relay): authenticates like a node, forwards ciphertext


@dataclass(frozen=True, slots=True)
class Issued:
    cert_pem: bytes
    serial: int
    not_after: float


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER certificate, hex: what an enrolment token pins."""
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex()


def identity_of(cert: x509.Certificate) -> tuple[str, str]:
    """(common name, role) of a certificate this CA issued."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return (str(cn[0].value) if cn else "", str(ou[0].value) if ou else "")


class CertificateAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, name: str, now: float, *, years: int = 10) -> CertificateAuthority:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"cloudless cluster CA {name}")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_utc(now - 300)).not_valid_after(_utc(now + years * 365 * 86400))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    @classmethod
    def load_or_create(cls, directory: Path, name: str, now: float) -> tuple[CertificateAuthority, bool]:
        """The CA kept in `directory` (created once, key 0600). Returns (ca, created)."""
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        if cert_path.exists() or key_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except FileNotFoundError as exc:
                raise PkiError(f"{exc.filename} is missing but the other CA file exists; restore it from backup "
                               "(a new CA would strand every enrolled node)") from None
            except (ValueError, OSError) as exc:
                raise PkiError(f"cannot read the cluster CA in {directory}: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
                raise PkiError(f"{key_path} does not match {cert_path}")
            return cls(key, cert), False
        ca = cls.create(name, now)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem(ca.key))
        cert_path.write_bytes(ca.cert_pem)
        return ca, True

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, now: float,
                 lifetime_s: float) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(self.cert.subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(_utc(now - 300))  # tolerate modest clock skew on small devices
                .not_valid_after(_utc(now + lifetime_s))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False))

    def issue(self, csr_pem: bytes, *, identity: str, role: CertRole, now: float, lifetime_s: float) -> Issued:
        """Sign a CSR for `identity` (the CSR's own subject is ignored: the CA decides who it names)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"csr: not a PEM certificate request ({exc})") from None
        if not csr.is_signature_valid:
            raise PkiError("csr: signature does not verify (the requester must hold the key)")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise PkiError("csr: only ECDSA P-256 keys are accepted")
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                             x509.NameAttribute(NameOID.COMMON_NAME, identity)])
        builder = (self._builder(subject, public_key, now, lifetime_s)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if role in (CertRole.NODE, CertRole.RELAY):  # overlay peers: verifiers need the identity as a SAN
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), cert.serial_number, now + lifetime_s)

    def issue_server(self, key: ec.EllipticCurvePrivateKey, *, hosts: list[str], now: float,
                     lifetime_s: float, common_name: str | None = None) -> Issued:
        """A TLS server certificate (broker, API) for host names and IP addresses: each is a SAN (an IP SAN for an
        address, a DNS SAN for a name: clients match only SANs, RFC 6125 §6.4.4); the CN is `common_name`, else
        the first host."""
        if not hosts:
            raise PkiError("a server certificate needs at least one host name or address")
        names: list[x509.GeneralName] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CertRole.SERVER.value),
                             x509.NameAttribute(NameOID.COMMON_NAME, common_name or hosts[0])])
        cert = (self._builder(subject, key.public_key(), now, lifetime_s)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=False, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM), cert.serial_number, now + lifetime_s)

    def crl(self, revoked: list[tuple[int, float]], now: float, *, next_update_s: float = 7 * 86400) -> bytes:
        """A CRL listing (serial, revoked-at) pairs, for Mosquitto's `crlfile` (RFC 5280 §5)."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(_utc(now)).next_update(_utc(now + next_update_s)))
        for serial, at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(at)).build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
