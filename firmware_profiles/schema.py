"""Strict conversion of a profile's TOML text into a `Profile`.

Theory of operation: the TOML document is walked table by table with a `_Table` that hands out keys by name
and type and, when the table is done, rejects whatever keys nobody asked for (a typo such as `min_precent`
must fail loudly rather than silently fall back to a default). Every failure is a `ProfileError` carrying the
source file and the dotted field path. Booleans are never accepted as numbers, nor numbers as booleans.

Pure: parses text it is given; reading files is the loader's job.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from firmware_profiles.errors import ProfileError, QuantityError
from firmware_profiles.model import (
    ARCHES,
    BatteryPolicy,
    Detection,
    GateAction,
    Link,
    Profile,
    Reserved,
    Runtime,
    Storage,
    Thresholds,
)
from firmware_profiles.units import parse_cpu, parse_memory, parse_size

# Profile names double as file stems and as the `profile` fact on the wire (Text(64)).
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")
# Label syntax follows Kubernetes (optional DNS prefix + '/' + name); lengths follow the wire's Labels (128).
LABEL_KEY_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?")
LABEL_VALUE_PATTERN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?)?")
SENSOR_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OS_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MAX_LABELS = 64  # the wire's Labels bound
MAX_SENSORS = 32  # the wire's NodeFacts.temperatures bound

HEARTBEAT_RANGE_S = (1.0, 3600.0)
KEEPALIVE_RANGE_S = (5, 65535)  # MQTT 3.1.1 §3.1.2.10: a 16-bit count of seconds (0, no keep-alive, is refused)
HEARTBEAT_MAX_RANGE_S = (5.0, 86400.0)
THRESHOLD_RANGE = (0.0, 100.0)
REPLICA_THRESHOLD_RANGE = (0.0, 6400.0)
TEMPERATURE_RANGE_C = (20.0, 150.0)
MAX_WORKLOADS_RANGE = (0, 1000)
PRIORITY_RANGE = (-1000, 1000)

T = TypeVar("T")
_MISSING = object()
_TOML_TYPES = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}


def _got(value: object) -> str:
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    if not isinstance(value, str | bool | int | float):
        return f"got {kind}"
    shown = repr(value)
    return f"got {kind} {shown if len(shown) <= 64 else shown[:60] + '...'}"


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


class _Table:
    """One TOML table being read: typed access by key, and rejection of keys nobody read."""

    __slots__ = ("data", "path", "seen", "source")

    def __init__(self, data: Mapping[str, object], path: str, source: str) -> None:
        self.data = data
        self.path = path
        self.source = source
        self.seen: set[str] = set()

    def field(self, key: str) -> str:
        quoted = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'
        return f"{self.path}.{quoted}" if self.path else quoted

    def error(self, key: str, reason: str) -> ProfileError:
        return ProfileError(reason, file=self.source, path=self.field(key))

    def raw(self, key: str) -> object:
        self.seen.add(key)
        return self.data.get(key, _MISSING)

    def required(self, key: str) -> object:
        value = self.raw(key)
        if value is _MISSING:
            raise self.error(key, "missing required key")
        return value

    def table(self, key: str) -> _Table | None:
        value = self.raw(key)
        return None if value is _MISSING else self._as_table(key, value)

    def required_table(self, key: str) -> _Table:
        return self._as_table(key, self.required(key))

    def _as_table(self, key: str, value: object) -> _Table:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, {_got(value)}")
        return _Table(value, self.field(key), self.source)

    def close(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            expected = ", ".join(sorted(self.seen)) or "none"
            raise self.error(unknown[0], f"unknown key (expected one of: {expected})")

    # ---- typed getters -----------------------------------------------------------------------------

    def string(self, key: str, *, max_len: int = 256) -> str:
        value = self.required(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, {_got(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        if len(value) > max_len:
            raise self.error(key, f"must be at most {max_len} characters, got {len(value)}")
        return value

    def flag(self, key: str) -> bool:
        value = self.required(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, {_got(value)}")
        return value

    def optional_flag(self, key: str) -> bool | None:
        return None if self.raw(key) is _MISSING else self.flag(key)

    def integer(self, key: str, lo: int, hi: int) -> int:
        value = self.required(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, {_got(value)}")
        if not lo <= value <= hi:
            raise self.error(key, f"must be {lo}-{hi}, got {value}")
        return value

    def optional_integer(self, key: str, lo: int, hi: int, default: int) -> int:
        return default if self.raw(key) is _MISSING else self.integer(key, lo, hi)

    def number(self, key: str, lo: float, hi: float) -> float:
        return _number(self.required(key), lo, hi, lambda reason: self.error(key, reason))

    def choice(self, key: str, kind: Callable[[str], T], options: list[str]) -> T:
        value = self.required(key)
        if not isinstance(value, str) or value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}, {_got(value)}")
        return kind(value)

    def quantity(self, key: str, parse: Callable[[object], int]) -> int:
        value = self.required(key)
        try:
            return parse(value)
        except QuantityError as exc:
            raise self.error(key, str(exc)) from None

    def optional_quantity(self, key: str, parse: Callable[[object], int]) -> int | None:
        return None if self.raw(key) is _MISSING else self.quantity(key, parse)

    def strings(self, key: str, pattern: re.Pattern[str] | None = None, *, scalar_ok: bool = False) -> tuple[str, ...]:
        """A non-empty array of non-empty strings (or one string when `scalar_ok`); () when absent."""
        value = self.raw(key)
        if value is _MISSING:
            return ()
        if scalar_ok and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(key, f"must be an array of strings, {_got(value)}")
        if not value:
            raise self.error(key, "must not be empty (leave the key out to match anything)")
        for index, item in enumerate(value):
            where = f"{self.field(key)}[{index}]"
            if not isinstance(item, str) or not item.strip() or len(item) > 128:
                raise ProfileError(f"must be a string of 1-128 characters, {_got(item)}", file=self.source, path=where)
            if pattern is not None and not pattern.fullmatch(item):
                raise ProfileError(f"invalid value {item!r}", file=self.source, path=where)
        return tuple(value)


def _number(value: object, lo: float, hi: float, error: Callable[[str], ProfileError]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"must be a number, {_got(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise error(f"must be {_num(lo)}-{_num(hi)}, got {_num(value)}")
    return float(value)


# ---- sections ------------------------------------------------------------------------------------------


def _detection(table: _Table | None) -> Detection:
    if table is None:
        return Detection()
    arch = table.strings("arch")
    for index, name in enumerate(arch):
        if name not in ARCHES:
            raise ProfileError(
                f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHES))})",
                file=table.source,
                path=f"{table.field('arch')}[{index}]",
            )
    detection = Detection(
        arch=arch,
        device_tree_model=table.strings("device_tree_model", scalar_ok=True),
        termux=table.optional_flag("termux"),
        battery=table.optional_flag("battery"),
        os=table.strings("os", OS_PATTERN),
        min_memory_bytes=table.optional_quantity("min_memory", parse_memory),
        max_memory_bytes=table.optional_quantity("max_memory", parse_memory),
        priority=table.optional_integer("priority", *PRIORITY_RANGE, default=0),
    )
    table.close()
    low, high = detection.min_memory_bytes, detection.max_memory_bytes
    if low is not None and high is not None and low > high:
        raise table.error("max_memory", f"must be >= min_memory ({low} bytes), got {high} bytes")
    return detection


def _reserved(table: _Table) -> Reserved:
    reserved = Reserved(
        cpu_millicores=table.quantity("cpu", parse_cpu), memory_bytes=table.quantity("memory", parse_memory)
    )
    table.close()
    return reserved


def _battery(table: _Table | None) -> BatteryPolicy | None:
    if table is None:
        return None
    policy = BatteryPolicy(
        min_percent=table.number("min_percent", 0.0, 100.0),
        require_charging=table.flag("require_charging"),
    )
    table.close()
    return policy


def _thresholds(table: _Table | None) -> Thresholds:
    if table is None:
        return Thresholds()
    defaults = Thresholds()

    def value(key: str, bounds: tuple[float, float]) -> float:
        return getattr(defaults, key) if table.raw(key) is _MISSING else table.number(key, *bounds)

    thresholds = Thresholds(
        cpu_percent=value("cpu_percent", THRESHOLD_RANGE),
        memory_percent=value("memory_percent", THRESHOLD_RANGE),
        disk_percent=value("disk_percent", THRESHOLD_RANGE),
        battery_percent=value("battery_percent", THRESHOLD_RANGE),
        replica_cpu_percent=value("replica_cpu_percent", REPLICA_THRESHOLD_RANGE),
        replica_memory_percent=value("replica_memory_percent", REPLICA_THRESHOLD_RANGE),
    )
    table.close()
    return thresholds


def _link(table: _Table | None, heartbeat_interval_s: float) -> Link:
    """The `[link]` table; absent keys take `Link`'s defaults (a mains-powered, unmetered device)."""
    if table is None:
        return Link()
    defaults = Link()
    keepalive = (defaults.keepalive_s if table.raw("keepalive_s") is _MISSING
                 else table.integer("keepalive_s", *KEEPALIVE_RANGE_S))
    longest = (defaults.heartbeat_max_interval_s if table.raw("heartbeat_max_interval_s") is _MISSING
               else table.number("heartbeat_max_interval_s", *HEARTBEAT_MAX_RANGE_S))
    thresholds = _thresholds(table.table("thresholds"))
    link = Link(keepalive_s=keepalive, heartbeat_max_interval_s=longest, thresholds=thresholds)
    table.close()
    if link.heartbeat_max_interval_s < heartbeat_interval_s:
        floor = _num(heartbeat_interval_s)
        raise table.error("heartbeat_max_interval_s",
                          f"must be >= heartbeat_interval_s ({floor}), got {_num(link.heartbeat_max_interval_s)}")
    return link


def _storage(table: _Table | None) -> Storage:
    """The `[storage]` table: `quota` in bytes or a size ("20Gi", "500MiB"); absent: no storage (quota 0)."""
    if table is None:
        return Storage()
    quota = table.optional_quantity("quota", parse_size)
    table.close()
    return Storage(quota_bytes=quota or 0)


def _sensor_limits(table: _Table | None) -> Mapping[str, float]:
    if table is None:
        return MappingProxyType({})
    if len(table.data) > MAX_SENSORS:
        raise ProfileError(f"at most {MAX_SENSORS} sensors, got {len(table.data)}", file=table.source, path=table.path)
    limits: dict[str, float] = {}
    for sensor in sorted(table.data):
        if not SENSOR_PATTERN.fullmatch(sensor):
            raise table.error(sensor, "invalid sensor name (letters, digits, '.', '_', '-'; at most 64)")
        limits[sensor] = table.number(sensor, *TEMPERATURE_RANGE_C)
    return MappingProxyType(limits)


def _labels(table: _Table | None) -> Mapping[str, str]:
    if table is None:
        return MappingProxyType({})
    if len(table.data) > MAX_LABELS:
        raise ProfileError(f"at most {MAX_LABELS} labels, got {len(table.data)}", file=table.source, path=table.path)
    labels: dict[str, str] = {}
    for key in sorted(table.data):
        value = table.raw(key)
        if not LABEL_KEY_PATTERN.fullmatch(key):
            raise table.error(key, "invalid label key (letters, digits, '.', '_', '-', '/'; at most 128)")
        if not isinstance(value, str):
            raise table.error(key, f"must be a string, {_got(value)}")
        if not LABEL_VALUE_PATTERN.fullmatch(value):
            raise table.error(key, f"invalid label value {value!r} (letters, digits, '.', '_', '-'; at most 128)")
        labels[key] = value
    return MappingProxyType(labels)


def profile_from_mapping(name: str, data: Mapping[str, object], *, source: str = "") -> Profile:
    """Validate a decoded TOML document and build the `Profile` called `name`."""
    source = source or f"{name}.toml"
    if not NAME_PATTERN.fullmatch(name):
        raise ProfileError(
            f"invalid profile name {name!r}: lower-case letters, digits and '-', at most 64", file=source
        )
    top = _Table(data, "", source)
    heartbeat_interval_s = top.number("heartbeat_interval_s", *HEARTBEAT_RANGE_S)
    profile = Profile(
        name=name,
        description=top.string("description"),
        detection=_detection(top.table("detect")),
        runtime=top.choice("runtime", Runtime, [r.value for r in Runtime]),
        heartbeat_interval_s=heartbeat_interval_s,
        reserved=_reserved(top.required_table("reserved")),
        max_workloads=top.integer("max_workloads", *MAX_WORKLOADS_RANGE),
        battery=_battery(top.table("battery")),
        thermal_limit_c=top.number("thermal_limit_c", *TEMPERATURE_RANGE_C),
        sensor_thermal_limits_c=_sensor_limits(top.table("sensor_thermal_limits_c")),
        link=_link(top.table("link"), heartbeat_interval_s),
        storage=_storage(top.table("storage")),
        metered=top.flag("metered"),
        gate_action=top.choice("gate_action", GateAction, [a.value for a in GateAction]),
        labels=_labels(top.table("labels")),
        source=source,
    )
    top.close()
    return profile


def parse_profile(text: str, *, name: str, source: str = "") -> Profile:
    """Parse TOML `text` as the profile `name`; `source` (default "<name>.toml") prefixes every error."""
    source = source or f"{name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"invalid TOML: {exc}", file=source) from None
    return profile_from_mapping(name, data, source=source)
