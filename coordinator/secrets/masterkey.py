"""Where the master keys come from (adapter: the key file and the value of an environment variable).

Sources, in order:

1. `CLOUDLESS_SECRETS_KEY` (the caller reads the environment once at startup and passes the value in a
   `KeySource`; no module reads the environment): base64 of 32 bytes, or `keyid:base64`, or several such
   entries separated by commas — the first is active, the others only decrypt older versions.
2. The key file (`--secrets-key-file`): JSON `{"active": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}`,
   or a single line in the environment variable's syntax (e.g. `head -c 32 /dev/urandom | base64 > key`).
   Written 0600, atomically (temporary file, fsync, rename); a group- or world-readable file is reported.

First start: no environment value, no key file and no secrets in the store — `load` creates the file once,
exclusively (two coordinators racing cannot both create one) and returns `created=True` so the caller logs
"created master key at PATH — back it up". A start that finds secrets in the store but no key REFUSES, with the
remedy in the message: a new key could never decrypt them, so one is never created silently.

Rotation (`rotate`) adds a fresh key to the file and makes it active; the caller then hands the new keyring to
`SecretsService.rotate_master_key`, which re-wraps the data keys. Keys are never removed here: a version wrapped
by an old key stays readable while that key is in the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import ConfigError
from coordinator.files import atomic_write
from coordinator.secrets.envelope import KEY_LEN, EnvelopeError, Keyring, MasterKey, Rng, SecretsError, key_id_for

KEY_ENV = "CLOUDLESS_SECRETS_KEY"
FILE_FLAG = "--secrets-key-file"
MAX_FILE_BYTES = 64 * 1024
MAX_KEYS = 64


class MasterKeyError(SecretsError, ConfigError):
    """No usable master key: the message names the source (file path or environment variable) and the remedy."""


@dataclass(frozen=True, slots=True, repr=False)
class KeySource:
    """Where to look: the key file path and/or the environment variable's value (read once at startup)."""

    file: Path | None = None
    env_value: str | None = None

    @classmethod
    def from_environ(cls, file: Path | str | None, environ: Mapping[str, str]) -> KeySource:
        value = environ.get(KEY_ENV)
        return cls(Path(file) if file is not None else None, value if value and value.strip() else None)

    def __repr__(self) -> str:
        return f"KeySource(file={self.file!r}, env_value={'<redacted>' if self.env_value else None})"


@dataclass(frozen=True, slots=True)
class LoadedKeys:
    keyring: Keyring
    origin: str  # "environment variable CLOUDLESS_SECRETS_KEY" or "key file PATH", for log lines
    created: bool = False  # True once: the caller logs "created master key at PATH — back it up"
    path: Path | None = None
    warnings: tuple[str, ...] = ()  # for the caller to log (a loose file mode, an ignored file)


def load(source: KeySource, *, secrets_present: bool, rng: Rng = secrets.token_bytes) -> LoadedKeys:
    """The keyring to run with; creates the key file on a first start; raises MasterKeyError otherwise."""
    if source.env_value is not None:
        keyring = parse(source.env_value, f"environment variable {KEY_ENV}")
        warnings = ((f"{KEY_ENV} is set, so the key file {source.file} is ignored",)
                    if source.file is not None and source.file.exists() else ())
        return LoadedKeys(keyring, f"environment variable {KEY_ENV}", warnings=warnings)
    if source.file is None:
        raise MasterKeyError(f"no secrets master key configured: pass {FILE_FLAG} PATH or set {KEY_ENV}")
    path = source.file
    if path.exists():
        return LoadedKeys(read_file(path), f"key file {path}", path=path, warnings=_mode_warnings(path))
    if secrets_present:
        raise MasterKeyError(
            f"the store holds secrets but the master key file {path} does not exist: restore it from your backup "
            f"(or set {KEY_ENV}); refusing to create a new key, which could never decrypt the existing secrets")
    keyring = Keyring.of(MasterKey.generate(rng))
    _create_exclusive(path, render(keyring))
    return LoadedKeys(keyring, f"key file {path}", created=True, path=path)


def rotate(source: KeySource, *, rng: Rng = secrets.token_bytes) -> Keyring:
    """Add a fresh key to the key file and make it active; returns the new keyring (old keys stay in it)."""
    if source.env_value is not None:
        raise MasterKeyError(f"the master key comes from {KEY_ENV}: rotate by putting a new entry first in it "
                             "(keep the old ones after it) and restarting, or use a key file")
    if source.file is None or not source.file.exists():
        raise MasterKeyError(f"no key file to rotate: {FILE_FLAG} {source.file or '(unset)'}")
    keyring = read_file(source.file).with_active(MasterKey.generate(rng))
    write_file(source.file, keyring)
    return keyring


def parse(text: str, where: str) -> Keyring:
    """A keyring from the environment syntax (`b64`, `id:b64`, comma-separated; first active) or the JSON file
    syntax. Errors name `where` and the entry, never the key material."""
    text = text.strip()
    if text.startswith("{"):
        return _parse_json(text, where)
    keys: list[MasterKey] = []
    for n, entry in enumerate(text.split(","), 1):
        key_id, sep, b64 = entry.strip().rpartition(":")
        material = _decode_key(b64, f"{where}: entry {n}")
        try:
            keys.append(MasterKey(key_id if sep else key_id_for(material), material))
        except EnvelopeError as exc:
            raise MasterKeyError(f"{where}: entry {n}: {exc}") from None
    return _keyring(keys, None, where)


def read_file(path: Path) -> Keyring:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise MasterKeyError(f"key file {path}: larger than {MAX_FILE_BYTES} bytes; not a key file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(f"key file {path}: cannot read it ({exc})") from None
    if not text.strip():
        raise MasterKeyError(f"key file {path}: empty; restore it from your backup")
    return parse(text, f"key file {path}")


def render(keyring: Keyring) -> bytes:
    keys = {kid: base64.b64encode(k.material).decode() for kid, k in keyring.keys.items()}
    return (json.dumps({"active": keyring.active_id, "keys": keys}, indent=2) + "\n").encode()


def write_file(path: Path, keyring: Keyring) -> None:
    """Replace the key file atomically, 0600: a crash leaves the old file or the new one, never half of one."""
    try:
        atomic_write(path, render(keyring))
    except OSError as exc:
        raise MasterKeyError(f"key file {path}: cannot write it ({exc})") from None


def _create_exclusive(path: Path, data: bytes) -> None:
    """Create `path` with `data` unless it exists (hard-linked into place: link fails if the name exists), so
    nobody ever sees a partial key file and no existing file is replaced."""
    try:
        atomic_write(path, data, exclusive=True)
    except FileExistsError:
        raise MasterKeyError(f"key file {path}: appeared while creating it (another coordinator?); restart") from None
    except OSError as exc:
        raise MasterKeyError(f"key file {path}: cannot create it ({exc})") from None


def _mode_warnings(path: Path) -> tuple[str, ...]:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (f"key file {path} is readable by others (mode {mode:04o}): chmod 600 it",)
    return ()


def _parse_json(text: str, where: str) -> Keyring:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MasterKeyError(f"{where}: not valid JSON ({exc.__class__.__name__} at {getattr(exc, 'pos', '?')})") \
            from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict) or not doc["keys"]:
        raise MasterKeyError(f'{where}: expected {{"active": ID, "keys": {{ID: BASE64, ...}}}}')
    keys = []
    for kid, b64 in doc["keys"].items():
        try:
            keys.append(MasterKey(kid, _decode_key(b64, f"{where}: keys.{kid}")))
        except EnvelopeError as exc:
            raise MasterKeyError(f"{where}: keys.{kid}: {exc}") from None
    active = doc.get("active")
    if not isinstance(active, str):
        raise MasterKeyError(f"{where}: active: must name one of the keys ({', '.join(sorted(doc['keys']))})")
    return _keyring(keys, active, where)


def _keyring(keys: list[MasterKey], active: str | None, where: str) -> Keyring:
    if len(keys) > MAX_KEYS:
        raise MasterKeyError(f"{where}: {len(keys)} keys; at most {MAX_KEYS}")
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise MasterKeyError(f"{where}: key id {next(i for i in ids if ids.count(i) > 1)!r} appears twice")
    try:
        return Keyring.of(*keys, active=active)
    except EnvelopeError as exc:
        raise MasterKeyError(f"{where}: {exc}") from None


def _decode_key(b64: object, where: str) -> bytes:
    if not isinstance(b64, str):
        raise MasterKeyError(f"{where}: expected a base64 string")
    try:
        material = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{where}: not valid base64") from None
    if len(material) != KEY_LEN:
        raise MasterKeyError(f"{where}: decodes to {len(material)} bytes; a master key is exactly {KEY_LEN} "
                             f"(make one with `head -c {KEY_LEN} /dev/urandom | base64`)")
    return material
