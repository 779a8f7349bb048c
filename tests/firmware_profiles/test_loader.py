"""Loading profiles: every shipped profile is valid; every invalid document fails naming its file and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from firmware_profiles import (
    GateAction,
    ProfileError,
    Runtime,
    UnknownProfile,
    available,
    builtin_names,
    load_all,
    load_file,
    load_profile,
    loader,
    parse_profile,
)
from firmware_profiles.schema import profile_from_mapping
from tests.firmware_profiles.builders import DELETE, base_data, profile_data, to_toml

REQUIRED_PROFILES = {
    "raspberry-pi-zero-2w",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "termux-android",
    "laptop",
    "iot-gateway-armv7",
    "vps",
}
PROFILE_DIR = Path(__file__).resolve().parents[2] / "firmware_profiles" / "profiles"


# ---- the shipped profiles ------------------------------------------------------------------------------


def test_the_required_profiles_ship() -> None:
    assert set(builtin_names()) >= REQUIRED_PROFILES
    assert available() == sorted(builtin_names())


@pytest.mark.parametrize("name", sorted(REQUIRED_PROFILES))
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.source == f"{name}.toml"
    assert profile.detection.has_rules, "a shipped profile must be detectable"
    assert profile.description
    assert 0 < profile.reserved.cpu_millicores <= 4000
    assert 0 < profile.reserved.memory_bytes <= 8 * 2**30
    assert 1 <= profile.max_workloads <= 32
    assert 1 <= profile.heartbeat_interval_s <= 60
    assert "cloudless.io/device-class" in profile.labels
    for key, value in profile.labels.items():  # within the wire's Labels bounds
        assert len(key) <= 128 and len(value) <= 128


def test_shipped_files_are_the_builtins() -> None:
    on_disk = sorted(path.stem for path in PROFILE_DIR.glob("*.toml"))
    assert on_disk == list(builtin_names())
    for path in PROFILE_DIR.glob("*.toml"):
        assert load_file(path) == load_profile(path.stem)


def test_key_values_follow_the_device_classes() -> None:
    zero, pi4, pi5 = (load_profile(n) for n in ("raspberry-pi-zero-2w", "raspberry-pi-4", "raspberry-pi-5"))
    phone, laptop, gateway, vps = (load_profile(n) for n in ("termux-android", "laptop", "iot-gateway-armv7", "vps"))
    assert zero.heartbeat_interval_s == 15 and zero.max_workloads <= 2
    assert zero.max_workloads < pi4.max_workloads < pi5.max_workloads
    assert phone.runtime is Runtime.PROCESS
    assert all(p.runtime is Runtime.PODMAN for p in (zero, pi4, pi5, laptop, gateway, vps))
    assert phone.battery is not None and phone.battery.require_charging and phone.battery.min_percent == 30
    assert phone.thermal_limit_for("battery") == 45
    assert phone.metered
    assert laptop.battery is not None and not laptop.battery.require_charging
    assert vps.battery is None and vps.gate_action is GateAction.KEEP


def test_builtins_are_cached() -> None:
    assert load_profile("raspberry-pi-4") is load_profile("raspberry-pi-4")


def test_load_all_returns_every_profile_sorted() -> None:
    assert [p.name for p in load_all()] == sorted(builtin_names())


def test_profiles_are_hashable_and_compare_by_value() -> None:
    again = parse_profile((PROFILE_DIR / "laptop.toml").read_text(), name="laptop", source="elsewhere")
    assert again == load_profile("laptop")  # `source` is not part of the value
    assert hash(again) == hash(load_profile("laptop"))


# ---- validation errors: each names the file and the field ----------------------------------------------

ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("min-percent-range", {"battery.min_percent": 150}, "battery.min_percent: must be 0-100, got 150"),
    ("min-percent-negative", {"battery.min_percent": -1}, "battery.min_percent: must be 0-100, got -1"),
    ("min-percent-string", {"battery.min_percent": "30"}, "battery.min_percent: must be a number, got string '30'"),
    ("min-percent-bool", {"battery.min_percent": True}, "battery.min_percent: must be a number, got boolean True"),
    ("min-percent-nan", {"battery.min_percent": float("nan")}, "battery.min_percent: must be 0-100, got nan"),
    ("charging-type", {"battery.require_charging": "yes"}, "battery.require_charging: must be true or false"),
    ("charging-missing", {"battery.require_charging": DELETE}, "battery.require_charging: missing required key"),
    (
        "battery-unknown-key",
        {"battery.min_precent": 20},
        "battery.min_precent: unknown key (expected one of: min_percent, require_charging)",
    ),
    ("battery-not-table", {"battery": 30}, "battery: must be a table, got integer 30"),
    ("top-unknown-key", {"colour": "red"}, "colour: unknown key (expected one of: "),
    ("name-key-is-unknown", {"name": "vps"}, "name: unknown key"),
    ("runtime", {"runtime": "docker"}, "runtime: must be one of podman, process, got string 'docker'"),
    ("runtime-missing", {"runtime": DELETE}, "runtime: missing required key"),
    ("gate-action", {"gate_action": "pause"}, "gate_action: must be one of stop, keep, got string 'pause'"),
    ("heartbeat-zero", {"heartbeat_interval_s": 0}, "heartbeat_interval_s: must be 1-3600, got 0"),
    ("heartbeat-huge", {"heartbeat_interval_s": 1e9}, "heartbeat_interval_s: must be 1-3600, got 1e+09"),
    ("heartbeat-bool", {"heartbeat_interval_s": True}, "heartbeat_interval_s: must be a number, got boolean True"),
    ("max-workloads-float", {"max_workloads": 2.5}, "max_workloads: must be an integer, got float 2.5"),
    ("max-workloads-negative", {"max_workloads": -1}, "max_workloads: must be 0-1000, got -1"),
    ("max-workloads-big", {"max_workloads": 1001}, "max_workloads: must be 0-1000, got 1001"),
    ("thermal-range", {"thermal_limit_c": 500}, "thermal_limit_c: must be 20-150, got 500"),
    ("metered-type", {"metered": "no"}, "metered: must be true or false, got string 'no'"),
    ("metered-int", {"metered": 0}, "metered: must be true or false, got integer 0"),
    ("description-empty", {"description": " "}, "description: must not be empty"),
    ("description-long", {"description": "x" * 300}, "description: must be at most 256 characters, got 300"),
    ("long-values-are-cut", {"runtime": "d" * 100}, "runtime: must be one of podman, process, got string 'dddd"),
    ("description-missing", {"description": DELETE}, "description: missing required key"),
    ("reserved-missing", {"reserved": DELETE}, "reserved: missing required key"),
    ("reserved-not-table", {"reserved": "x"}, "reserved: must be a table, got string 'x'"),
    ("cpu-word", {"reserved.cpu": "lots"}, "reserved.cpu: must be cores ('0.5', '2') or millicores ('250m')"),
    ("cpu-sub-milli", {"reserved.cpu": "0.0001"}, "reserved.cpu: must be a whole number of millicores"),
    ("cpu-bool", {"reserved.cpu": True}, "reserved.cpu: must be cores (e.g. 2, 0.5)"),
    ("cpu-too-many", {"reserved.cpu": 2000}, "reserved.cpu: must be 0-1000 cores, got 2000"),
    ("memory-unit", {"reserved.memory": "12XB"}, "reserved.memory: must be a number with an optional unit"),
    ("memory-lowercase-mi", {"reserved.memory": "256mi"}, "reserved.memory: must be a number with an optional unit"),
    ("memory-negative", {"reserved.memory": -5}, "reserved.memory: must be 0-"),
    ("memory-float", {"reserved.memory": 1.5}, "reserved.memory: must be a byte count or a string"),
    ("memory-fraction", {"reserved.memory": "1.5"}, "reserved.memory: must be a whole number of bytes"),
    ("memory-missing", {"reserved.memory": DELETE}, "reserved.memory: missing required key"),
    ("reserved-unknown", {"reserved.disk": "1Gi"}, "reserved.disk: unknown key (expected one of: cpu, memory)"),
    ("arch-string", {"detect.arch": "aarch64"}, "detect.arch: must be an array of strings, got string 'aarch64'"),
    ("arch-empty", {"detect.arch": []}, "detect.arch: must not be empty"),
    ("arch-unknown", {"detect.arch": ["x86_64", "sparc"]}, "detect.arch[1]: unknown architecture 'sparc'"),
    ("arch-item-type", {"detect.arch": [1]}, "detect.arch[0]: must be a string of 1-128 characters, got integer 1"),
    ("model-empty-item", {"detect.device_tree_model": [""]}, "detect.device_tree_model[0]: must be a string"),
    ("priority-range", {"detect.priority": 5000}, "detect.priority: must be -1000-1000, got 5000"),
    ("priority-type", {"detect.priority": "high"}, "detect.priority: must be an integer, got string 'high'"),
    ("termux-type", {"detect.termux": "yes"}, "detect.termux: must be true or false"),
    ("os-case", {"detect.os": ["Linux"]}, "detect.os[0]: invalid value 'Linux'"),
    ("min-memory-unit", {"detect.min_memory": "1 GB"}, "detect.min_memory: must be a number with an optional unit"),
    (
        "memory-bounds-inverted",
        {"detect.min_memory": "2Gi", "detect.max_memory": "1Gi"},
        "detect.max_memory: must be >= min_memory (2147483648 bytes), got 1073741824 bytes",
    ),
    ("detect-unknown", {"detect.model": "Pi"}, "detect.model: unknown key (expected one of: arch, battery,"),
    ("label-key", {"labels": {"bad key": "x"}}, 'labels."bad key": invalid label key'),
    ("label-value-type", {"labels": {"tier": 3}}, "labels.tier: must be a string, got integer 3"),
    ("label-value", {"labels": {"tier": "a b"}}, "labels.tier: invalid label value 'a b'"),
    ("labels-too-many", {"labels": {f"k{i}": "v" for i in range(65)}}, "labels: at most 64 labels, got 65"),
    ("sensor-limit", {"sensor_thermal_limits_c": {"battery": 5}}, "sensor_thermal_limits_c.battery: must be 20-150"),
    ("sensor-name", {"sensor_thermal_limits_c": {"a/b": 50}}, 'sensor_thermal_limits_c."a/b": invalid sensor name'),
]


@pytest.mark.parametrize(("changes", "expected"), [(c, e) for _, c, e in ERRORS], ids=[i for i, _, _ in ERRORS])
def test_invalid_documents_are_rejected_naming_file_and_field(changes: dict[str, Any], expected: str) -> None:
    text = to_toml(profile_data(changes))
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, name="raspberry-pi-4")
    message = str(caught.value)
    assert message.startswith(f"raspberry-pi-4.toml: {expected}"), message
    assert caught.value.file == "raspberry-pi-4.toml"
    assert caught.value.path and message.startswith(f"{caught.value.file}: {caught.value.path}: ")


def test_the_brief_example_message_verbatim() -> None:
    with pytest.raises(ProfileError, match=r"^raspberry-pi-4\.toml: battery\.min_percent: must be 0-100, got 150$"):
        parse_profile(to_toml(profile_data({"battery.min_percent": 150})), name="raspberry-pi-4")


def test_the_minimal_document_is_valid() -> None:
    profile = profile_from_mapping("test", base_data())
    assert profile.reserved.cpu_millicores == 250 and profile.reserved.memory_bytes == 256 * 2**20


def test_optional_tables_may_be_left_out() -> None:
    data = profile_data({"battery": DELETE, "labels": DELETE, "detect": DELETE})
    profile = profile_from_mapping("test", data)
    assert profile.battery is None and dict(profile.labels) == {} and not profile.detection.has_rules


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ProfileError, match=r"^vps\.toml: invalid TOML: "):
        parse_profile("description = \n", name="vps")


def test_invalid_profile_name_is_rejected() -> None:
    with pytest.raises(ProfileError, match="invalid profile name 'Bad_Name'"):
        profile_from_mapping("Bad_Name", base_data())


# ---- files and the override directory -----------------------------------------------------------------


def write(directory: Path, name: str, data: dict[str, Any]) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(to_toml(data))
    return path


def test_load_file_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "my-box", profile_data({"max_workloads": -1}))
    with pytest.raises(ProfileError) as caught:
        load_file(path)
    assert str(caught.value) == f"{path}: max_workloads: must be 0-1000, got -1"


def test_load_file_takes_the_name_from_the_file(tmp_path: Path) -> None:
    assert load_file(write(tmp_path, "my-box", base_data())).name == "my-box"


@pytest.mark.parametrize("file_name", ["My Box.toml", "box.yaml", "UPPER.toml", "-x.toml"])
def test_load_file_rejects_bad_file_names(tmp_path: Path, file_name: str) -> None:
    path = tmp_path / file_name
    path.write_text(to_toml(base_data()))
    with pytest.raises(ProfileError, match=re.escape(f"{path}: file name must be <name>.toml")):
        load_file(path)


def test_load_file_reports_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=re.escape("missing.toml: cannot read: ")):
        load_file(tmp_path / "missing.toml")
    bad = tmp_path / "latin.toml"
    bad.write_bytes(b'description = "caf\xe9"\n')
    with pytest.raises(ProfileError, match=re.escape("latin.toml: not UTF-8")):
        load_file(bad)
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 70_000)
    with pytest.raises(ProfileError, match=re.escape("big.toml: file too large")):
        load_file(big)


def test_override_directory_adds_and_replaces(tmp_path: Path) -> None:
    write(tmp_path, "vps", profile_data({"max_workloads": 99}))
    write(tmp_path, "my-box", base_data())
    (tmp_path / "README.md").write_text("not a profile")
    (tmp_path / ".vps.toml.swp").write_text("editor junk")
    assert available(extra_dir=tmp_path) == sorted({*builtin_names(), "my-box"})
    assert load_profile("vps", extra_dir=tmp_path).max_workloads == 99
    assert load_profile("vps", extra_dir=tmp_path).source == str(tmp_path / "vps.toml")
    assert load_profile("vps").max_workloads != 99  # the cached built-in is untouched
    assert {p.name for p in load_all(extra_dir=tmp_path)} == {*builtin_names(), "my-box"}


def test_override_edits_take_effect_without_restart(tmp_path: Path) -> None:
    write(tmp_path, "my-box", profile_data({"max_workloads": 1}))
    assert load_profile("my-box", extra_dir=tmp_path).max_workloads == 1
    write(tmp_path, "my-box", profile_data({"max_workloads": 2}))
    assert load_profile("my-box", extra_dir=tmp_path).max_workloads == 2


def test_a_missing_override_directory_is_empty(tmp_path: Path) -> None:
    assert available(extra_dir=tmp_path / "absent") == sorted(builtin_names())
    assert load_profile("laptop", extra_dir=tmp_path / "absent") is load_profile("laptop")


def test_a_badly_named_override_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "My Box", base_data())
    with pytest.raises(ProfileError, match=re.escape("My Box.toml: file name must be")):
        available(extra_dir=tmp_path)


def test_an_invalid_override_fails_loudly(tmp_path: Path) -> None:
    write(tmp_path, "vps", profile_data({"runtime": "docker"}))
    with pytest.raises(ProfileError, match=re.escape(f"{tmp_path / 'vps.toml'}: runtime: must be one of")):
        load_profile("vps", extra_dir=tmp_path)


@pytest.mark.parametrize("name", ["nope", "../vps", "vps/../vps", "VPS", "", "vps.toml"])
def test_unknown_names_raise_unknown_profile(name: str) -> None:
    with pytest.raises(UnknownProfile) as caught:
        load_profile(name)
    assert isinstance(caught.value, ProfileError) and isinstance(caught.value, LookupError)
    assert caught.value.name == name
    assert "vps" in caught.value.available
    assert str(caught.value).startswith(f"no profile named {name!r} (available: ")


def test_missing_package_data_is_a_profile_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_builtin_dir", lambda: tmp_path / "not-installed")
    loader.builtin_names.cache_clear()
    try:
        with pytest.raises(ProfileError, match=re.escape("firmware_profiles/profiles: cannot list built-in profiles")):
            available()
    finally:
        monkeypatch.undo()
        loader.builtin_names.cache_clear()
    assert "vps" in available()
