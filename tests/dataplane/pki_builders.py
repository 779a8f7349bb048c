"""Certificates for data-plane tests, made by the real cluster CA code (coordinator.pki)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key

NOW = 1_800_000_000.0
DAY = 86400.0


@dataclass(frozen=True)
class Credential:
    """What a node holds: its key and certificate (PEM), and the CA it trusts."""

    identity: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def make_ca(name: str = "test", now: float = NOW) -> CertificateAuthority:
    return CertificateAuthority.create(name, now - DAY)


def ca_pem(ca: CertificateAuthority) -> bytes:
    return ca.cert.public_bytes(serialization.Encoding.PEM)


def issue(ca: CertificateAuthority, identity: str, *, role: CertRole = CertRole.NODE, now: float = NOW,
          lifetime_s: float = 30 * DAY) -> Credential:
    key = new_key()
    issued = ca.issue(make_csr(key, identity), identity=identity, role=role, now=now, lifetime_s=lifetime_s)
    return Credential(identity, key_pem(key), issued.cert_pem, ca_pem(ca))


def forged(ca: CertificateAuthority, *, cn: str, san: str, org: str = "cloudless",
           now: float = NOW) -> x509.Certificate:
    """A certificate the CA's key signs but its code never would: CN and SAN disagree, or another organisation."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
                         x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = dt.datetime.fromtimestamp(now - 300, dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
            .sign(ca.key, hashes.SHA256()))


def broken_san(now: float = NOW) -> x509.Certificate:
    """A self-signed certificate whose SAN extension does not parse (cryptography reads extensions lazily)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cloudless"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    start = dt.datetime.fromtimestamp(now - 300, dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                                                      b"\x30\x03\xff\xff\xff"), critical=False)
            .sign(key, hashes.SHA256()))
