"""`make up` installs only what `cloudless up` needs and touches no system service (issue 15 item 6): checked on the
Makefile's own plan (`make -n`, which runs nothing) and on the script it runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import require_binary

REPO = Path(__file__).resolve().parents[2]
UP_DEPS = REPO / "scripts" / "install-up-deps.sh"


def _plan(target: str) -> str:
    require_binary("make")  # skips on a developer machine without it, fails under CI
    return subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, check=True,
                          timeout=60).stdout


@pytest.mark.parametrize("target", ["up", "up-ha"])
def test_make_up_runs_the_up_deps_not_the_test_suites(target: str) -> None:
    plan = _plan(target)
    assert "install-up-deps.sh" in plan
    assert "install-system-deps.sh" not in plan, "make up would install brokers and etcd it does not need"
    assert "systemctl" not in plan


def test_the_up_deps_script_installs_no_broker_or_etcd_and_touches_no_service() -> None:
    text = UP_DEPS.read_text()
    packages = re.search(r"PACKAGES=\(([^)]*)\)", text)
    assert packages is not None
    names = packages.group(1).split()
    assert "podman" in names and "busybox-static" in names
    assert not {n for n in names if n.startswith(("mosquitto", "etcd", "qemu"))}, names
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(systemctl|service)\b", code), "it must never start, stop or disable a service"


def test_the_up_deps_script_parses() -> None:
    subprocess.run(["bash", "-n", str(UP_DEPS)], check=True, timeout=30)


def test_make_down_runs_cloudless_down() -> None:
    assert "cloudless down" in _plan("down")
