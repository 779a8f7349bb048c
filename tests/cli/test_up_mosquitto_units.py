"""The pieces of `cloudless up --mosquitto` (cloudless/up_mosquitto.py) that need no Mosquitto: the version check,
the refusals, the URL this machine dials, the CRL watch that triggers a reload. The real run is
tests/integration/test_up_mosquitto.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudless.up_mosquitto import CrlWatch, dial_url, parse_version, problem


@pytest.mark.parametrize(("text", "expected"), [
    ("mosquitto version 2.0.11\n\nmosquitto is an MQTT v5.0/v3.1.1/v3.1 broker.", (2, 0, 11)),
    ("mosquitto version 1.6.9", (1, 6, 9)),
    ("mosquitto version 2.1", (2, 1)),
    ("something else", None),
], ids=["debian-12", "old", "two-parts", "not-mosquitto"])
def test_parse_version(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_version(text) == expected


def test_not_installed_says_what_to_install() -> None:
    why = problem(None, 1883)
    assert why is not None and "not installed" in why and "apt install mosquitto" in why
    assert "leave out --mosquitto" in why


def _fake(tmp_path: Path, version: str) -> str:
    path = tmp_path / "mosquitto"
    path.write_text(f"#!/bin/sh\necho 'mosquitto version {version}'\nexit 3\n")  # `mosquitto -h` exits non-zero
    path.chmod(0o755)
    return str(path)


def test_an_old_mosquitto_is_refused_and_a_2x_accepted(tmp_path: Path) -> None:
    old = problem(_fake(tmp_path, "1.6.9"), 1883)
    assert old is not None and "version 1.6.9" in old and "2.0 or later" in old
    assert problem(_fake(tmp_path, "2.0.18"), 1883) is None


def test_port_zero_is_only_for_the_embedded_broker(tmp_path: Path) -> None:
    why = problem(_fake(tmp_path, "2.0.11"), 0)
    assert why is not None and "--mqtt-port 0" in why


@pytest.mark.parametrize(("host", "url"), [("0.0.0.0", "mqtts://127.0.0.1:8883"), ("10.1.2.3", "mqtts://10.1.2.3:8883"),
                                           ("::", "mqtts://127.0.0.1:8883"), ("fd00::1", "mqtts://[fd00::1]:8883")])
def test_dial_url(host: str, url: str) -> None:
    assert dial_url(host, 8883) == url


def test_crl_watch_sees_each_rewrite_once(tmp_path: Path) -> None:
    crl = tmp_path / "crl.pem"
    watch = CrlWatch(crl)
    assert not watch.changed()  # missing, still missing
    crl.write_text("one")
    assert watch.changed() and not watch.changed()
    tmp = tmp_path / "crl.tmp"
    tmp.write_text("two")
    os.replace(tmp, crl)  # the coordinator's atomic rewrite: a new inode
    assert watch.changed() and not watch.changed()


def test_mosquitto_and_broker_together_are_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cloudless", "up", "--mosquitto", "--broker", "mqtts://h:8883",
                           "--local-only", "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "give one of them" in done.stderr
    assert not (tmp_path / "d").exists()
