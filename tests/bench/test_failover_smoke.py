"""Smoke test for bench/failover.py: a --quick run (3 leader kills on a real 3-member etcd, the embedded broker, three
coordinators and a process-runtime agent) writes its section with real numbers. It writes to a temporary document,
never docs/benchmarks.md. It needs root (the workload runs as uid 65534) and etcd, as the HA integration tests do."""

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


def rows_starting(body: str, label: str) -> list[list[str]]:
    """Cells after the first of every table row whose first cell starts with `label`."""
    out = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0].startswith(label):
            out.append(cells[1:])
    assert out, f"no row {label!r} in:\n{body}"
    return out


@pytest.mark.timeout(330)  # past the run's own timeout + cleanup, so the benchmark is never killed mid-run
def test_failover_quick_writes_takeover_and_write_latencies(tmp_path: Path) -> None:
    require_binary("etcd")
    require_root("bench/failover.py runs the workload as uid 65534 on the process runtime")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.Popen([sys.executable, "bench/failover.py", "--quick", "--doc", str(doc)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM unwinds its cleanup: no coordinator, etcd member or agent outlives it
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"bench/failover.py --quick took over 240s\n{out[-2000:]}{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    text = doc.read_text()
    assert "prose kept" in text
    found = re.search(r"<!-- bench:failover -->(.*?)<!-- /bench:failover -->", text, re.S)
    assert found, "no failover section in the document"
    body = found.group(1)
    for label in ("**another leader reconciling**", "**write acted on**"):
        [(p50, p95, mx, mean, trials)] = rows_starting(body, label)
        assert 0 < float(p50) <= float(p95) <= float(mx) < 30 and float(mean) > 0, (label, p50, p95, mx)
        assert int(trials) == 3
    assert re.search(r"\*\*Goal (met|not met)\*\*", body)
    assert "restarted across all 3 trials (pid or start time changed, or gone outside a scale down): **0**" in body
    assert "trial 3/3" in out
