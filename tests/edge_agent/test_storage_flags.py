"""`cloudless agent --storage-quota/--storage-dir` and the profile's `[storage] quota` (issue 20): sizes as people
write them, refusals naming the flag or the profile field, and the built-in profiles' defaults (no storage on
phones and battery devices)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_agent.cli import add_parser, build_config
from edge_agent.config import AgentConfig
from edge_agent.errors import ConfigError
from firmware_profiles import ProfileError, load_profile, parse_profile
from firmware_profiles.units import parse_size
from tests.firmware_profiles.builders import profile_data, to_toml

GIB, MIB = 2**30, 2**20


def config(tmp_path: Path, *extra: str) -> AgentConfig:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    (tmp_path / "pw").write_text("secret")
    args = parser.parse_args(["agent", "--data-dir", str(tmp_path / "data"), "--node-id", "n1", "--broker",
                              "mqtt://127.0.0.1:1883", "--password-file", str(tmp_path / "pw"), *extra])
    cfg: AgentConfig = build_config(args)
    return cfg


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("1024", 1024), ("512B", 512), ("20G", 20 * 10**9), ("20GB", 20 * 10**9), ("500MiB", 500 * MIB),
    ("1.5GiB", 3 * GIB // 2), ("64Mi", 64 * MIB), ("10kB", 10_000), ("1KB", 1000), ("2Ti", 2 * 2**40),
], ids=str)
def test_sizes_as_people_write_them(text: str, size: int, tmp_path: Path) -> None:
    assert parse_size(text) == size
    assert config(tmp_path, "--storage-quota", text).storage_quota_bytes == size


@pytest.mark.parametrize("text", ["lots", "-1", "1.5", "1.5B", "20Q", "20 G", "GiB", "", "1e9"])
def test_a_bad_quota_is_refused_naming_the_flag(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, "--storage-quota", text)
    assert str(caught.value).startswith("--storage-quota: "), str(caught.value)


def test_without_flags_the_profile_decides_and_chunks_live_in_the_data_dir(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.storage_quota_bytes is None
    assert cfg.chunks_dir == (tmp_path / "data").resolve() / "chunks"


def test_storage_dir_flag(tmp_path: Path) -> None:
    cfg = config(tmp_path, "--storage-dir", str(tmp_path / "big-disk" / "chunks"), "--storage-quota", "1G")
    assert cfg.chunks_dir == (tmp_path / "big-disk" / "chunks").resolve()


@pytest.mark.parametrize(("quota", "size"), [("20Gi", 20 * GIB), ("500MiB", 500 * MIB), (0, 0), (4096, 4096),
                                             ("1.5GiB", 3 * GIB // 2)], ids=str)
def test_profile_storage_quota(quota: object, size: int) -> None:
    profile = parse_profile(to_toml(profile_data({"storage": {"quota": quota}})), name="vps")
    assert profile.storage.quota_bytes == size


@pytest.mark.parametrize(("changes", "expected"), [
    ({"storage": {"quota": "lots"}}, "storage.quota: must be a number with an optional unit"),
    ({"storage": {"quota": -5}}, "storage.quota: must be 0-"),
    ({"storage": {"quota": True}}, "storage.quota: must be a byte count"),
    ({"storage": {"qouta": "1Gi"}}, "storage.qouta: unknown key (expected one of: quota)"),
    ({"storage": 5}, "storage: must be a table"),
], ids=["not-a-size", "negative", "boolean", "typo", "not-a-table"])
def test_a_bad_storage_table_is_refused_naming_the_field(changes: dict[str, object], expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(to_toml(profile_data(changes)), name="vps")
    assert str(caught.value).startswith(f"vps.toml: {expected}"), str(caught.value)


def test_a_profile_without_storage_offers_none() -> None:
    assert parse_profile(to_toml(profile_data()), name="vps").storage.quota_bytes == 0


@pytest.mark.parametrize("name", ["termux-android", "laptop", "raspberry-pi-zero-2w", "iot-gateway-armv7"])
def test_phones_and_battery_devices_offer_no_storage_by_default(name: str) -> None:
    assert load_profile(name).storage.quota_bytes == 0


@pytest.mark.parametrize("name", ["vps", "raspberry-pi-4", "raspberry-pi-5"])
def test_mains_powered_devices_offer_some(name: str) -> None:
    assert load_profile(name).storage.quota_bytes >= GIB
