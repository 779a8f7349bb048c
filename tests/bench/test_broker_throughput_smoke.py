"""Smoke test for bench/broker_throughput.py: a --quick run against both brokers writes its section with real
numbers. It writes to a temporary document, never to docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NUMERIC_ROWS = ("QoS 0 msg/s received", "QoS 1 msg/s received", "QoS 1 latency P50 ms", "idle RSS MiB")


def require_mosquitto() -> None:
    require_binary("mosquitto")


def section(text: str) -> str:
    found = re.search(r"<!-- bench:broker_throughput -->(.*?)<!-- /bench:broker_throughput -->", text, re.S)
    assert found, "no broker_throughput section in the document"
    return found.group(1)


def row_values(text: str, label: str) -> list[float]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return [float(c.replace(",", "")) for c in cells[1:]]
    raise AssertionError(f"row {label!r} missing from the table")


def test_quick_run_writes_section_with_numbers(tmp_path: Path) -> None:
    require_mosquitto()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.run([sys.executable, "bench/broker_throughput.py", "--quick", "--doc", str(doc)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = doc.read_text()
    assert "prose kept" in text
    body = section(text)
    for label in NUMERIC_ROWS:
        values = row_values(body, label)
        assert len(values) == 2 and all(v > 0 for v in values), f"{label}: {values}"
    assert "embedded (amqtt" in body and "Mosquitto" in body
    assert "QoS 0 msg/s received" in proc.stdout  # the table is printed too
