"""Envelope encryption: round trip; a flipped bit, a wrong binding or a wrong key fails with EnvelopeError only;
rotation (re-wrap) keeps every version readable and never touches value ciphertexts."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.secrets import envelope
from coordinator.secrets.envelope import (
    Binding,
    Ciphertext,
    EnvelopeError,
    Keyring,
    MasterKey,
    SealedVersion,
    WrappedKey,
    open_version,
    seal_version,
)

K1 = MasterKey("k1", bytes(range(32)))
K2 = MasterKey("k2", bytes(range(1, 33)))
RING = Keyring.of(K1)
B = Binding("prod", "db", 1)

key_names = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)
datas = st.dictionaries(key_names, st.binary(max_size=64), min_size=1, max_size=4)
FAST = settings(max_examples=80, deadline=None)


def flip(ct: Ciphertext, bit: int) -> Ciphertext:
    raw = bytearray(ct.nonce + ct.data)
    bit %= len(raw) * 8
    raw[bit // 8] ^= 1 << (bit % 8)
    return Ciphertext(bytes(raw[:envelope.NONCE_LEN]), bytes(raw[envelope.NONCE_LEN:]))


@FAST
@given(data=datas)
def test_round_trip(data: dict[str, bytes]) -> None:
    sealed = seal_version(RING, B, data)
    assert dict(open_version(RING, B, sealed)) == data
    assert dict(open_version(RING, B, SealedVersion.from_json(sealed.to_json()))) == data


@FAST
@given(data=datas, bit=st.integers(min_value=0), which=st.integers(min_value=0))
def test_flipped_value_bit_fails(data: dict[str, bytes], bit: int, which: int) -> None:
    sealed = seal_version(RING, B, data)
    name = sorted(sealed.values)[which % len(sealed.values)]
    tampered = SealedVersion(sealed.wrapped, {**sealed.values, name: flip(sealed.values[name], bit)})
    with pytest.raises(EnvelopeError):
        open_version(RING, B, tampered)


@FAST
@given(data=datas, bit=st.integers(min_value=0))
def test_flipped_wrapped_key_bit_fails(data: dict[str, bytes], bit: int) -> None:
    sealed = seal_version(RING, B, data)
    tampered = sealed.with_wrapped(WrappedKey("k1", flip(sealed.wrapped.ciphertext, bit)))
    with pytest.raises(EnvelopeError):
        open_version(RING, B, tampered)


@pytest.mark.parametrize("other", [Binding("staging", "db", 1), Binding("prod", "dbx", 1), Binding("prod", "db", 2),
                                   Binding("pro", "ddb", 1)], ids=["namespace", "name", "version", "shifted"])
def test_wrong_binding_fails(other: Binding) -> None:
    sealed = seal_version(RING, B, {"password": b"hunter2"})
    with pytest.raises(EnvelopeError):
        open_version(RING, other, sealed)


def test_values_cannot_move_between_key_names() -> None:
    sealed = seal_version(RING, B, {"user": b"admin", "password": b"hunter2"})
    swapped = SealedVersion(sealed.wrapped, {"user": sealed.values["password"], "password": sealed.values["user"]})
    with pytest.raises(EnvelopeError):
        open_version(RING, B, swapped)


def test_wrong_master_key_fails() -> None:
    sealed = seal_version(RING, B, {"k": b"v"})
    impostor = Keyring.of(MasterKey("k1", bytes(32)))  # same id, other key
    with pytest.raises(EnvelopeError, match="does not decrypt"):
        open_version(impostor, B, sealed)


def test_relabelled_key_id_fails() -> None:
    sealed = seal_version(Keyring.of(K1, K2), B, {"k": b"v"})
    relabelled = sealed.with_wrapped(dataclasses.replace(sealed.wrapped, key_id="k2"))
    with pytest.raises(EnvelopeError):
        open_version(Keyring.of(K1, K2), B, relabelled)


def test_wrong_data_key_fails() -> None:
    one = seal_version(RING, B, {"k": b"v"})
    other = seal_version(RING, B, {"k": b"v"})
    with pytest.raises(EnvelopeError):
        open_version(RING, B, SealedVersion(other.wrapped, one.values))


def test_missing_master_key_is_named() -> None:
    sealed = seal_version(RING, B, {"k": b"v"})
    with pytest.raises(EnvelopeError, match="'k1', which is not in the keyring"):
        open_version(Keyring.of(K2), B, sealed)


@FAST
@given(versions=st.lists(datas, min_size=1, max_size=5), seed=st.integers())
def test_rotation_keeps_every_version_readable_and_values_untouched(versions: list[dict[str, bytes]],
                                                                    seed: int) -> None:
    rng = random.Random(seed)
    ring = Keyring.of(K1)
    stored = {n: seal_version(ring, Binding("ns", "s", n), d, rng=rng.randbytes) for n, d in enumerate(versions, 1)}
    ring = ring.with_active(K2)
    rotated = {n: s.with_wrapped(envelope.rewrap(ring, Binding("ns", "s", n), s.wrapped)) for n, s in stored.items()}
    for n, data in enumerate(versions, 1):
        assert rotated[n].wrapped.key_id == "k2"
        assert rotated[n].values == stored[n].values  # values are never re-encrypted
        assert dict(open_version(ring, Binding("ns", "s", n), rotated[n])) == data
        assert dict(open_version(ring, Binding("ns", "s", n), stored[n])) == data  # not yet re-wrapped: still fine
        assert dict(open_version(Keyring.of(K2), Binding("ns", "s", n), rotated[n])) == data  # k1 no longer needed


def test_injected_randomness_is_deterministic() -> None:
    a = seal_version(RING, B, {"k": b"v"}, rng=random.Random(1).randbytes)
    b = seal_version(RING, B, {"k": b"v"}, rng=random.Random(1).randbytes)
    assert a == b


@pytest.mark.parametrize("doc", [None, {}, {"values": {}}, {"dataKey": {"keyId": "k1", "key": "!!"}, "values": {}},
                                 {"dataKey": {"keyId": "k1", "key": "AAAA"}, "values": {}},
                                 {"dataKey": {"keyId": 3, "key": "AAAA"}, "values": {}},
                                 {"dataKey": {"keyId": "k1", "key": "A" * 80}, "values": {"x": 5}}],
                         ids=["none", "empty", "no-key", "not-base64", "short", "id-type", "value-type"])
def test_malformed_records_raise_envelope_error(doc: object) -> None:
    with pytest.raises(EnvelopeError):
        SealedVersion.from_json(doc)


def test_master_key_repr_is_redacted() -> None:
    assert "redacted" in repr(K1) and str(bytes(range(32))) not in repr(K1)
    assert "hunter2" not in repr(open_version(RING, B, seal_version(RING, B, {"p": b"hunter2"})))


@pytest.mark.parametrize(("key_id", "material"), [("k1", b"short"), ("", bytes(32)), ("a/b", bytes(32)),
                                                  ("k1", "x" * 32)], ids=["short", "empty-id", "slash-id", "str"])
def test_master_key_validation(key_id: str, material: bytes) -> None:
    with pytest.raises(EnvelopeError):
        MasterKey(key_id, material)


def test_keyring_rules() -> None:
    with pytest.raises(EnvelopeError, match="active"):
        Keyring({"k1": K1}, "k2")
    with pytest.raises(EnvelopeError, match="holds"):
        Keyring({"k2": K1}, "k2")
    with pytest.raises(EnvelopeError, match="already has id"):
        RING.with_active(MasterKey("k1", bytes(32)))
    assert Keyring.of(K1).with_active(K2).active is K2


def test_key_check_detects_another_key() -> None:
    check = envelope.key_check(K1)
    assert envelope.key_matches(K1, check)
    assert not envelope.key_matches(MasterKey("k1", bytes(32)), check)
    assert not envelope.key_matches(K1, "garbage")


def test_derived_key_ids_are_stable() -> None:
    assert envelope.key_id_for(bytes(32)) == envelope.key_id_for(bytes(32)) != envelope.key_id_for(bytes(31) + b"\1")
    assert MasterKey.generate(bytes).key_id == envelope.key_id_for(bytes(32))
