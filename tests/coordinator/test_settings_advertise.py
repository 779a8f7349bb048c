"""`cloudless coordinator --advertise URL[,URL...]`: every URL goes into tokens; the first names this coordinator."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from coordinator.cli import add_parser
from coordinator.settings import CoordinatorConfigError, Settings


def _settings(tmp_path: Path, *extra: str) -> Settings:
    (tmp_path / "api-tokens.json").write_text(json.dumps({"tokens": [{"name": "admin", "sha256": "0" * 64}]}))
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["coordinator", "--broker", "mqtt://127.0.0.1:1883", "--data-dir", str(tmp_path), *extra])
    return Settings.parse(args, {})


def test_several_urls_are_kept_in_order_and_the_first_names_the_coordinator(tmp_path: Path) -> None:
    s = _settings(tmp_path, "--advertise", "https://192.0.2.2:8470, https://vm:8470")
    assert s.advertise == "https://192.0.2.2:8470,https://vm:8470"
    assert s.advertised_url == "https://192.0.2.2:8470"
    assert _settings(tmp_path).advertised_url is None


@pytest.mark.parametrize("value", ["192.0.2.2:8470", "ftp://x:1", "https://", ","])
def test_a_bad_advertised_url_names_the_flag(tmp_path: Path, value: str) -> None:
    with pytest.raises(CoordinatorConfigError, match="--advertise"):
        _settings(tmp_path, "--advertise", value)
