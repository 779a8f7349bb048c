"""Smoke test for bench/fleet.py: a --quick run (40 simulated devices, each over its own TLS connection with its own
certificate from the cluster CA, against a real `cloudless coordinator --pki`, on Mosquitto and on the embedded
broker) joins every device, delivers every replica's desired state, and replaces the replicas of the 10 % of devices
it cuts. It asserts that these work, not how fast. It writes to a temporary document, never docs/benchmarks.md.

It needs root (a network namespace and a veth pair) and Mosquitto; it starts brokers and network namespaces, so run
it under `flock /tmp/cloudless-integration.lock`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import require_binary
from tests.need import require_root

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def cells(body: str, label: str) -> list[str]:
    """The cells after the label of the table row whose first cell starts with `label`."""
    for line in body.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and parts[0].startswith(label):
            return parts[1:]
    raise AssertionError(f"no row {label!r} in:\n{body}")


def seconds(cell: str) -> float:
    """'740 ms' or '1.23 s' -> seconds; anything else (failed, —) fails the test."""
    m = re.fullmatch(r"([\d.]+) (ms|s)", cell.strip())
    assert m, f"not a duration: {cell!r}"
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


@pytest.mark.timeout(240)  # past the run's own timeouts + cleanup, so the benchmark is never killed mid-run
def test_fleet_quick_joins_delivers_and_replaces_on_both_brokers(tmp_path: Path) -> None:
    require_root("bench/fleet.py puts the simulated devices in their own network namespace")
    require_binary("mosquitto")
    require_binary("ip")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.Popen([sys.executable, "bench/fleet.py", "--quick", "--doc", str(doc)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM unwinds its cleanup: processes killed by group, the namespace deleted
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"bench/fleet.py --quick took over 180s\n{out[-3000:]}{err[-3000:]}")
    assert proc.returncode == 0, out[-4000:] + err[-4000:]
    text = doc.read_text()
    assert "prose kept" in text
    found = re.search(r"<!-- bench:fleet -->(.*?)<!-- /bench:fleet -->", text, re.S)
    assert found, "no fleet section in the document"
    body = found.group(1)
    assert cells(body, "measured") == ["mosquitto, 40", "embedded, 40"]
    for cell in cells(body, "all joined and online"):  # every device online at the coordinator
        assert seconds(cell) > 0
    for cell in cells(body, "apply N/2 replicas"):  # every replica in a device's desired state, then ready
        delivered, ready = cell.split(" / ")
        assert seconds(delivered) > 0 and seconds(ready) > 0
    for cell in cells(body, "10 % cut at once"):  # the cut devices gone, their replicas ready elsewhere
        gone, replaced, ready = cell.split(" / ")
        assert seconds(gone) >= 0 and 0 < seconds(replaced) <= seconds(ready)
    for cell in cells(body, "heartbeats received / sent"):
        received, sent = (int(x) for x in cell.split(" / "))
        assert sent > 0 and received > 0
    for cell in cells(body, "coordinator lost its broker connection"):
        assert cell == "no"
    assert "all 40 online at the coordinator" in out and "4 nodes cut" in out
