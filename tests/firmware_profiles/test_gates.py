"""Gates: battery, charging and temperature, with hysteresis; unknown readings never trip anything."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_profiles import BatteryPolicy, GateAction, GateVerdict, Profile, evaluate_gates, load_profile
from tests.firmware_profiles.builders import make_profile

LAPTOP = make_profile("laptop-like", battery=BatteryPolicy(min_percent=30, require_charging=False), thermal_limit_c=80)
PHONE = make_profile(
    "phone-like",
    battery=BatteryPolicy(min_percent=30, require_charging=True),
    thermal_limit_c=70,
    sensor_thermal_limits_c={"battery": 45.0},
)
MAINS = make_profile("mains", battery=None, thermal_limit_c=80, gate_action=GateAction.KEEP)
PROFILES = {"laptop": LAPTOP, "phone": PHONE, "mains": MAINS}
NAN = math.nan

# (id, profile, battery %, charging, temperatures, expected reasons)
TABLE: list[tuple[str, str, float | None, bool | None, dict[str, float | None], tuple[str, ...]]] = [
    ("laptop-low-discharging", "laptop", 12, False, {}, ("battery 12% < 30% and not charging",)),
    ("laptop-low-charging", "laptop", 12, True, {}, ()),
    ("laptop-low-charging-unknown", "laptop", 12, None, {}, ()),
    ("laptop-percent-unknown", "laptop", None, False, {}, ()),
    ("laptop-at-threshold", "laptop", 30, False, {}, ()),
    ("laptop-just-below", "laptop", 29.5, False, {}, ("battery 29.5% < 30% and not charging",)),
    ("laptop-nan-percent", "laptop", NAN, False, {}, ()),
    ("phone-full-unplugged", "phone", 80, False, {}, ("not charging (profile requires charging)",)),
    ("phone-low-charging", "phone", 12, True, {}, ("battery 12% < 30%",)),
    (
        "phone-low-unplugged",
        "phone",
        12,
        False,
        {},
        ("battery 12% < 30%", "not charging (profile requires charging)"),
    ),
    ("phone-charging-unknown", "phone", 80, None, {}, ()),
    ("phone-all-unknown", "phone", None, None, {"battery": None}, ()),
    ("phone-happy", "phone", 80, True, {"battery": 30.0, "cpu": 55.0}, ()),
    ("phone-battery-hot", "phone", 80, True, {"battery": 46.0, "cpu": 60.0}, ("temperature battery 46.0C >= 45C",)),
    ("phone-cpu-uses-default", "phone", 80, True, {"cpu": 70.0}, ("temperature cpu 70.0C >= 70C",)),
    ("cpu-hot", "laptop", None, None, {"cpu": 82.0}, ("temperature cpu 82.0C >= 80C",)),
    ("cpu-at-limit", "laptop", None, None, {"cpu": 80.0}, ("temperature cpu 80.0C >= 80C",)),
    ("cpu-below-limit", "laptop", None, None, {"cpu": 79.9}, ()),
    ("cpu-unknown", "laptop", None, None, {"cpu": None}, ()),
    ("cpu-nan", "laptop", None, None, {"cpu": NAN}, ()),
    ("cpu-inf", "laptop", None, None, {"cpu": math.inf}, ("temperature cpu infC >= 80C",)),
    (
        "sensors-sorted",
        "laptop",
        None,
        None,
        {"zone2": 90.0, "acpitz": 85.0},
        ("temperature acpitz 85.0C >= 80C", "temperature zone2 90.0C >= 80C"),
    ),
    ("mains-ignores-battery", "mains", 1, False, {}, ()),
    ("mains-hot", "mains", None, None, {"cpu": 81.0}, ("temperature cpu 81.0C >= 80C",)),
]


@pytest.mark.parametrize(
    ("profile", "percent", "charging", "temperatures", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_gates(
    profile: str,
    percent: float | None,
    charging: bool | None,
    temperatures: dict[str, float | None],
    expected: tuple[str, ...],
) -> None:
    verdict = evaluate_gates(PROFILES[profile], percent, charging, temperatures)
    assert verdict.gates == expected
    assert verdict.schedulable is (not expected)
    assert len(verdict.tripped) == len(expected)


def test_action_is_the_profiles_while_tripped_and_keep_otherwise() -> None:
    assert evaluate_gates(LAPTOP, 5, False, {}).action is GateAction.STOP
    assert evaluate_gates(MAINS, None, None, {"cpu": 99.0}).action is GateAction.KEEP
    assert evaluate_gates(LAPTOP, 90, False, {}).action is GateAction.KEEP
    assert evaluate_gates(LAPTOP, 90, False, {}) == GateVerdict(True, (), GateAction.KEEP, frozenset())


def test_gate_ids() -> None:
    verdict = evaluate_gates(PHONE, 10, False, {"battery": 50.0, "cpu": 20.0})
    assert verdict.tripped == {"battery", "charging", "temperature:battery"}


# ---- hysteresis ----------------------------------------------------------------------------------------

# (id, profile, previously tripped, battery %, charging, temperatures, expected reasons)
HYSTERESIS: list[tuple[str, str, set[str], float | None, bool | None, dict[str, float | None], tuple[str, ...]]] = [
    ("battery-held", "laptop", {"battery"}, 32, False, {}, ("battery 32% not yet back to 35% and not charging",)),
    ("battery-released-at-margin", "laptop", {"battery"}, 35, False, {}, ()),
    ("battery-released-by-charger", "laptop", {"battery"}, 12, True, {}, ()),
    ("battery-released-when-unknown", "laptop", {"battery"}, None, False, {}, ()),
    ("battery-not-held-if-not-tripped", "laptop", set(), 32, False, {}, ()),
    ("phone-battery-held-while-charging", "phone", {"battery"}, 33, True, {}, ("battery 33% not yet back to 35%",)),
    ("phone-charging-has-no-margin", "phone", {"charging"}, 80, True, {}, ()),
    (
        "cpu-held",
        "laptop",
        {"temperature:cpu"},
        None,
        None,
        {"cpu": 77.0},
        ("temperature cpu 77.0C not yet down to 75C",),
    ),
    ("cpu-released-at-margin", "laptop", {"temperature:cpu"}, None, None, {"cpu": 75.0}, ()),
    ("cpu-released-when-unknown", "laptop", {"temperature:cpu"}, None, None, {"cpu": None}, ()),
    ("cpu-released-when-gone", "laptop", {"temperature:cpu"}, None, None, {}, ()),
    ("cpu-not-held-if-not-tripped", "laptop", set(), None, None, {"cpu": 77.0}, ()),
    ("other-sensor-not-held", "laptop", {"temperature:gpu"}, None, None, {"cpu": 77.0}, ()),
    (
        "phone-battery-temp-held",
        "phone",
        {"temperature:battery"},
        80,
        True,
        {"battery": 41.0},
        ("temperature battery 41.0C not yet down to 40C",),
    ),
]


@pytest.mark.parametrize(
    ("profile", "before", "percent", "charging", "temperatures", "expected"),
    [row[1:] for row in HYSTERESIS],
    ids=[row[0] for row in HYSTERESIS],
)
def test_hysteresis(
    profile: str,
    before: set[str],
    percent: float | None,
    charging: bool | None,
    temperatures: dict[str, float | None],
    expected: tuple[str, ...],
) -> None:
    from_set = evaluate_gates(PROFILES[profile], percent, charging, temperatures, before)
    assert from_set.gates == expected
    previous = GateVerdict(False, ("whatever",), GateAction.STOP, frozenset(before))
    assert evaluate_gates(PROFILES[profile], percent, charging, temperatures, previous) == from_set


def run(profile: Profile, readings: list[dict[str, Any]]) -> list[bool]:
    """Feed each verdict back in, as the agent does; return the schedulable flag after every reading."""
    verdict: GateVerdict | None = None
    flags = []
    for reading in readings:
        verdict = evaluate_gates(
            profile, reading.get("percent"), reading.get("charging"), reading.get("temps", {}), verdict
        )
        flags.append(verdict.schedulable)
    return flags


def test_a_battery_hovering_at_the_threshold_does_not_flap() -> None:
    readings = [{"percent": p, "charging": False} for p in (31, 29, 31, 29, 31, 34, 35, 31)]
    assert run(LAPTOP, readings) == [True, False, False, False, False, False, True, True]


def test_a_temperature_hovering_at_the_limit_does_not_flap() -> None:
    readings = [{"temps": {"cpu": t}} for t in (79.0, 81.0, 79.0, 80.5, 76.0, 75.0, 79.5)]
    assert run(LAPTOP, readings) == [True, False, False, False, False, True, True]


def test_real_profiles_work_with_gates() -> None:
    phone = load_profile("termux-android")
    assert evaluate_gates(phone, 80, True, {"battery": 44.0}).schedulable
    assert evaluate_gates(phone, 80, True, {"battery": 45.0}).gates == ("temperature battery 45.0C >= 45C",)
    assert evaluate_gates(load_profile("vps"), 1, False, {}).schedulable


# ---- properties ----------------------------------------------------------------------------------------

readings = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
sensor_names = st.text(min_size=0, max_size=200)
temperature_maps = st.dictionaries(sensor_names, readings, max_size=8)
gate_ids = st.one_of(
    st.sampled_from(["battery", "charging"]), sensor_names.map(lambda s: f"temperature:{s}"), st.text(max_size=20)
)
policies = st.one_of(
    st.none(),
    st.builds(BatteryPolicy, min_percent=st.floats(0, 100), require_charging=st.booleans()),
)
profiles = st.builds(
    lambda battery, limit, action, limits: make_profile(
        battery=battery, thermal_limit_c=limit, gate_action=action, sensor_thermal_limits_c=limits
    ),
    policies,
    st.floats(20, 150),
    st.sampled_from(GateAction),
    st.dictionaries(st.sampled_from(["battery", "cpu", "gpu"]), st.floats(20, 150), max_size=3),
)


@given(profiles, readings, st.one_of(st.none(), st.booleans()), temperature_maps, st.frozensets(gate_ids, max_size=6))
def test_evaluate_gates_never_raises_and_is_consistent(
    profile: Profile,
    percent: float | None,
    charging: bool | None,
    temperatures: dict[str, float | None],
    before: frozenset[str],
) -> None:
    verdict = evaluate_gates(profile, percent, charging, temperatures, before)
    assert verdict.schedulable is (not verdict.gates) is (not verdict.tripped)
    assert len(verdict.gates) == len(verdict.tripped)
    assert verdict.action is (GateAction.KEEP if verdict.schedulable else profile.gate_action)
    assert all(len(reason) <= 128 for reason in verdict.gates)  # the wire's NodeStatus.gates item bound


@given(profiles, st.dictionaries(sensor_names, st.none(), max_size=8), st.frozensets(gate_ids, max_size=6))
def test_unknown_readings_never_trip_a_gate(
    profile: Profile, temperatures: dict[str, None], before: frozenset[str]
) -> None:
    assert evaluate_gates(profile, None, None, temperatures, before).schedulable


@given(profiles, readings, st.one_of(st.none(), st.booleans()), temperature_maps)
def test_hysteresis_only_ever_holds_gates(
    profile: Profile, percent: float | None, charging: bool | None, temperatures: dict[str, float | None]
) -> None:
    fresh = evaluate_gates(profile, percent, charging, temperatures)
    everything = {"battery", "charging", *(f"temperature:{s}" for s in temperatures)}
    held = evaluate_gates(profile, percent, charging, temperatures, everything)
    assert fresh.tripped <= held.tripped


@given(profiles, readings, st.one_of(st.none(), st.booleans()), temperature_maps, st.frozensets(gate_ids, max_size=6))
def test_feeding_the_verdict_back_is_stable(
    profile: Profile,
    percent: float | None,
    charging: bool | None,
    temperatures: dict[str, float | None],
    before: frozenset[str],
) -> None:
    first = evaluate_gates(profile, percent, charging, temperatures, before)
    second = evaluate_gates(profile, percent, charging, temperatures, first)
    assert evaluate_gates(profile, percent, charging, temperatures, second) == second
