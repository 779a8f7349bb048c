"""Envelope encryption of secret values (pure core: no I/O, no clock; randomness is a parameter).

Theory of operation. Each secret *version* gets a fresh 256-bit data key. Every value of the version is
encrypted with it (AES-256-GCM, random 96-bit nonce — at most 64 values per key, far below the 2^32 random-nonce
bound of NIST SP 800-38D §8.3). The data key itself is encrypted ("wrapped") by a master key, also AES-256-GCM,
and the wrap records the master key's id. Rotating the master key re-wraps data keys only: values are never
re-encrypted, and a version wrapped by an old key stays readable as long as the keyring still holds that key.

Associated data binds every ciphertext to where it belongs, so a ciphertext copied to another secret, another
version, another key name or a wrap relabelled with another key id fails authentication instead of decrypting:

    value:    b"cloudless-secret/v1" 0 namespace 0 name 0 version 0 key-name
    data key: b"cloudless-dek/v1"    0 namespace 0 name 0 version 0 master-key-id

(NUL-separated; none of the parts may contain NUL, so the encoding is unambiguous.)

Every failure — wrong key, wrong binding, a flipped bit, a malformed record — raises `EnvelopeError`. This module
also holds `SecretsError`, the base of the secrets package's small error hierarchy (STYLE §4), because it is the
bottom of the package's import graph.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.wire.schema import ID_PATTERN
from coordinator.errors import CoordinatorError

KEY_LEN = 32  # AES-256
NONCE_LEN = 12
TAG_LEN = 16
VALUE_LABEL = b"cloudless-secret/v1"
WRAP_LABEL = b"cloudless-dek/v1"
CHECK_LABEL = b"cloudless-key-check/v1"

Rng = Callable[[int], bytes]
"""Randomness source: `n -> n random bytes` (default `secrets.token_bytes`; tests may pass a seeded one)."""


class SecretsError(CoordinatorError):
    """Base of every error the `coordinator.secrets` package raises on purpose."""


class EnvelopeError(SecretsError):
    """A ciphertext does not decrypt (wrong key, wrong binding, tampered) or a record is malformed."""


@dataclass(frozen=True, slots=True, repr=False)
class MasterKey:
    """A 256-bit key-encryption key and its id. `repr` never shows the material (STYLE §4)."""

    key_id: str
    material: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or ID_PATTERN.fullmatch(self.key_id) is None:
            raise EnvelopeError(f"master key id {str(self.key_id)[:80]!r}: 1-63 letters, digits, '.', '_', '-'")
        if not isinstance(self.material, bytes) or len(self.material) != KEY_LEN:
            raise EnvelopeError(f"master key {self.key_id}: must be exactly {KEY_LEN} bytes")

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r}, material=<redacted>)"

    @classmethod
    def generate(cls, rng: Rng = secrets.token_bytes, key_id: str | None = None) -> MasterKey:
        material = rng(KEY_LEN)
        return cls(key_id or key_id_for(material), material)


def key_id_for(material: bytes) -> str:
    """A stable id derived from the key (a domain-separated hash; reveals nothing about a 256-bit key), so the
    same key gets the same id whether it comes from the key file or the environment."""
    return "mk-" + hashlib.sha256(b"cloudless-master-key-id\x00" + material).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Keyring:
    """Master keys by id; `active_id` wraps new data keys, the others only unwrap (until re-wrapped away)."""

    keys: Mapping[str, MasterKey]
    active_id: str

    def __post_init__(self) -> None:
        for kid, key in self.keys.items():
            if kid != key.key_id:
                raise EnvelopeError(f"keyring: entry {kid!r} holds key {key.key_id!r}")
        if self.active_id not in self.keys:
            raise EnvelopeError(f"keyring: the active key {self.active_id!r} is not in the keyring")

    @classmethod
    def of(cls, *keys: MasterKey, active: str | None = None) -> Keyring:
        """A keyring of `keys`; the active one is `active`, or the first."""
        return cls({k.key_id: k for k in keys}, active or keys[0].key_id)

    @property
    def active(self) -> MasterKey:
        return self.keys[self.active_id]

    def get(self, key_id: str) -> MasterKey | None:
        return self.keys.get(key_id)

    def with_active(self, key: MasterKey) -> Keyring:
        """This keyring plus `key`, which becomes the active one (rotation)."""
        if key.key_id in self.keys and self.keys[key.key_id] != key:
            raise EnvelopeError(f"keyring: another key already has id {key.key_id!r}")
        return Keyring({**self.keys, key.key_id: key}, key.key_id)


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a ciphertext belongs: namespace, name and version of a secret."""

    namespace: str
    name: str
    version: int

    def __post_init__(self) -> None:
        if any("\x00" in part for part in (self.namespace, self.name)) or self.version < 1:
            raise EnvelopeError(f"binding {self.namespace!r}/{self.name!r} v{self.version}: invalid")

    def value_aad(self, key_name: str) -> bytes:
        return _aad(VALUE_LABEL, self.namespace, self.name, str(self.version), key_name)

    def wrap_aad(self, key_id: str) -> bytes:
        return _aad(WRAP_LABEL, self.namespace, self.name, str(self.version), key_id)


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """AES-256-GCM output: nonce and ciphertext-with-tag. Encoded as base64(nonce || ciphertext)."""

    nonce: bytes
    data: bytes

    def encode(self) -> str:
        return base64.b64encode(self.nonce + self.data).decode()

    @classmethod
    def decode(cls, text: object, what: str) -> Ciphertext:
        if not isinstance(text, str):
            raise EnvelopeError(f"{what}: expected a base64 string")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"{what}: not base64") from None
        if len(raw) < NONCE_LEN + TAG_LEN:
            raise EnvelopeError(f"{what}: too short to be a ciphertext")
        return cls(raw[:NONCE_LEN], raw[NONCE_LEN:])


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted by master key `key_id`."""

    key_id: str
    ciphertext: Ciphertext

    def to_json(self) -> dict[str, str]:
        return {"keyId": self.key_id, "key": self.ciphertext.encode()}

    @classmethod
    def from_json(cls, doc: object) -> WrappedKey:
        if not isinstance(doc, dict) or not isinstance(doc.get("keyId"), str):
            raise EnvelopeError("wrapped key: expected {keyId, key}")
        return cls(doc["keyId"], Ciphertext.decode(doc.get("key"), "wrapped key"))


@dataclass(frozen=True, slots=True)
class SealedVersion:
    """One secret version at rest: the wrapped data key and each value encrypted by it."""

    wrapped: WrappedKey
    values: Mapping[str, Ciphertext] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dataKey": self.wrapped.to_json(), "values": {k: c.encode() for k, c in self.values.items()}}

    @classmethod
    def from_json(cls, doc: object) -> SealedVersion:
        if not isinstance(doc, dict) or not isinstance(doc.get("values"), dict):
            raise EnvelopeError("sealed version: expected {dataKey, values}")
        values = {str(k): Ciphertext.decode(v, f"values.{k}") for k, v in doc["values"].items()}
        return cls(WrappedKey.from_json(doc.get("dataKey")), values)

    def with_wrapped(self, wrapped: WrappedKey) -> SealedVersion:
        return SealedVersion(wrapped, self.values)


class Plaintext(Mapping[str, bytes]):
    """Decrypted values by key name: a read-only mapping whose `repr` lists key names, never values."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, bytes]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> bytes:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Plaintext(keys={sorted(self._data)}, values=<redacted>)"

    __str__ = __repr__


# ---- operations ------------------------------------------------------------------------------------------------

def seal_version(keyring: Keyring, binding: Binding, data: Mapping[str, bytes], *,
                 rng: Rng = secrets.token_bytes) -> SealedVersion:
    """Encrypt `data` under a fresh data key, wrapped by the keyring's active master key."""
    data_key = rng(KEY_LEN)
    values = {name: encrypt(data_key, binding.value_aad(_part(name)), value, rng) for name, value in data.items()}
    return SealedVersion(wrap(keyring.active, binding, data_key, rng=rng), values)


def open_version(keyring: Keyring, binding: Binding, sealed: SealedVersion) -> Plaintext:
    """Every value of a version, decrypted with the data key the envelope's master key id unwraps."""
    data_key = unwrap(keyring, binding, sealed.wrapped)
    return Plaintext({name: decrypt(data_key, binding.value_aad(_part(name)), ct, f"value {name!r}")
                      for name, ct in sealed.values.items()})


def wrap(master: MasterKey, binding: Binding, data_key: bytes, *, rng: Rng = secrets.token_bytes) -> WrappedKey:
    if len(data_key) != KEY_LEN:
        raise EnvelopeError(f"data key must be {KEY_LEN} bytes")
    return WrappedKey(master.key_id, encrypt(master.material, binding.wrap_aad(master.key_id), data_key, rng))


def unwrap(keyring: Keyring, binding: Binding, wrapped: WrappedKey) -> bytes:
    master = keyring.get(wrapped.key_id)
    if master is None:
        raise EnvelopeError(f"{binding.namespace}/{binding.name} v{binding.version}: wrapped by master key "
                            f"{wrapped.key_id!r}, which is not in the keyring (restore it to the key file)")
    data_key = decrypt(master.material, binding.wrap_aad(wrapped.key_id), wrapped.ciphertext,
                       f"{binding.namespace}/{binding.name} v{binding.version} data key")
    if len(data_key) != KEY_LEN:
        raise EnvelopeError("data key has the wrong length")
    return data_key


def rewrap(keyring: Keyring, binding: Binding, wrapped: WrappedKey, *, rng: Rng = secrets.token_bytes) -> WrappedKey:
    """The same data key, wrapped by the keyring's active master key (rotation; values stay as they are)."""
    return wrap(keyring.active, binding, unwrap(keyring, binding, wrapped), rng=rng)


def key_check(master: MasterKey, *, rng: Rng = secrets.token_bytes) -> str:
    """A short known-answer record proving later that a key with this id is the same key (wrong-key detection at
    startup, before anything is written under it)."""
    return encrypt(master.material, _aad(CHECK_LABEL, master.key_id), b"", rng).encode()


def key_matches(master: MasterKey, check: str) -> bool:
    try:
        decrypt(master.material, _aad(CHECK_LABEL, master.key_id), Ciphertext.decode(check, "key check"), "key check")
    except EnvelopeError:
        return False
    return True


def encrypt(key: bytes, aad: bytes, plaintext: bytes, rng: Rng = secrets.token_bytes) -> Ciphertext:
    nonce = rng(NONCE_LEN)
    return Ciphertext(nonce, AESGCM(key).encrypt(nonce, plaintext, aad))


def decrypt(key: bytes, aad: bytes, ct: Ciphertext, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(ct.nonce, ct.data, aad)
    except InvalidTag:
        raise EnvelopeError(f"{what}: does not decrypt (wrong key, wrong binding or tampered)") from None
    except ValueError as exc:  # wrong nonce or key length from a malformed record
        raise EnvelopeError(f"{what}: malformed ({exc})") from None


def _part(text: str) -> str:
    if "\x00" in text:
        raise EnvelopeError("key names may not contain NUL")
    return text


def _aad(label: bytes, *parts: str) -> bytes:
    return b"\x00".join([label, *(_part(p).encode() for p in parts)])
