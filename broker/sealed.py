"""Sealed boxes: encrypt to a node's enrolled P-256 key so that only that node can read (HPKE-style).

The coordinator seals a secret to the public key in a node's certificate; the broker, its retained store and
anyone subscribed see only the box; the agent opens it in memory with the private key that never left the
device (edge_agent/identity.py). Shared by both sides, so this module imports only `cryptography` and the
standard library (the agent imports it lazily, like every other use of `cryptography` on the agent).

Construction — the base mode of HPKE (RFC 9180) with DHKEM(P-256), written out with `cryptography`'s
primitives, not RFC 9180 wire-compatible:

- A fresh ephemeral P-256 key pair per box; `shared = ECDH(ephemeral, recipient)` (SEC 1 §3.3.1).
- `key = HKDF-SHA256(shared, salt=none, info=LABEL || 0x00 || enc || pkR, 32 bytes)` where `enc` is the
  ephemeral public key and `pkR` the recipient's, both uncompressed (SEC 1 §2.3.3). Binding both keys is what
  RFC 9180 §4.1 calls the KEM context: a box cannot be re-targeted to another recipient, and a changed
  ephemeral key yields another AEAD key. The version label is in `info`, so a future version never shares keys.
- AES-256-GCM with a random 12-byte nonce and the caller's associated data (which should name what the box is
  for — node, secret, version — see `delivery_aad`). The key is fresh per box, so the nonce never repeats
  under one key even without randomness; it is random anyway, as the format is self-describing.

Format, version 1 (all lengths fixed except the ciphertext):

    0x01 | ephemeral public key, uncompressed (65) | nonce (12) | AES-GCM ciphertext || tag (len(plaintext) + 16)

Any malformed, truncated, forged or misaddressed box — wrong recipient key, wrong aad, one flipped bit —
raises `SealedError` and nothing else: callers handle hostile input with one `except`.
"""

from __future__ import annotations

import secrets

from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.errors import BrokerPackageError

__all__ = [
    "OVERHEAD",
    "VERSION",
    "SealedError",
    "delivery_aad",
    "open_sealed",
    "private_key_from_pem",
    "public_key_from_cert_pem",
    "seal",
]

VERSION = 1
LABEL = b"cloudless-sealed-box/v1 DHKEM(P-256, HKDF-SHA256) AES-256-GCM"
POINT_LEN = 65  # 0x04 || X (32) || Y (32)
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 1 + POINT_LEN + NONCE_LEN
OVERHEAD = HEADER_LEN + TAG_LEN  # a box is exactly this much longer than its plaintext
_CURVE = ec.SECP256R1


class SealedError(BrokerPackageError):
    """A box could not be made or opened: malformed, truncated, forged, for another key or another aad."""


def seal(recipient_public_key: ec.EllipticCurvePublicKey, plaintext: bytes, aad: bytes) -> bytes:
    """A box only the holder of the private key for `recipient_public_key` can open, with the same `aad`."""
    return _seal_with(recipient_public_key, plaintext, aad, ec.generate_private_key(_CURVE()),
                      secrets.token_bytes(NONCE_LEN))


def open_sealed(private_key: ec.EllipticCurvePrivateKey, box: bytes, aad: bytes) -> bytes:
    """The plaintext of `box`; raises SealedError for anything but an intact box to this key with this aad."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(private_key.curve, _CURVE):
        raise SealedError("the private key must be an ECDSA P-256 key (the node key)")
    if not isinstance(box, (bytes, bytearray, memoryview)) or not isinstance(aad, (bytes, bytearray, memoryview)):
        raise SealedError("box and aad must be bytes")
    box = bytes(box)
    if len(box) < OVERHEAD:
        raise SealedError(f"box too short: {len(box)} bytes, at least {OVERHEAD}")
    if box[0] != VERSION:
        raise SealedError(f"unknown box version {box[0]} (this build reads version {VERSION})")
    enc = box[1:1 + POINT_LEN]
    nonce = box[1 + POINT_LEN:HEADER_LEN]
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE(), enc)
        key = _derive(private_key.exchange(ec.ECDH(), ephemeral), enc, _point(private_key.public_key()))
        return AESGCM(key).decrypt(nonce, box[HEADER_LEN:], bytes(aad))
    except InvalidTag:
        raise SealedError("box does not open: forged or damaged, sealed to another key, or for another aad") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SealedError(f"malformed box: {exc}") from None


def public_key_from_cert_pem(pem: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of a PEM certificate (a node certificate from coordinator/pki.py)."""
    try:
        key = x509.load_pem_x509_certificate(bytes(pem)).public_key()
    except (ValueError, TypeError) as exc:
        raise SealedError(f"not a PEM certificate: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVE):
        raise SealedError("the certificate's key is not ECDSA P-256; re-enrol the node")
    return key


def private_key_from_pem(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """The node's P-256 private key from its PEM file (DATA_DIR/identity/node.key, unencrypted PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(bytes(pem), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SealedError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _CURVE):
        raise SealedError("the private key is not ECDSA P-256")
    return key


def delivery_aad(node_id: str, namespace: str, name: str, version: int) -> bytes:
    """The associated data the coordinator and the agent both use for a secret delivered to a node: a box for
    node A, or for another secret or version, does not open as this one (no replay across nodes or secrets)."""
    parts = (node_id, namespace, name, str(version))
    if any("\x00" in p for p in parts):
        raise SealedError("delivery_aad: a part contains NUL")
    return b"\x00".join([b"cloudless-secret-delivery/v1", *(p.encode() for p in parts)])


def _seal_with(recipient: ec.EllipticCurvePublicKey, plaintext: bytes, aad: bytes,
               ephemeral: ec.EllipticCurvePrivateKey, nonce: bytes) -> bytes:
    """`seal` with the randomness given (golden-bytes tests); never call with a reused ephemeral key."""
    if not isinstance(recipient, ec.EllipticCurvePublicKey) or not isinstance(recipient.curve, _CURVE):
        raise SealedError("the recipient key must be an ECDSA P-256 public key (the node key)")
    if not isinstance(plaintext, (bytes, bytearray, memoryview)) or not isinstance(aad, (bytes, bytearray,
                                                                                        memoryview)):
        raise SealedError("plaintext and aad must be bytes")
    if len(nonce) != NONCE_LEN:
        raise SealedError(f"nonce must be {NONCE_LEN} bytes")
    enc = _point(ephemeral.public_key())
    key = _derive(ephemeral.exchange(ec.ECDH(), recipient), enc, _point(recipient))
    return bytes([VERSION]) + enc + nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), bytes(aad))


def _derive(shared: bytes, enc: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL + b"\x00" + enc + recipient).derive(shared)


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
