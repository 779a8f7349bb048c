"""Smoke test for bench/control_link.py: a --quick run of a real agent in its own network namespace (Mosquitto with
mutual TLS, a real coordinator) moves the veth's counters, and the per-day and per-month figures follow from the
measured per-event bytes and the profiles' configured timers, within issue 17's budgets. It writes to a temporary
document, never to docs/benchmarks.md. No timing assertion: only bytes counted and arithmetic on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_profiles import load_profile
from tests.integration.conftest import require_binary
from tests.need import require_root

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


@pytest.mark.timeout(400)  # two profiles, two agent runs each (~100 s here)
def test_quick_run_measures_and_computes_consistently(tmp_path: Path) -> None:
    require_root("the control link bench puts the agent in a network namespace")
    require_binary("mosquitto")
    require_binary("ip")
    doc, out = tmp_path / "benchmarks.md", tmp_path / "rows.json"
    doc.write_text("# Benchmarks\n\nprose kept\n")
    proc = subprocess.run([sys.executable, "bench/control_link.py", "--quick", "--doc", str(doc), "--json", str(out)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.exists(), proc.stdout + proc.stderr
    rows = {r["label"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"default", "metered"}
    for r in rows.values():
        ka, hb = r["windows"]["keepalive"], r["windows"]["heartbeat"]
        # the counters moved, in both directions, and what moved is what the run says it counted
        for w in (ka, hb):
            assert w["out_bytes"] > 0 and w["in_bytes"] > 0 and w["out_packets"] > 0 and w["in_packets"] > 0, w
            assert w["ip_bytes"] == w["link_bytes"] - 14 * (w["out_packets"] + w["in_packets"])
        assert hb["heartbeats"] >= 2 and hb["heartbeat_payload"] > 0
        assert r["exchanges"] == ka["bursts"] - ka["heartbeats"] >= 1
        assert r["per_heartbeat"] == pytest.approx(hb["ip_bytes"] / hb["heartbeats"])
        assert r["per_exchange"] == pytest.approx((ka["ip_bytes"] - ka["heartbeats"] * r["per_heartbeat"])
                                                  / r["exchanges"])
        # an exchange is PINGREQ + PINGRESP in TLS records and a TCP ACK: more than three bare headers
        assert r["per_exchange"] > 3 * 40 and r["per_heartbeat"] > hb["heartbeat_payload"] / hb["heartbeats"]
        # per day from the profile's own configured timers, not the shortened ones of the run
        link = load_profile(r["profile"]).link
        assert (r["keepalive_s"], r["heartbeat_max_s"]) == (link.keepalive_s, link.heartbeat_max_interval_s)
        day = 86400 / link.keepalive_s * r["per_exchange"] + 86400 / link.heartbeat_max_interval_s * r["per_heartbeat"]
        assert r["per_day"] == pytest.approx(day) and r["per_month"] == pytest.approx(30 * day)
        assert r["detection_s"] == 1.5 * link.keepalive_s
    # issue 17's budgets, from the measured per-event bytes and the configured timers
    assert rows["default"]["per_day"] <= MIB, rows["default"]
    assert rows["metered"]["per_month"] <= MIB, rows["metered"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = doc.read_text()
    assert "prose kept" in text and "<!-- bench:control-link -->" in text and "metered (`termux-android`)" in text
