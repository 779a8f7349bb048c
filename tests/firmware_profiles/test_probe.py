"""probe_device(): reads what it can, never raises; a fake /proc + /sys tree stands in for other devices."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from firmware_profiles import DeviceProbe, detect, load_all, probe_device
from firmware_profiles import probe as probe_module


def make_root(
    tmp_path: Path,
    *,
    model: bytes | None = None,
    supplies: dict[str, dict[str, str]] | None = None,
    meminfo: str | None = None,
) -> Path:
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model)
    if supplies is not None:
        base = tmp_path / "sys/class/power_supply"
        base.mkdir(parents=True)
        for name, files in supplies.items():
            (base / name).mkdir()
            for file, text in files.items():
                (base / name / file).write_text(text + "\n")
    if meminfo is not None:
        (tmp_path / "proc").mkdir(exist_ok=True)
        (tmp_path / "proc/meminfo").write_text(meminfo)
    return tmp_path


def test_probe_on_this_machine_does_not_raise() -> None:
    probe = probe_device()
    assert isinstance(probe, DeviceProbe)
    assert isinstance(probe.arch, str) and isinstance(probe.os, str)
    assert probe.memory_bytes is None or probe.memory_bytes > 0
    detect(probe, load_all())  # and whatever it found, detection copes


def test_reads_a_raspberry_pi(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        model=b"Raspberry Pi 4 Model B Rev 1.4\x00",
        supplies={"AC": {"type": "Mains"}},
        meminfo="MemTotal:        3884448 kB\nMemFree:  1000 kB\n",
    )
    probe = probe_device(root=root, environ={}, use_psutil=False)
    assert probe.device_tree_model == "Raspberry Pi 4 Model B Rev 1.4"
    assert probe.has_battery is False
    assert probe.memory_bytes == 3884448 * 1024
    assert probe.termux is False


def test_falls_back_to_the_sysfs_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "sys/firmware/devicetree/base/model"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert (
        probe_device(root=tmp_path, environ={}, use_psutil=False).device_tree_model == "Raspberry Pi 5 Model B Rev 1.0"
    )


@pytest.mark.parametrize(
    ("supplies", "expected"),
    [
        ({"BAT0": {"type": "Battery", "scope": "System"}}, True),
        ({"BAT1": {"type": "Battery"}}, True),
        ({"hidpp_battery_0": {"type": "Battery", "scope": "Device"}}, False),  # a wireless mouse
        ({"AC": {"type": "Mains"}, "ucsi-source-psy-USBC000:001": {"type": "USB"}}, False),
        ({}, False),
    ],
    ids=["system-battery", "battery-without-scope", "mouse-battery", "mains-and-usb", "empty"],
)
def test_battery_presence(tmp_path: Path, supplies: dict[str, dict[str, str]], expected: bool) -> None:
    root = make_root(tmp_path, supplies=supplies)
    assert probe_device(root=root, environ={}, use_psutil=False).has_battery is expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TERMUX_VERSION": "0.118.0"}, True),
        ({"PREFIX": "/data/data/com.termux/files/usr"}, True),
        ({"PREFIX": "/usr/local"}, False),
        ({}, False),
    ],
    ids=["termux-version", "termux-prefix", "other-prefix", "empty"],
)
def test_termux_from_the_environment(tmp_path: Path, environ: dict[str, str], expected: bool) -> None:
    assert probe_device(root=tmp_path, environ=environ, use_psutil=False).termux is expected


def test_an_empty_root_leaves_facts_unknown(tmp_path: Path) -> None:
    probe = probe_device(root=tmp_path / "nothing", environ={}, use_psutil=False)
    assert (probe.device_tree_model, probe.has_battery, probe.memory_bytes) == (None, None, None)


def test_garbage_files_do_not_raise(tmp_path: Path) -> None:
    root = make_root(tmp_path, model=b"\xff\xfe\x00", meminfo="MemTotal: lots kB\n")
    (root / "sys/class").mkdir(parents=True)
    (root / "sys/class/power_supply").write_text("not a directory")
    probe = probe_device(root=root, environ={}, use_psutil=False)
    assert probe.memory_bytes is None and probe.has_battery is None
    assert probe.device_tree_model == "\ufffd\ufffd"


class BrokenPsutil:
    def virtual_memory(self) -> None:
        raise OSError("boom")

    def sensors_battery(self) -> None:
        raise RuntimeError("boom")


def test_faults_in_platform_and_psutil_are_contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode() -> str:
        raise OSError("uname failed")

    monkeypatch.setattr(platform, "machine", explode)
    monkeypatch.setattr(platform, "system", explode)
    monkeypatch.setattr(probe_module, "_psutil", BrokenPsutil)
    root = make_root(tmp_path, meminfo="MemTotal: 1024 kB\n")
    probe = probe_device(root=root, environ={})
    assert (probe.arch, probe.os) == ("", "")
    assert probe.memory_bytes == 1024 * 1024  # /proc/meminfo after psutil failed
    assert probe.has_battery is None  # no sysfs, psutil failed


def test_a_broken_environment_mapping_is_contained(tmp_path: Path) -> None:
    class Hostile(dict[str, str]):
        def __contains__(self, key: object) -> bool:
            raise RuntimeError("boom")

    assert probe_device(root=tmp_path, environ=Hostile(), use_psutil=False).termux is False
