"""The dashboard mirror kept incrementally (coordinator.dashboard.Mirror): what it publishes, applied to a retained
store, always equals the mirror recomputed from scratch (`documents`), while each call encodes only what changed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import Heartbeat, NodeFacts, NodeStatus, Presence, topics
from coordinator import dashboard
from coordinator.cluster import Cluster
from coordinator.dashboard import Mirror, documents
from coordinator.membership import NodeInfo, NodeState
from tests.coordinator.test_cluster import make_replica, make_workload

NOW = 1000.0


def member(node_id: str, *, cpu: float = 5.0, version: str = "0.1.0", state: NodeState = NodeState.ONLINE) -> NodeInfo:
    facts = NodeFacts(arch="x86_64", cpu_count=4, memory_bytes=8 << 30, profile="vps", agent_version=version)
    return NodeInfo(node_id=node_id, state=state, status=NodeStatus(node_id=node_id, presence=Presence.ONLINE,
                                                                    ts=NOW, facts=facts),
                    heartbeat=Heartbeat(node_id=node_id, seq=1, ts=NOW, cpu_percent=cpu), state_since=NOW)


def drain(mirror: Mirror, retained: dict[str, str]) -> list[dict[str, str]]:
    """Call until nothing is left over; apply each call's topics to `retained` (an empty payload clears one)."""
    calls = []
    while True:
        out = mirror.changes()
        calls.append(out)
        for topic, payload in out.items():
            if payload:
                retained[topic] = payload
            else:
                retained.pop(topic, None)
        if not mirror.backlog:
            return calls


def fleet(n: int) -> Cluster:
    c = Cluster()
    for i in range(n):
        c.members[f"n{i}"] = member(f"n{i}")
        c.touch_node(f"n{i}")
    return c


def test_the_first_calls_publish_everything_in_slices_then_nothing() -> None:
    c = fleet(dashboard.MAX_NODES + 10)
    w = make_workload("web", replicas=2)
    c.workloads[w.key] = w
    c.replicas["r1"] = make_replica("r1", w, node="n1")
    mirror, retained = Mirror(c), {}
    calls = drain(mirror, retained)
    assert len(calls) >= 2  # more nodes than one call takes: the rest the next calls
    assert all(sum(t.startswith("cloudless/v1/dash/node/") for t in call) <= dashboard.MAX_NODES for call in calls)
    assert retained == documents(c)
    assert mirror.changes() == {}


def test_a_heartbeat_re_encodes_that_node_only_and_not_its_discovery_configs() -> None:
    c = fleet(50)
    mirror = Mirror(c)
    drain(mirror, {})
    c.members["n7"] = member("n7", cpu=77.0)
    c.touch_member("n7")
    assert set(mirror.changes()) == {dashboard.node_topic("n7")}


def test_a_new_agent_version_re_encodes_the_discovery_configs() -> None:
    c = fleet(3)
    mirror = Mirror(c)
    drain(mirror, {})
    c.members["n1"] = member("n1", version="0.2.0")
    c.touch_member("n1")
    out = mirror.changes()
    assert dashboard.node_topic("n1") in out and set(dashboard.discovery(dashboard.node_summary(
        c, "n1", c.members["n1"]))) <= set(out)


def test_a_failed_publish_resends_everything() -> None:
    c = fleet(5)
    mirror = Mirror(c)
    drain(mirror, {})
    mirror.forget()
    retained: dict[str, str] = {}
    drain(mirror, retained)
    assert retained == documents(c)


_nodes = st.sampled_from([f"n{i}" for i in range(6)])
_ops = st.lists(st.one_of(
    st.tuples(st.just("heartbeat"), _nodes, st.floats(0, 100, allow_nan=False)),
    st.tuples(st.just("state"), _nodes, st.sampled_from(list(NodeState))),
    st.tuples(st.just("version"), _nodes, st.sampled_from(["0.1.0", "0.2.0"])),
    st.tuples(st.just("delete"), _nodes),
    st.tuples(st.just("place"), st.sampled_from(["r1", "r2", "r3"]), _nodes),
    st.tuples(st.just("unplace"), st.sampled_from(["r1", "r2", "r3"])),
    st.tuples(st.just("scale"), st.integers(1, 4)),
    st.tuples(st.just("publish"))), max_size=30)


@settings(max_examples=100, deadline=None)
@given(_ops)
def test_what_it_publishes_always_equals_the_mirror_from_scratch(ops: list[tuple[object, ...]]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dashboard, "SWEEP_NODES", 0)  # the marks alone must be enough (the sweep is a safety net)
        _replay(ops)


def _replay(ops: list[tuple[object, ...]]) -> None:
    c = fleet(4)
    w = make_workload("web", replicas=2)
    c.workloads[w.key] = w
    mirror, retained = Mirror(c), {}
    for op in ops:  # every change marks what it touches, as the engine and the inbox do
        match op:
            case ("heartbeat", str(n), float(cpu)) if n in c.members:
                c.members[n] = replace(c.members[n], heartbeat=Heartbeat(node_id=n, seq=2, ts=NOW, cpu_percent=cpu))
                c.touch_member(n)
            case ("state", str(n), NodeState() as state) if n in c.members:
                c.members[n] = replace(c.members[n], state=state)
                c.touch_node(n)
            case ("version", str(n), str(version)):
                c.members[n] = member(n, version=version)
                c.touch_node(n)
            case ("delete", str(n)):
                c.members.pop(n, None)
                c.touch_node(n)
            case ("place", str(rid), str(n)):
                c.replicas[rid] = make_replica(rid, w, node=n)
            case ("unplace", str(rid)):
                c.replicas.pop(rid, None)
            case ("scale", int(n)):
                w = make_workload("web", replicas=n)
                c.workloads[w.key] = w
                for rid, r in list(c.replicas.items()):
                    c.replicas[rid] = replace(r, spec_hash=w.spec_hash)
            case ("publish",):
                drain(mirror, retained)
    drain(mirror, retained)
    assert retained == documents(c)


@pytest.mark.parametrize("nodes", [0, 1])
def test_the_cluster_totals_follow_deleted_nodes(nodes: int) -> None:
    c = fleet(2)
    mirror, retained = Mirror(c), {}
    drain(mirror, retained)
    for i in range(nodes + 1):
        c.members.pop(f"n{i}", None)
        c.touch_node(f"n{i}")
    drain(mirror, retained)
    assert retained == documents(c)
    assert retained[topics.dash("cluster")].count('"nodes_total":' + str(1 - nodes)) == 1
