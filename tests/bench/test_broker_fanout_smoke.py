"""Smoke test for bench/broker_fanout.py: a --quick run (30 nodes, both delivery paths) writes its section with
every heartbeat delivered on both paths. It writes to a temporary document, never to docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_section_with_both_paths(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.run([sys.executable, "bench/broker_fanout.py", "--quick", "--doc", str(doc)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = doc.read_text()
    assert "prose kept" in text
    found = re.search(r"<!-- bench:broker_fanout -->(.*?)<!-- /bench:broker_fanout -->", text, re.S)
    assert found, "no broker_fanout section"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in found.group(1).splitlines()
            if line.startswith("| 30 ")]
    assert [r[1] for r in rows] == ["scan (amqtt)", "trie"]
    for r in rows:
        delivered, sent = (int(x.replace(",", "")) for x in r[3].split("/"))
        assert sent > 0 and delivered == sent, r
        assert float(r[7]) > 0, "latency measured"
