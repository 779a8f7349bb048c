"""The `[link]` table: keep-alive, heartbeat maximum interval and thresholds, validated naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_profiles import Link, ProfileError, Thresholds, load_all, load_profile, parse_profile
from firmware_profiles.schema import profile_from_mapping
from tests.firmware_profiles.builders import base_data, profile_data, to_toml

LINK_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("keepalive-zero", {"link.keepalive_s": 0}, "link.keepalive_s: must be 5-65535, got 0"),
    ("keepalive-over-mqtt", {"link.keepalive_s": 70000}, "link.keepalive_s: must be 5-65535, got 70000"),
    ("keepalive-float", {"link.keepalive_s": 60.5}, "link.keepalive_s: must be an integer, got float 60.5"),
    ("max-string", {"link.heartbeat_max_interval_s": "1h"},
     "link.heartbeat_max_interval_s: must be a number, got string '1h'"),
    ("max-below-sampling", {"link.heartbeat_max_interval_s": 5},
     "link.heartbeat_max_interval_s: must be >= heartbeat_interval_s (10), got 5"),
    ("max-huge", {"link.heartbeat_max_interval_s": 1e6}, "link.heartbeat_max_interval_s: must be 5-86400, got 1e+06"),
    ("link-unknown", {"link.keepalive": 60}, "link.keepalive: unknown key (expected one of: "),
    ("link-not-table", {"link": 60}, "link: must be a table, got integer 60"),
    ("threshold-range", {"link.thresholds": {"cpu_percent": 150}},
     "link.thresholds.cpu_percent: must be 0-100, got 150"),
    ("threshold-type", {"link.thresholds": {"battery_percent": True}},
     "link.thresholds.battery_percent: must be a number, got boolean True"),
    ("threshold-unknown", {"link.thresholds": {"gpu_percent": 5}}, "link.thresholds.gpu_percent: unknown key"),
]


@pytest.mark.parametrize(("changes", "expected"), [(c, e) for _, c, e in LINK_ERRORS],
                         ids=[i for i, _, _ in LINK_ERRORS])
def test_invalid_link_tables_are_rejected_naming_the_field(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(to_toml(profile_data(changes)), name="vps")
    assert str(caught.value).startswith(f"vps.toml: {expected}"), str(caught.value)


def test_a_profile_without_link_takes_the_defaults() -> None:
    assert profile_from_mapping("test", base_data()).link == Link()


def test_a_partial_link_table_keeps_the_other_defaults() -> None:
    profile = profile_from_mapping("test", profile_data({"link.keepalive_s": 300,
                                                        "link.thresholds": {"cpu_percent": 40}}))
    assert profile.link == Link(keepalive_s=300, thresholds=Thresholds(cpu_percent=40.0))


def test_the_metered_battery_profile_has_the_longest_timers() -> None:
    phone = load_profile("termux-android")
    assert phone.metered and phone.battery is not None
    for other in load_all():
        assert phone.link.keepalive_s >= other.link.keepalive_s, other.name
        assert phone.link.heartbeat_max_interval_s >= other.link.heartbeat_max_interval_s, other.name


@pytest.mark.parametrize("profile", load_all(), ids=lambda p: p.name)
def test_every_shipped_profile_heartbeats_no_slower_than_its_keepalive_budget(profile: Any) -> None:
    """The maximum interval is at least the sampling interval, and metered profiles idle at least 10 minutes."""
    assert profile.link.heartbeat_max_interval_s >= profile.heartbeat_interval_s
    if profile.metered:
        assert profile.link.keepalive_s >= 600 and profile.link.heartbeat_max_interval_s >= 1800
