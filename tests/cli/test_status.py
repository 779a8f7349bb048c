"""`cloudless status`: one screen of cluster health; exit 1 (with the reasons) when the coordinator is not ready."""

from __future__ import annotations

import json

from cloudless.status import summary
from tests.cli.fake_coordinator import FakeCoordinator


def test_a_ready_cluster_on_one_screen(fake: FakeCoordinator, cli) -> None:
    fake.add_node("pi")
    fake.add_node("phone", state="offline")
    fake.add_workload("web")
    r = cli("status")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith("coordinator  ready (leader, epoch 1")
    assert lines[1].startswith("nodes        ") and "1 offline" in lines[1]
    assert lines[2].startswith("workloads    1 (")


def test_a_coordinator_whose_rounds_fail_is_not_ready_and_says_why(fake: FakeCoordinator, cli) -> None:
    doc = {**fake.readiness, "ready": False, "roundsFailing": 4, "roundError": "WireError: payload too large",
           "problems": {"node/pi": "desired state refused: too large"}}
    fake.fail_once("GET", "/readyz", 503, body=doc)
    r = cli("status")
    assert r.code == 1
    assert "NOT READY: reconcile rounds failing (4 in a row: WireError: payload too large)" in r.out
    assert "problem      node/pi: desired state refused: too large" in r.out


def test_summary_names_every_reason() -> None:
    text = summary({"ready": False, "state": True, "broker": False, "store": False, "storeError": "no quorum",
                    "epochBehind": {"pi": 9}}, [], [])
    assert "no broker connection" in text and "store unavailable (no quorum)" in text and "epoch behind" in text
    assert "nodes        none" in text and "workloads    none" in text
    assert json.dumps(text)  # printable as is
