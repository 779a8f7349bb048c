"""`cloudless get` (tables, -o json/yaml, --watch) and `cloudless describe`."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import START, FakeClock
from tests.cli.fake_coordinator import FakeCoordinator


@pytest.fixture
def cluster(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1", replicas=2, labels={"disk": "ssd"})
    fake.add_node("laptop", arch="x86_64", online=False, cordoned=True, schedulable=False, gates=["battery"])
    fake.add_workload("web", replicas=3)
    fake.add_workload("db", namespace="prod", replicas=1, image="postgres:16")
    return fake


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_get_nodes_table(cluster: FakeCoordinator, cli) -> None:
    r = cli("get", "nodes")
    assert r.code == 0
    assert _rows(r.out) == [
        ["NODE", "STATUS", "ZONE", "ARCH", "PROFILE", "CPU", "MEM", "REPLICAS", "LAST-SEEN"],
        ["laptop", "NotReady,SchedulingDisabled", "home", "x86_64", "raspberry-pi-4", "500m/4", "256Mi/4Gi", "0",
         "5s"],
        ["pi-1", "Ready", "home", "aarch64", "raspberry-pi-4", "500m/4", "256Mi/4Gi", "2", "5s"],
    ]
    header, first = r.out.splitlines()[:2]
    assert header.index("STATUS") == first.index("NotReady")  # aligned columns


def test_get_nodes_wide_adds_columns(cluster: FakeCoordinator, cli) -> None:
    header, *_ = cli("get", "nodes", "-o", "wide").out.splitlines()
    assert header.split()[-8:] == ["OS", "RUNTIME", "CPU%", "MEM-USED", "BATTERY", "RELIABILITY", "GATES", "LABELS"]
    assert "disk=ssd" in cli("get", "nodes", "-o", "wide").out


def test_get_workloads_in_a_namespace_and_all(cluster: FakeCoordinator, cli) -> None:
    assert _rows(cli("get", "workloads").out) == [
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["web", "3/3", "3", "3", "0s"]]
    assert fake_query(cluster) == {"namespace": "default"}
    rows = _rows(cli("get", "workloads", "-A").out)
    assert rows[0][0] == "NAMESPACE" and [r[:2] for r in rows[1:]] == [["default", "web"], ["prod", "db"]]
    assert fake_query(cluster) == {}


def fake_query(fake: FakeCoordinator) -> dict[str, str]:
    return fake.requests[-1].query


def test_get_workloads_json_is_the_api_list(cluster: FakeCoordinator, cli) -> None:
    r = cli("get", "workloads", "-n", "prod", "-o", "json")
    data = json.loads(r.out)
    assert [w["metadata"]["name"] for w in data["items"]] == ["db"]


def test_get_one_workload_json_and_yaml(cluster: FakeCoordinator, cli) -> None:
    assert json.loads(cli("get", "workload", "web", "-o", "json").out)["spec"]["replicas"] == 3
    import yaml  # pyyaml: a coordinator dependency make test installs; missing, this must fail, not skip
    assert yaml.safe_load(cli("get", "wl", "web", "-o", "yaml").out)["metadata"]["name"] == "web"


def test_get_missing_workload(cluster: FakeCoordinator, cli) -> None:
    r = cli("get", "workload", "ghost")
    assert r.code == 1 and "workload default/ghost not found" in r.err and "hint" in r.err


def test_get_replicas_with_filters(cluster: FakeCoordinator, cli) -> None:
    r = cli("get", "replicas", "--workload", "web", "--node", "pi-1")
    assert _rows(r.out)[1][:4] == ["web-1", "web", "pi-1", "running"]
    assert fake_query(cluster) == {"namespace": "default", "workload": "web", "node": "pi-1"}
    assert json.loads(cli("get", "replica", "web-2", "-o", "json").out)["id"] == "web-2"
    missing = cli("get", "replica", "web-9")
    assert missing.code == 1 and "replica 'web-9' not found" in missing.err


def test_empty_list_says_so_on_stderr(fake: FakeCoordinator, cli) -> None:
    r = cli("get", "workloads", "-n", "empty")
    assert (r.code, r.out) == (0, "") and "No workloads found in namespace 'empty'." in r.err


def test_get_events_for_an_object(cluster: FakeCoordinator, cli) -> None:
    cluster.add_event("node/pi-1", "NodeSuspect", "silent for 40s", type_="Warning", time=START - 120)
    r = cli("get", "events", "node/pi-1")
    assert fake_query(cluster) == {"object": "node/pi-1", "tail": "100"}
    assert _rows(r.out)[1][:4] == ["2m", "Warning", "NodeSuspect", "node/pi-1"]
    cli("get", "events", "web", "-n", "prod")
    assert fake_query(cluster)["object"] == "workload/prod/web"


@pytest.mark.parametrize("name", ["pod/x", "a/b/c/d", "node/-x"], ids=["kind", "too-deep", "bad-id"])
def test_get_events_bad_object(fake: FakeCoordinator, cli, name: str) -> None:
    r = cli("get", "events", name)
    assert r.code == 2 and fake.requests == []


def test_watch_appends_when_data_changes_until_ctrl_c(cluster: FakeCoordinator, cli, clock: FakeClock) -> None:
    def change(n: int) -> None:
        if n == 2:
            cluster.nodes["laptop"]["online"] = True
    clock.on_sleep.append(change)
    clock.interrupt_after = 4
    r = cli("get", "nodes", "--watch", "--interval", "5s")
    assert r.code == 0
    assert r.out.count("NODE ") == 2  # the first table, then one more after the change, none for no change
    assert clock.sleeps == [5.0] * 4


def test_watch_rides_out_an_outage(cluster: FakeCoordinator, cli, clock: FakeClock) -> None:
    cluster.fail_once("GET", "/v1/workloads", 503)
    clock.interrupt_after = 2
    r = cli("get", "workloads", "-w")
    assert r.code == 0 and "injected 503; retrying every 2s" in r.err and "web" in r.out


def test_watch_events_streams_new_events_once(cluster: FakeCoordinator, cli, clock: FakeClock) -> None:
    def more(n: int) -> None:
        if n == 1:
            cluster.add_event("node/pi-1", "Cordoned", "node pi-1 cordoned")
    clock.on_sleep.append(more)
    clock.interrupt_after = 3
    r = cli("get", "events", "--watch", "--interval", "1s")
    lines = r.out.splitlines()
    assert lines[0].split() == ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [line.split()[2] for line in lines[1:]] == ["Created", "Created", "Cordoned"]
    sinces = [q.query.get("since") for q in cluster.requests if q.path == "/v1/events"]
    assert sinces == [None, str(START), str(START + 1)]


def test_watch_events_json_lines(cluster: FakeCoordinator, cli, clock: FakeClock) -> None:
    clock.interrupt_after = 1
    r = cli("get", "events", "-w", "-o", "json")
    assert [json.loads(line)["reason"] for line in r.out.splitlines()] == ["Created", "Created"]


def test_describe_workload(cluster: FakeCoordinator, cli) -> None:
    w = cluster.workloads[("default", "web")]
    w["status"]["replicas"].append({"id": "web-3", "node": None, "state": "pending", "ready": False,
                                    "restarts": 0, "specHash": "x", "revision": 1, "message": "no node fits"})
    w["status"]["unschedulable"] = [{"replica": "web-3", "summary": "0/2 nodes fit",
                                     "reasons": {"pi-1": "insufficient cpu", "laptop": "offline"}}]
    r = cli("describe", "workload", "web")
    assert r.code == 0
    for expected in ("Name:          web", "Image:         nginx:1.25", "Conditions:", "Available   true",
                     "web-3   <unscheduled>   pending", "Unschedulable:\n  web-3: 0/2 nodes fit\n"
                     "    laptop: offline\n    pi-1: insufficient cpu", "Events:", "Created"):
        assert expected in r.out
    assert cluster.requests[-1].query == {"object": "workload/default/web", "tail": "20"}


def test_describe_node(cluster: FakeCoordinator, cli) -> None:
    cluster.add_event("node/laptop", "NodeLost", "gone", type_="Warning")
    r = cli("describe", "node", "laptop")
    for expected in ("Status:        NotReady,SchedulingDisabled", "Gates:         battery",
                     "Platform:      linux/x86_64", "Allocated:     cpu 500m (12%), memory 256Mi (6%)",
                     "NodeLost", "web-0"):
        assert expected in r.out


def test_describe_survives_missing_events_endpoint(cluster: FakeCoordinator, cli) -> None:
    cluster.fail_once("GET", "/v1/events", 404, b"")
    r = cli("describe", "node", "pi-1")
    assert r.code == 0 and "Events: <none>" in r.out and "events unavailable" in r.err


def test_describe_missing_node(cluster: FakeCoordinator, cli) -> None:
    r = cli("describe", "node", "ghost")
    assert r.code == 1 and "node ghost not found" in r.err and "cloudless get nodes" in r.err
