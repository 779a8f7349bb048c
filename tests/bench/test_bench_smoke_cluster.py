"""Smoke tests for the benchmarks that run a real cluster: bench/reschedule.py and bench/agent_footprint.py in
--quick mode write their sections with real numbers. They write to a temporary document, never docs/benchmarks.md.

They need root and Podman with the local test image (scripts/build-test-image.sh), as the integration tests do."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.need import unavailable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/cloudless/busybox:latest"


def require_cluster_env() -> None:
    problem = None
    if os.geteuid() != 0:
        problem = "these benchmarks run agents on rootful Podman: run as root"
    elif shutil.which("podman") is None:
        problem = "podman is not installed: run scripts/install-system-deps.sh (make test does)"
    else:
        env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "scripts" / "containers.conf")}
        found = subprocess.run(["podman", "image", "exists", IMAGE], env=env, check=False, timeout=60)
        if found.returncode != 0:
            problem = f"{IMAGE} is missing: run scripts/build-test-image.sh (make test does)"
    if problem is not None:
        unavailable(problem)


def run_quick(script: str, doc: Path, timeout: float) -> str:
    """Run a benchmark with --quick; on timeout SIGTERM it first, so its cleanup (agents, containers) still runs."""
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.Popen([sys.executable, f"bench/{script}", "--quick", "--doc", str(doc)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"bench/{script} --quick took over {timeout:.0f}s\n{out[-2000:]}{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "prose kept" in doc.read_text()
    return out


def section(text: str, name: str) -> str:
    found = re.search(rf"<!-- bench:{name} -->(.*?)<!-- /bench:{name} -->", text, re.S)
    assert found, f"no {name} section in the document"
    return found.group(1)


def rows_starting(body: str, label: str, *, exact: bool = False) -> list[list[str]]:
    """Cells after the first of every table row whose first cell starts with (or is) `label`."""
    out = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first = cells[0]
        if line.lstrip().startswith("|") and (first == label if exact else first.startswith(label)):
            out.append(cells[1:])
    assert out, f"no row {label!r} in:\n{body}"
    return out


@pytest.mark.timeout(330)  # past run_quick's own timeout + cleanup, so the benchmark is never killed mid-run
def test_reschedule_quick_writes_latencies(tmp_path: Path) -> None:
    require_cluster_env()
    doc = tmp_path / "benchmarks.md"
    stdout = run_quick("reschedule.py", doc, timeout=240)
    body = section(doc.read_text(), "reschedule")
    ready = rows_starting(body, "**all replicas ready again")
    assert len(ready) == 2, "one table per workload variant"
    for p50, p95, mx, mean, trials in ready:
        assert 0 < float(p50) <= float(p95) <= float(mx) < 60 and float(mean) > 0, ready
        assert int(trials) >= 1
    for label in ("node declared lost", "replacement placed (`Placed`"):
        assert all(float(cells[0]) >= 0 for cells in rows_starting(body, label))
    assert re.search(r"\*\*Goal (met|not met)\*\*", body)
    assert "trial 3/3" in stdout


@pytest.mark.timeout(330)
def test_agent_footprint_quick_writes_memory_and_cpu(tmp_path: Path) -> None:
    require_cluster_env()
    doc = tmp_path / "benchmarks.md"
    run_quick("agent_footprint.py", doc, timeout=240)
    body = section(doc.read_text(), "agent_footprint")
    for runtime in ("podman", "process"):
        rows = rows_starting(body, runtime, exact=True)
        assert [r[0] for r in rows] == ["0", "5"], rows
        for _replicas, rss, rss_max, uss, cpu, cpu_max, threads, service in rows:
            assert 10 < float(rss) <= float(rss_max) < 500 and 0 < float(uss) <= float(rss)
            assert float(cpu) >= 0 and float(cpu_max) >= 0 and int(threads) >= 1
            assert (float(service) > 0) if runtime == "podman" else service == "n/a"
    bare = rows_starting(body, "bare interpreter")[0]
    idle = rows_starting(body, "edge_agent.runtime.podman")[0]  # the last import of an idle agent
    crypto = rows_starting(body, "cryptography")[0]  # only with sealed secrets, measured after it
    assert 0 < float(bare[0]) < float(idle[0]) < float(crypto[0])
    assert re.search(r"\*\*Aim (met|not met)\*\*", body)
