"""Gates: should this node take work right now, given its battery and temperatures? A pure decision.

Theory of operation. Each gate is identified by a stable id and trips on a reading past its threshold:

- `battery` — the battery is below `battery.min_percent`. With `require_charging=False` (laptops) only while
  known to be discharging: plugging in clears it at once, and an unknown charging state does not trip it (an
  unknown reading never trips a gate; the agent derives `charging` from the battery's own status, so this
  is rare). With `require_charging=True` (phones) whatever the charger does.
- `charging` — the profile requires the charger and the device is known not to be charging.
- `temperature:<sensor>` — a sensor is at or above its limit (`Profile.thermal_limit_for`).

Hysteresis: a gate that was tripped in `previous` stays tripped until its reading is back past the threshold
by a margin (battery >= min + 5 %, temperature <= limit - 5 °C), so a reading hovering at the threshold does
not make the node flap between schedulable and not. A reading that is unknown (`None`, or NaN) never trips a
gate and also releases one that was tripped: a sensor that went away must not pin the node forever.

The verdict's `action` is what to do with running workloads now: the profile's `gate_action` while any gate is
tripped, `keep` otherwise. Reasons are at most 128 characters (the wire's limit per `NodeStatus.gates` item);
the wire also holds at most 16 items, so a caller reporting many hot sensors keeps the first 16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from firmware_profiles.model import BatteryPolicy, GateAction, Profile

BATTERY_MARGIN_PERCENT = 5.0
THERMAL_MARGIN_C = 5.0
BATTERY_GATE = "battery"
CHARGING_GATE = "charging"
TEMPERATURE_GATE_PREFIX = "temperature:"
_MAX_SENSOR_SHOWN = 48  # keeps every reason within the wire's 128 characters


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The result of one evaluation; pass it back as `previous` next time for hysteresis."""

    schedulable: bool
    gates: tuple[str, ...]  # human-readable reasons, one per tripped gate, in a stable order
    action: GateAction
    tripped: frozenset[str] = field(default=frozenset())  # ids of the tripped gates (see module doc)


def temperature_gate(sensor: str) -> str:
    return f"{TEMPERATURE_GATE_PREFIX}{sensor}"


def _known(value: float | None) -> float | None:
    """The reading, or None when unknown; NaN counts as unknown (it compares false with everything)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _n(value: float) -> str:
    return f"{value:g}"


def _celsius(value: float) -> str:
    return f"{value:.1f}C" if abs(value) < 1e6 else f"{value:g}C"  # bounded length for absurd readings


def _battery_gate(policy: BatteryPolicy, percent: float | None, charging: bool | None, was_tripped: bool) -> str | None:
    if percent is None or (charging is not False and not policy.require_charging):
        return None
    threshold = policy.min_percent + (BATTERY_MARGIN_PERCENT if was_tripped else 0.0)
    if not percent < threshold:
        return None
    suffix = "" if policy.require_charging else " and not charging"
    if percent < policy.min_percent:
        return f"battery {_n(percent)}% < {_n(policy.min_percent)}%{suffix}"
    return f"battery {_n(percent)}% not yet back to {_n(threshold)}%{suffix}"


def _temperature_gate(sensor: str, celsius: float, limit: float, was_tripped: bool) -> str | None:
    shown = sensor if len(sensor) <= _MAX_SENSOR_SHOWN else sensor[: _MAX_SENSOR_SHOWN - 3] + "..."
    if celsius >= limit:
        return f"temperature {shown} {_celsius(celsius)} >= {_n(limit)}C"
    release = limit - THERMAL_MARGIN_C
    if was_tripped and celsius > release:
        return f"temperature {shown} {_celsius(celsius)} not yet down to {_n(release)}C"
    return None


def evaluate_gates(
    profile: Profile,
    battery_percent: float | None,
    charging: bool | None,
    temperatures: Mapping[str, float | None],
    previous: GateVerdict | Set[str] | None = None,
) -> GateVerdict:
    """Which gates are tripped now, given the readings and the previous verdict (or its tripped ids)."""
    match previous:
        case GateVerdict(tripped=before):
            pass
        case None:
            before = frozenset()
        case _:
            before = frozenset(previous)
    tripped: dict[str, str] = {}  # insertion order = report order
    percent = _known(battery_percent)
    if profile.battery is not None:
        reason = _battery_gate(profile.battery, percent, charging, BATTERY_GATE in before)
        if reason is not None:
            tripped[BATTERY_GATE] = reason
        if profile.battery.require_charging and charging is False:
            tripped[CHARGING_GATE] = "not charging (profile requires charging)"
    for sensor in sorted(temperatures):
        celsius = _known(temperatures[sensor])
        if celsius is None:
            continue
        gate = temperature_gate(sensor)
        reason = _temperature_gate(sensor, celsius, profile.thermal_limit_for(sensor), gate in before)
        if reason is not None:
            tripped[gate] = reason
    if not tripped:
        return GateVerdict(schedulable=True, gates=(), action=GateAction.KEEP)
    return GateVerdict(
        schedulable=False, gates=tuple(tripped.values()), action=profile.gate_action, tripped=frozenset(tripped)
    )
