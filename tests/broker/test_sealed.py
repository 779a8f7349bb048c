"""Sealed boxes: round trip, only the right key and aad open a box, hostile input raises only SealedError."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import sealed
from broker.sealed import OVERHEAD, SealedError, open_sealed, seal
from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr

RECIPIENT = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
OTHER = ec.derive_private_key(0x0BADC0FFEE, ec.SECP256R1())
EPHEMERAL = ec.derive_private_key(0xFEDCBA0987654321, ec.SECP256R1())
NONCE = bytes(range(12))
# Version 1 of the format, from fixed keys and nonce: a change here is a wire-format change (bump VERSION).
GOLDEN = bytes.fromhex(
    "010452c6ff5b71de65d83c75d393e249ec03894370515d0b229b1c6224681f2a5030b6f323c20c20d021d611e087cf482f5297e6"
    "135cbee6d3994832164e479e6e96000102030405060708090a0baf2ac3e58988adbd55b95a559e885aba4ef440ff27cecc")
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_golden_bytes() -> None:
    assert sealed._seal_with(RECIPIENT.public_key(), b"hunter2", b"aad", EPHEMERAL, NONCE) == GOLDEN
    assert open_sealed(RECIPIENT, GOLDEN, b"aad") == b"hunter2"


@SLOW
@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=64))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    box = seal(RECIPIENT.public_key(), plaintext, aad)
    assert len(box) == len(plaintext) + OVERHEAD
    assert box[0] == sealed.VERSION
    assert open_sealed(RECIPIENT, box, aad) == plaintext


def test_every_box_is_fresh() -> None:
    boxes = {seal(RECIPIENT.public_key(), b"same", b"") for _ in range(8)}
    assert len(boxes) == 8


def test_wrong_recipient_key_fails() -> None:
    box = seal(RECIPIENT.public_key(), b"secret", b"aad")
    with pytest.raises(SealedError, match="does not open"):
        open_sealed(OTHER, box, b"aad")


@pytest.mark.parametrize("aad", [b"", b"aae", b"aad\x00", b"AAD"], ids=repr)
def test_wrong_aad_fails(aad: bytes) -> None:
    box = seal(RECIPIENT.public_key(), b"secret", b"aad")
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, box, aad)


@SLOW
@given(data=st.data(), plaintext=st.binary(max_size=256))
def test_flipped_bit_anywhere_fails(data: st.DataObject, plaintext: bytes) -> None:
    box = bytearray(seal(RECIPIENT.public_key(), plaintext, b"aad"))
    bit = data.draw(st.integers(0, len(box) * 8 - 1), label="bit")
    box[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, bytes(box), b"aad")


@SLOW
@given(data=st.data())
def test_truncated_box_fails(data: st.DataObject) -> None:
    box = seal(RECIPIENT.public_key(), b"a secret value", b"aad")
    cut = data.draw(st.integers(0, len(box) - 1), label="length")
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, box[:cut], b"aad")


@SLOW
@given(garbage=st.binary(max_size=300), aad=st.binary(max_size=16))
def test_garbage_raises_only_sealed_error(garbage: bytes, aad: bytes) -> None:
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, garbage, aad)


@SLOW
@given(tail=st.binary(min_size=28, max_size=100), x=st.binary(min_size=64, max_size=64),
       prefix=st.sampled_from([b"\x04", b"\x02", b"\x03", b"\x00"]))
def test_garbage_with_valid_version_raises_only_sealed_error(tail: bytes, x: bytes, prefix: bytes) -> None:
    """Past the version byte: points off the curve, compressed or infinity encodings, random ciphertext."""
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, bytes([sealed.VERSION]) + prefix + x + tail, b"")


def test_ephemeral_key_swapped_for_a_valid_one_fails() -> None:
    box = seal(RECIPIENT.public_key(), b"secret", b"")
    forged = box[:1] + sealed._point(OTHER.public_key()) + box[1 + sealed.POINT_LEN:]
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, forged, b"")


@pytest.mark.parametrize("box", ["a string", None, 7, [1, 2]], ids=repr)
def test_non_bytes_raise_sealed_error(box: object) -> None:
    with pytest.raises(SealedError):
        open_sealed(RECIPIENT, box, b"")  # type: ignore[arg-type]


def test_unknown_version_is_named() -> None:
    box = bytearray(seal(RECIPIENT.public_key(), b"x", b""))
    box[0] = 2
    with pytest.raises(SealedError, match="version 2"):
        open_sealed(RECIPIENT, bytes(box), b"")


def test_other_curves_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SealedError, match="P-256"):
        seal(p384.public_key(), b"x", b"")
    with pytest.raises(SealedError, match="P-256"):
        open_sealed(p384, seal(RECIPIENT.public_key(), b"x", b""), b"")


def test_seal_to_a_node_certificate_and_open_with_its_key_file() -> None:
    ca = CertificateAuthority.create("test", 1_700_000_000)
    node_key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue(make_csr(node_key, "pi-1"), identity="pi-1", role=CertRole.NODE, now=1_700_000_000,
                      lifetime_s=3600)
    aad = sealed.delivery_aad("pi-1", "prod", "db", 3)
    box = seal(sealed.public_key_from_cert_pem(issued.cert_pem), b"s3cret", aad)
    assert open_sealed(sealed.private_key_from_pem(key_pem(node_key)), box, aad) == b"s3cret"
    with pytest.raises(SealedError):
        open_sealed(node_key, box, sealed.delivery_aad("pi-2", "prod", "db", 3))


@pytest.mark.parametrize("pem", [b"", b"junk", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
                         ids=["empty", "junk", "bad-base64-body"])
def test_bad_pem_raises_sealed_error(pem: bytes) -> None:
    with pytest.raises(SealedError):
        sealed.public_key_from_cert_pem(pem)
    with pytest.raises(SealedError):
        sealed.private_key_from_pem(pem)


def test_delivery_aad_separates_its_parts() -> None:
    assert sealed.delivery_aad("a", "b", "c", 1) != sealed.delivery_aad("a", "bc", "", 1)
    with pytest.raises(SealedError):
        sealed.delivery_aad("a\x00b", "ns", "n", 1)
