"""Detection: which shipped profile a device gets, deterministically, from its facts alone."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from firmware_profiles import Detection, DeviceProbe, detect, load_all, match_profile
from tests.firmware_profiles.builders import make_probe, make_profile

PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"
ZERO2W = "Raspberry Pi Zero 2 W Rev 1.0"

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("pi4-aarch64", {"arch": "aarch64", "device_tree_model": PI4}, "raspberry-pi-4"),
    ("pi4-32bit-os", {"arch": "armv7l", "device_tree_model": PI4}, "raspberry-pi-4"),
    ("pi400", {"arch": "aarch64", "device_tree_model": "Raspberry Pi 400 Rev 1.0"}, "raspberry-pi-4"),
    ("cm4", {"arch": "aarch64", "device_tree_model": "Raspberry Pi Compute Module 4 Rev 1.0"}, "raspberry-pi-4"),
    ("pi4-on-ups-hat", {"arch": "aarch64", "device_tree_model": PI4, "has_battery": True}, "raspberry-pi-4"),
    ("pi4-battery-unknown", {"arch": "aarch64", "device_tree_model": PI4, "has_battery": None}, "raspberry-pi-4"),
    (
        "zero2w-aarch64",
        {"arch": "aarch64", "device_tree_model": ZERO2W, "memory_bytes": 427 * 2**20},
        "raspberry-pi-zero-2w",
    ),
    ("zero2w-armv7l", {"arch": "armv7l", "device_tree_model": ZERO2W}, "raspberry-pi-zero-2w"),
    ("pi5", {"arch": "aarch64", "device_tree_model": PI5}, "raspberry-pi-5"),
    ("pi500", {"arch": "aarch64", "device_tree_model": "Raspberry Pi 500 Rev 1.0"}, "raspberry-pi-5"),
    ("model-case-insensitive", {"arch": "aarch64", "device_tree_model": PI5.upper()}, "raspberry-pi-5"),
    ("termux", {"arch": "aarch64", "termux": True, "has_battery": True}, "termux-android"),
    ("termux-no-sysfs", {"arch": "aarch64", "termux": True, "has_battery": None, "os": "linux"}, "termux-android"),
    ("termux-32bit-userland", {"arch": "armv8l", "termux": True}, "termux-android"),
    ("x86-laptop", {"arch": "x86_64", "has_battery": True}, "laptop"),
    ("arm-mac-laptop", {"arch": "arm64", "os": "darwin", "has_battery": True}, "laptop"),
    ("x86-vps", {"arch": "x86_64", "has_battery": False}, "vps"),
    ("windows-style-arch", {"arch": "AMD64", "has_battery": False}, "vps"),
    ("graviton-vps", {"arch": "aarch64", "has_battery": False}, "vps"),
    ("armv7-no-device-tree", {"arch": "armv7l", "device_tree_model": None}, "iot-gateway-armv7"),
    ("armv7-other-board", {"arch": "armv7l", "device_tree_model": "Moxa UC-8112-LX"}, "iot-gateway-armv7"),
    ("armv7-battery-unknown", {"arch": "armv7l", "has_battery": None}, "iot-gateway-armv7"),
]


@pytest.mark.parametrize(("facts", "expected"), [(f, e) for _, f, e in CASES], ids=[i for i, _, _ in CASES])
def test_detects_the_shipped_profiles(facts: dict[str, Any], expected: str) -> None:
    result = detect(make_probe(**facts), load_all())
    assert result.name == expected, result.reasons
    assert not result.fallback
    assert result.reasons


FALLBACKS: list[tuple[str, dict[str, Any], str]] = [
    ("battery-unknown-x86", {"arch": "x86_64", "has_battery": None}, "vps"),
    ("riscv-with-battery", {"arch": "riscv64", "has_battery": True}, "laptop"),
    ("riscv-without", {"arch": "riscv64", "has_battery": False}, "vps"),
    ("nothing-known", {"arch": "", "os": "", "has_battery": None, "memory_bytes": None}, "vps"),
    ("mac-mini", {"arch": "arm64", "os": "darwin", "has_battery": False}, "vps"),
]


@pytest.mark.parametrize(("facts", "expected"), [(f, e) for _, f, e in FALLBACKS], ids=[i for i, _, _ in FALLBACKS])
def test_falls_back_to_laptop_or_vps(facts: dict[str, Any], expected: str) -> None:
    result = detect(make_probe(**facts), load_all())
    assert (result.name, result.fallback) == (expected, True)


def test_fallback_without_any_profiles() -> None:
    assert detect(DeviceProbe(has_battery=True), []).name == "laptop"
    assert detect(DeviceProbe(), []).name == "vps"


def test_reasons_explain_the_choice() -> None:
    result = detect(make_probe(arch="aarch64", device_tree_model=PI4), load_all())
    assert result.reasons == (
        "arch aarch64 in aarch64, armv7l",
        f"device-tree model {PI4!r} contains 'Raspberry Pi 4'",
        "priority 100",
        "also matched: vps (0)",
    )


def test_does_not_depend_on_profile_order() -> None:
    profiles = list(load_all())
    probe = make_probe(arch="armv7l", device_tree_model=PI4)
    expected = detect(probe, profiles)
    for seed in range(20):
        random.Random(seed).shuffle(profiles)
        assert detect(probe, profiles) == expected


def with_detection(name: str, **rules: Any) -> Any:
    return make_profile(name, detection=Detection(**rules))


def test_priority_wins_then_name() -> None:
    probe = make_probe()
    low, high = (
        with_detection("a-low", arch=("x86_64",), priority=1),
        with_detection("z-high", arch=("x86_64",), priority=2),
    )
    assert detect(probe, [low, high]).name == "z-high"
    tie_b, tie_a = with_detection("b", arch=("x86_64",)), with_detection("a", arch=("x86_64",))
    assert detect(probe, [tie_b, tie_a]).name == "a"
    assert detect(probe, [tie_a, tie_b]).name == "a"


RULES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("no-rules-never-match", {}, {}, False),
    ("arch-hit", {"arch": ("x86_64",)}, {}, True),
    ("arch-alias", {"arch": ("x86_64",)}, {"arch": "amd64"}, True),
    ("arch-miss", {"arch": ("aarch64",)}, {}, False),
    ("os-miss", {"os": ("darwin",)}, {}, False),
    ("model-unknown", {"device_tree_model": ("Pi",)}, {"device_tree_model": None}, False),
    ("termux-absent-wanted", {"termux": False}, {"termux": False}, True),
    ("termux-present-unwanted", {"termux": False}, {"termux": True}, False),
    ("battery-unknown", {"battery": False}, {"has_battery": None}, False),
    ("min-memory-ok", {"min_memory_bytes": 2**30}, {"memory_bytes": 2**30}, True),
    ("min-memory-low", {"min_memory_bytes": 2**30}, {"memory_bytes": 2**30 - 1}, False),
    ("min-memory-unknown", {"min_memory_bytes": 2**30}, {"memory_bytes": None}, False),
    ("max-memory-ok", {"max_memory_bytes": 2**30}, {"memory_bytes": 512 * 2**20}, True),
    ("max-memory-high", {"max_memory_bytes": 2**30}, {"memory_bytes": 2**31}, False),
    ("max-memory-unknown", {"max_memory_bytes": 2**30}, {"memory_bytes": None}, False),
    ("all-rules", {"arch": ("x86_64",), "os": ("linux",), "battery": False, "termux": False}, {}, True),
]


@pytest.mark.parametrize(
    ("rules", "facts", "matched"), [(r, f, m) for _, r, f, m in RULES], ids=[i for i, _, _, _ in RULES]
)
def test_match_profile_rules(rules: dict[str, Any], facts: dict[str, Any], matched: bool) -> None:
    result = match_profile(with_detection("rule", **rules), make_probe(**facts))
    assert result.matched is matched
    assert result.reasons


def test_a_failed_match_says_which_rule_failed() -> None:
    result = match_profile(with_detection("x", arch=("x86_64",), min_memory_bytes=2**30), make_probe(memory_bytes=None))
    assert result.reasons == ("memory unknown < 1024Mi",)


def test_the_probe_is_not_changed() -> None:
    probe = make_probe(arch="AMD64")
    detect(probe, load_all())
    assert dataclasses.asdict(probe)["arch"] == "AMD64"
