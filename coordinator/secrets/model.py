"""The secrets service's values and input validation (pure): what the API sees (`Caller`, `Rejection`, `SecretInfo`,
`Revealed`, …), the store key layout, and the checks that turn a request body into problems naming each field.
`coordinator.secrets.service` (the adapter over the store) uses them; nothing here does I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.wire.schema import ID_MAX_LEN, ID_PATTERN
from coordinator.secrets import tokens
from coordinator.secrets.envelope import Plaintext
from coordinator.secrets.tokens import TokenRecord, TokenRejected

META, VERSIONS, TOKENS, KEYS = "/secrets/s/", "/secrets/v/", "/secrets/tokens/", "/secrets/keys/"
KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")  # env var and file names; "." and ".." refused separately
CAS_RETRIES = 32
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def meta_key(ns: str, name: str) -> str:
    return f"{META}{ns}/{name}"


def version_key(ns: str, name: str, version: int) -> str:
    return f"{VERSIONS}{ns}/{name}/{version:010d}"


def token_key(ns: str, name: str, token_id: str) -> str:
    return f"{TOKENS}{ns}/{name}/{token_id}"


# ---- values the API sees ---------------------------------------------------------------------------------------

class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"  # metadata only
    NONE = "none"  # no API credential: can read a value with an access token only


@dataclass(frozen=True, slots=True)
class Caller:
    name: str  # credential name, "node:<id>", "coordinator", "anonymous"
    source: str  # client IP, "node:<id>", "cli"
    role: Role = Role.NONE


class RejectKind(StrEnum):
    INVALID = "invalid"
    DENIED = "denied"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    EXPIRED = "expired"


_STATUS = {RejectKind.INVALID: 400, RejectKind.DENIED: 403, RejectKind.NOT_FOUND: 404, RejectKind.CONFLICT: 409,
           RejectKind.EXPIRED: 410}


@dataclass(frozen=True, slots=True)
class Rejection:
    """An expected "no". `field` names the offending input (`data.PASSWORD`, `audiences[1]`, `ttl`); `code` is a
    stable machine word (`exists`, `immutable`, `token-expired`, ...); `errors` lists every input problem."""

    kind: RejectKind
    reason: str
    field: str = ""
    code: str = ""
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def status(self) -> int:
        return _STATUS[self.kind]

    @classmethod
    def invalid(cls, problems: Sequence[tuple[str, str]]) -> Rejection:
        path, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return cls(RejectKind.INVALID, f"{path}: {message}{more}" if path else message, path, "invalid",
                   tuple(problems))

    def to_json(self) -> dict[str, Any]:
        """The REST error body's details: `{"code", "message", "field", "errors": [{"path", "message"}]}`."""
        errors = [{"path": p, "message": m} for p, m in self.errors] or (
            [{"path": self.field, "message": self.reason}] if self.field else [])
        return {"code": self.code or self.kind.value, "message": self.reason, "field": self.field or None,
                "errors": errors}


@dataclass(frozen=True, slots=True)
class Limits:
    max_keys: int = 64
    max_value_bytes: int = 64 * 1024
    max_total_bytes: int = 256 * 1024
    max_audiences: int = 32
    max_versions: int = 100
    min_ttl_s: float = 60.0
    max_ttl_s: float = 3650 * 86400.0


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    created_at: float
    keys: tuple[str, ...]
    created_by: str = ""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret's metadata (what `get` and `list` return; never a value)."""

    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    immutable: bool
    ttl_s: float | None
    created_at: float
    updated_at: float
    active_version: int
    versions: tuple[VersionInfo, ...]

    @property
    def active(self) -> VersionInfo:
        return next(v for v in self.versions if v.version == self.active_version)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.active.keys

    @property
    def expires_at(self) -> float | None:
        return None if self.ttl_s is None else self.active.created_at + self.ttl_s

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def version(self, number: int | None) -> VersionInfo | None:
        wanted = self.active_version if number is None else number
        return next((v for v in self.versions if v.version == wanted), None)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid, "audiences": list(self.audiences),
                "immutable": self.immutable, "ttlSeconds": self.ttl_s, "createdAt": self.created_at,
                "updatedAt": self.updated_at, "expiresAt": self.expires_at, "activeVersion": self.active_version,
                "keys": list(self.keys),
                "versions": [{"version": v.version, "createdAt": v.created_at, "keys": list(v.keys),
                              "createdBy": v.created_by} for v in self.versions]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SecretInfo:
        versions = tuple(VersionInfo(int(v["version"]), float(v["createdAt"]), tuple(v["keys"]),
                                     str(v.get("createdBy", ""))) for v in doc["versions"])
        ttl = doc.get("ttlSeconds")
        return cls(str(doc["namespace"]), str(doc["name"]), str(doc["uid"]), tuple(doc["audiences"]),
                   bool(doc["immutable"]), None if ttl is None else float(ttl), float(doc["createdAt"]),
                   float(doc["updatedAt"]), int(doc["activeVersion"]), versions)


@dataclass(frozen=True, slots=True)
class Revealed:
    """Decrypted values of one version (`data` is a read-only mapping whose repr is redacted)."""

    namespace: str
    name: str
    version: int
    data: Plaintext


@dataclass(frozen=True, slots=True, repr=False)
class IssuedToken:
    token: str  # the JWT: shown to the admin once, never stored
    record: TokenRecord

    def __repr__(self) -> str:
        return f"IssuedToken(token=<redacted>, record={self.record!r})"


@dataclass(frozen=True, slots=True)
class Rotation:
    key_id: str  # the new active master key
    rewrapped: int  # data keys re-wrapped by this call
    versions: int  # versions in the store


# ---- validation -----------------------------------------------------------------------------------------------

def parse_duration(value: object) -> float:
    """Seconds from `90d`, `1h30m`, `45s`, `2w`, `3600` or a number; raises ValueError saying what is expected."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90d, 12h, 30m or 45s")
    if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\d+(?:\.\d+)?", value.strip())):
        seconds = float(value)
    elif isinstance(value, str) and value and re.fullmatch(f"(?:{_DURATION.pattern})+", value.strip()):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(value.strip()))
    else:
        raise ValueError(f"expected a duration like 90d, 12h, 30m or 45s, got {str(value)[:40]!r}")
    if not 0 < seconds < float("inf"):
        raise ValueError("must be a positive duration")
    return seconds


def name_problems(namespace: object, name: object) -> list[tuple[str, str]]:
    problems = []
    for path, value in (("namespace", namespace), ("name", name)):
        if not isinstance(value, str) or len(value) > ID_MAX_LEN or ID_PATTERN.fullmatch(value) is None:
            problems.append((path, f"{str(value)[:80]!r} is not a valid {path}: 1-{ID_MAX_LEN} letters, digits, "
                                   "'.', '_', '-', starting with a letter or digit"))
    return problems


def data_problems(data: object, limits: Limits) -> list[tuple[str, str]]:
    if not isinstance(data, Mapping):
        return [("data", "must map key names to byte values")]
    if not data:
        return [("data", "must hold at least one key")]
    problems = []
    if len(data) > limits.max_keys:
        problems.append(("data", f"{len(data)} keys; at most {limits.max_keys}"))
    total = 0
    for key, value in data.items():
        path = f"data.{str(key)[:80]}"
        if not isinstance(key, str) or KEY_NAME.fullmatch(key) is None or key in (".", ".."):
            problems.append((path, "key names are 1-253 letters, digits, '.', '_', '-' (usable as an environment "
                                   "variable or file name), not '.' or '..'"))
        if not isinstance(value, bytes):
            problems.append((path, f"value must be bytes, got {type(value).__name__}"))
            continue
        total += len(value)
        if len(value) > limits.max_value_bytes:
            problems.append((path, f"value is {len(value)} bytes; at most {limits.max_value_bytes}"))
    if total > limits.max_total_bytes:
        problems.append(("data", f"values total {total} bytes; at most {limits.max_total_bytes}"))
    return problems


def audience_problems(audiences: object, limits: Limits) -> list[tuple[str, str]]:
    if isinstance(audiences, str) or not isinstance(audiences, Sequence):
        return [("audiences", "must be a list of audience names")]
    if len(audiences) > limits.max_audiences:
        return [("audiences", f"{len(audiences)} audiences; at most {limits.max_audiences}")]
    problems = []
    for i, audience in enumerate(audiences):
        problem = tokens.audience_problem(audience)
        if problem:
            problems.append((f"audiences[{i}]", problem))
        elif audience in audiences[:i]:
            problems.append((f"audiences[{i}]", f"{audience!r} is listed twice"))
    return problems


def ttl_value(value: object, path: str, low: float, high: float) -> tuple[float | None, list[tuple[str, str]]]:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return None, [(path, str(exc))]
    if not low <= seconds <= high:
        return None, [(path, f"must be between {human(low)} and {human(high)}, got {human(seconds)}")]
    return seconds, []


def human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ---- the service ----------------------------------------------------------------------------------------------

def version_problems(version: object) -> list[tuple[str, str]]:
    if version is None or (isinstance(version, int) and not isinstance(version, bool) and version >= 1):
        return []
    return [("version", "must be a version number (1 or more)")]


def token_denied(refused: TokenRejected) -> Rejection:
    return Rejection(RejectKind.DENIED, refused.message, "token", f"token-{refused.failure.value}")


def busy(namespace: str, name: str) -> Rejection:
    return Rejection(RejectKind.CONFLICT, f"{namespace}/{name} kept changing during the request; retry", "",
                     "busy")


def keys_detail(data: Iterable[str]) -> str:
    return "keys: " + ",".join(sorted(data))[:900]
