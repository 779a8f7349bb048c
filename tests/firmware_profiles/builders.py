"""Builders for firmware_profiles tests: a valid profile document, a tiny TOML writer, a profile with overrides."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from firmware_profiles import DeviceProbe, Profile
from firmware_profiles.schema import profile_from_mapping

_DELETE = object()
DELETE: Any = _DELETE  # as a value in `profile_data(changes)`: remove that key


def base_data() -> dict[str, Any]:
    """A minimal valid profile document (as tomllib would return it)."""
    return {
        "description": "test device",
        "runtime": "podman",
        "heartbeat_interval_s": 10,
        "max_workloads": 4,
        "thermal_limit_c": 80,
        "metered": False,
        "gate_action": "stop",
        "detect": {"arch": ["x86_64"], "priority": 5},
        "reserved": {"cpu": "250m", "memory": "256Mi"},
        "battery": {"min_percent": 30, "require_charging": False},
        "labels": {"cloudless.io/device-class": "test"},
    }


def profile_data(changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`base_data()` with dotted-path changes applied: {"battery.min_percent": 150, "labels": DELETE}."""
    data = base_data()
    for dotted, value in (changes or {}).items():
        *parents, leaf = dotted.split(".")
        table = data
        for part in parents:
            table = table.setdefault(part, {})
        if value is _DELETE:
            table.pop(leaf, None)
        else:
            table[leaf] = copy.deepcopy(value)
    return data


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """Enough of a TOML writer for profile documents: scalars first, then one [table] per nested dict."""
    lines = [f"{json.dumps(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{json.dumps(key)}]")
            lines.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def make_profile(name: str = "test", **changes: Any) -> Profile:
    """A valid profile with `Profile` fields replaced: make_profile(battery=None, gate_action=GateAction.KEEP)."""
    return dataclasses.replace(profile_from_mapping(name, base_data()), **changes)


def make_probe(**facts: Any) -> DeviceProbe:
    """A probe of a plain Linux box; pass the facts that matter to the test."""
    defaults: dict[str, Any] = {"arch": "x86_64", "os": "linux", "has_battery": False, "memory_bytes": 4 * 2**30}
    return DeviceProbe(**{**defaults, **facts})
