"""`cloudless top`: the node and workload tables, the redraw loop (FakeClock), errors and argument bounds."""

from __future__ import annotations

import pytest

from tests.cli.conftest import FakeClock
from tests.cli.fake_coordinator import FakeCoordinator


@pytest.fixture
def cluster(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1", state="online", replicas=2, temperatures={"cpu": 51.4, "gpu": 48.0},
                  usage={"cpuPercent": 12.5, "memoryBytes": 1024**3, "batteryPercent": None})
    fake.add_node("phone", state="suspect", replicas=0, temperatures={},
                  capacity={"cpu": 8000, "memory": 8 * 1024**3},
                  usage={"cpuPercent": 3.0, "memoryBytes": 6 * 1024**3, "batteryPercent": 81})
    fake.add_workload("web", replicas=3)
    fake.add_workload("db", namespace="prod", replicas=1)
    return fake


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_once_prints_both_tables(cluster: FakeCoordinator, cli) -> None:
    r = cli("top", "--once")
    assert r.code == 0 and r.err == ""
    assert _rows(r.out) == [
        ["NODE", "STATE", "CPU%", "MEM%", "BATTERY", "TEMP", "REPLICAS", "STORAGE"],
        ["phone", "suspect", "3%", "75%", "81%", "-", "0", "-"],
        ["pi-1", "online", "12%", "25%", "-", "51C", "2", "-"],
        [],
        ["NAMESPACE", "NAME", "READY/DESIRED", "PHASE"],
        ["default", "web", "3/3", "Running"],
        ["prod", "db", "1/1", "Running"],
    ]
    assert "\x1b[" not in r.out  # no screen control codes when stdout is not a terminal
    header, first = r.out.splitlines()[:2]
    assert header.index("REPLICAS") == first.index("0")  # aligned columns


def test_the_object_store_in_top(cluster: FakeCoordinator, cli) -> None:
    cluster.nodes["pi-1"]["storage"] = {"quotaBytes": 8 * 1024**3, "usedBytes": 3 * 1024**3 // 2, "chunks": 1536,
                                        "corrupt": 0}
    cluster.nodes["phone"]["storage"] = None  # offers none
    cluster.storage = {"nodes": [{"node": "pi-1", "online": True, "quotaBytes": 8 * 1024**3}], "chunks": 1536,
                       "underReplicated": 12, "unrecoverable": 0,
                       "repair": {"rateBytesPerS": 5 * 1024**2, "copiedBytes": 300 * 1024**2}}
    r = cli("top", "--once")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[2].split()[-1] == "1.5Gi/8Gi" and lines[1].split()[-1] == "-"
    assert lines[3] == ("Storage: 1 node(s) offering, 1536 chunks, 12 under-replicated, 0 unrecoverable; "
                        "repair 5MiB/s, 300MiB copied since start")
    cluster.nodes["pi-1"]["storage"]["corrupt"] = 2
    assert "1.5Gi/8Gi (2 corrupt)" in cli("top", "--once").out


def test_namespace_filters_workloads(cluster: FakeCoordinator, cli) -> None:
    r = cli("top", "--once", "-n", "prod")
    assert r.code == 0
    assert [r.query for r in cluster.requests if r.path == "/v1/workloads"][-1] == {"namespace": "prod"}
    assert [row[:2] for row in _rows(r.out)[5:]] == [["prod", "db"]]


def test_empty_cluster(fake: FakeCoordinator, cli) -> None:
    r = cli("top", "--once")
    assert r.code == 0 and r.out.split("\n\n") == ["No nodes.", "No workloads.\n"]


def test_loop_redraws_until_ctrl_c(cluster: FakeCoordinator, cli, clock: FakeClock) -> None:
    clock.interrupt_after = 3
    clock.on_sleep.append(lambda n: cluster.nodes["pi-1"].update(replicas=5) if n == 1 else None)
    r = cli("top", "--interval", "5s")
    assert r.code == 0
    assert clock.sleeps == [5.0, 5.0, 5.0]
    # not a terminal: a frame only when it changed (first frame, then the replica count change)
    assert r.out.count("NODE") == 2
    assert [row for row in _rows(r.out) if row[:1] == ["pi-1"]][-1][-2] == "5"  # REPLICAS


def test_wrong_token_exits_non_zero(cluster: FakeCoordinator, cli) -> None:
    r = cli("top", "--once", "--token", "wrong")
    assert r.code != 0
    assert "token" in r.err.lower() and r.out == ""


def test_wrong_token_ends_the_loop(cluster: FakeCoordinator, cli, clock: FakeClock) -> None:
    clock.interrupt_after = 5
    r = cli("top", "--token", "wrong")
    assert r.code != 0 and clock.sleeps == []


@pytest.mark.parametrize("value", ["0", "0.5s", "2h", "soon"], ids=["zero", "sub-second", "too-long", "garbage"])
def test_interval_bounds(fake: FakeCoordinator, cli, value: str) -> None:
    r = cli("top", "--interval", value)
    assert r.code == 2 and "--interval" in r.err
