"""bench/services.py runs end to end (quick mode): all six cases measured with positive numbers, every service
connection checked against the proxies' counters (the script fails otherwise), and its section written into a
temporary document, never docs/benchmarks.md. No timing assertions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ["local TCP", "overlay stream (direct)", "service, cross node", "service, same node", "overlay stream (relay)",
         "service, cross node (relay)"]


def test_quick_run_measures_every_case_and_writes_its_section(tmp_path: Path) -> None:
    doc, out = tmp_path / "benchmarks.md", tmp_path / "services.json"
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.run([sys.executable, "bench/services.py", "--quick", "--doc", str(doc), "--json", str(out)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    results = json.loads(out.read_text())
    assert [r["case"] for r in results] == CASES
    for r in results:
        assert r["connections"] == 50 and len(r["mib_s_runs"]) == 1, r
        assert 0 < r["setup_p50_ms"] <= r["setup_p95_ms"] <= r["setup_p99_ms"], r
        assert r["mib_s"] > 0, r
    text = doc.read_text()
    assert "prose kept" in text
    found = re.search(r"<!-- bench:services -->(.*?)<!-- /bench:services -->", text, re.S)
    assert found, "no services section"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in found.group(1).splitlines()
            if line.startswith("| ") and not line.startswith("| case")]
    assert [r[0] for r in rows] == CASES
    assert all(float(r[1]) > 0 and float(r[6]) > 0 for r in rows), rows  # setup p50 ms, MiB/s
    assert "python bench/services.py --quick" in found.group(1)
