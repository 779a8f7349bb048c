"""The pair harness (STYLE §5, after h11's ConnectionPair): real coordinators and agents — their real cores and
engines — wired through an in-memory broker and the real wire codec, with fake runtimes. Fast, no processes,
no sockets; the integration tests repeat the important scenarios with the real things."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker import wire
from broker.wire import DesiredState, NodeStatus, Presence, topics
from coordinator.membership import MembershipConfig
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.store import SqliteStore
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BrokerAddress
from edge_agent.gating import Gate
from edge_agent.reconcile import RestartConfig
from edge_agent.runtime.base import InstanceState
from edge_agent.runtime.fake import FakeRuntime
from firmware_profiles import load_profile
from tests.pair.fakebus import FakeBroker

IMAGE = "localhost/cloudless/busybox:latest"


def workload(name: str, replicas: int, **spec: object) -> dict[str, object]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name},
            "spec": {"image": IMAGE, "command": ["sleep", "300"], "replicas": replicas,
                     "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
                                         "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                     **spec}}


@dataclass
class Node:
    agent: Agent
    runtime: FakeRuntime
    sensor: Path

    def set_temp(self, celsius: float) -> None:
        self.sensor.write_text(json.dumps({"temperatures": {"cpu": celsius}}))


class Pair:
    def __init__(self, tmp: Path, lost_after_s: float = 0.5) -> None:
        self.tmp = tmp
        self.bus = FakeBroker()
        self.store = SqliteStore(":memory:")
        self.coord = Coordinator(
            CoordinatorConfig(tick_s=0.05, membership=MembershipConfig(heartbeat_ttl_s=5, lost_after_s=lost_after_s)),
            store=self.store, mqtt=self.bus.client("coordinator@pair"))  # type: ignore[arg-type]
        self.nodes: dict[str, Node] = {}

    def add_node(self, node_id: str, profile: str = "vps") -> Node:
        sensor = self.tmp / f"{node_id}-sensors.json"
        cfg = AgentConfig(broker=BrokerAddress("fake", 0, False), data_dir=self.tmp / node_id, node_id=node_id,
                          username=node_id, reconcile_interval_s=0.05, probe_tick_s=0.05, sensor_file=sensor,
                          restart=RestartConfig(backoff_initial_s=0.05, backoff_max_s=0.2))
        runtime = FakeRuntime(node_id=node_id, clock=time.time, images=[IMAGE])
        will = wire.encode(NodeStatus(node_id=node_id, presence=Presence.OFFLINE, ts=0.0, schedulable=False))
        client = self.bus.client(node_id, will=(topics.node_status(node_id), will))
        agent = Agent(cfg, runtime=runtime, mqtt=client, gate=Gate(load_profile(profile), sensor),  # type: ignore[arg-type]
                      profile_name=profile, heartbeat_interval_s=0.1)
        node = self.nodes[node_id] = Node(agent, runtime, sensor)
        return node

    def ready(self, name: str) -> int:
        w = self.coord.workloads[f"default/{name}"]
        return sum(1 for r in self.coord.replicas.values()
                   if r.workload == name and (o := self.coord.observed_of(r)) is not None and o.ready
                   and o.spec_hash == w.spec_hash)

    def placement(self, name: str) -> dict[str, str | None]:
        return {r.replica_id: r.node for r in self.coord.replicas.values() if r.workload == name}


async def until(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async for p in _pair(tmp_path, 0.5):
        yield p


@pytest.fixture
async def patient_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """A grace period (--lost-after) of 5 s: long enough to see replicas kept through it."""
    async for p in _pair(tmp_path, 5.0):
        yield p


async def _pair(tmp_path: Path, lost_after_s: float) -> AsyncIterator[Pair]:
    p = Pair(tmp_path, lost_after_s)
    await p.coord.start()
    try:
        yield p
    finally:
        for n in p.nodes.values():
            await asyncio.wait_for(n.agent.stop(), 5)
        await asyncio.wait_for(p.coord.stop(), 5)
        await p.store.close()


async def test_apply_places_runs_and_reports_ready(pair: Pair) -> None:
    for n in ("a", "b"):
        await pair.add_node(n).agent.start()
    await until(lambda: len(pair.coord.members) == 2, what="two members")
    await pair.coord.ops.apply(workload("web", 2, placement={"spread": "node"}))
    await until(lambda: pair.ready("web") == 2, what="2 ready replicas")
    assert sorted(pair.placement("web").values()) == ["a", "b"]
    # each agent runs exactly its replica, created from the desired state it received over the bus
    for node_id, node in pair.nodes.items():
        insts = await node.runtime.list()
        assert [i.replica_id for i in insts] == [r for r, n in pair.placement("web").items() if n == node_id]
        assert node.runtime.maintained > 0  # the runtime's upkeep (log rotation) runs with the reconcile rounds


async def test_a_crashed_instance_is_restarted_and_the_restart_reported(pair: Pair) -> None:
    node = pair.add_node("a")
    await node.agent.start()
    await until(lambda: "a" in pair.coord.members)
    await pair.coord.ops.apply(workload("web", 1))
    await until(lambda: pair.ready("web") == 1)
    (inst,) = await node.runtime.list()
    node.runtime.crash(inst.instance_id, exit_code=3)
    rid = inst.replica_id
    await until(lambda: (r := pair.coord.replicas.get(rid)) is not None
                and (o := pair.coord.observed_of(r)) is not None and o.restarts == 1 and o.ready,
                what="restart reported")
    assert [op for op, _ in node.runtime.calls].count("create") == 1, "restarted in place, not recreated"


async def test_a_crashed_node_loses_its_replicas_to_the_others(pair: Pair) -> None:
    a, b = pair.add_node("a"), pair.add_node("b")
    await a.agent.start()
    await b.agent.start()
    await until(lambda: len(pair.coord.members) == 2)
    await pair.coord.ops.apply(workload("web", 2, placement={"spread": "node"}))
    await until(lambda: pair.ready("web") == 2)
    await b.agent.mqtt.abort()  # type: ignore[attr-defined]
    await until(lambda: pair.ready("web") == 2 and set(pair.placement("web").values()) == {"a"},
                what="replicas replaced on a")
    kinds = [e.reason for e in pair.coord.journal.events]
    assert "NodeLost" in kinds and "ReplicaLost" in kinds


async def test_a_tripped_gate_reports_unschedulable_and_stops_workloads_as_the_profile_says(pair: Pair) -> None:
    node = pair.add_node("pi", profile="raspberry-pi-4")  # gate_action = stop, thermal limit 80 C
    node.set_temp(45.0)
    await node.agent.start()
    await until(lambda: "pi" in pair.coord.members)
    await pair.coord.ops.apply(workload("web", 1))
    await until(lambda: pair.ready("web") == 1)
    node.set_temp(95.0)
    await until(lambda: not pair.coord.members["pi"].status.schedulable, what="unschedulable")  # type: ignore[union-attr]
    assert any("cpu" in g for g in pair.coord.members["pi"].status.gates)  # type: ignore[union-attr]
    await until(lambda: not [i for i in node.runtime.instances.values() if i.state is InstanceState.RUNNING],
                what="workloads stopped by the gate")
    await until(lambda: pair.ready("web") == 0, what="the coordinator seeing it stopped")  # not a stale "ready"
    node.set_temp(40.0)  # below the limit minus the 5 C hysteresis margin
    await until(lambda: pair.ready("web") == 1, what="workload back after the gate cleared")
    await until(lambda: pair.coord.members["pi"].status.schedulable, what="schedulable again")  # type: ignore[union-attr]


async def test_a_broker_that_lost_its_retained_state_is_refilled_without_restarts(pair: Pair) -> None:
    node = pair.add_node("a")
    await node.agent.start()
    await until(lambda: "a" in pair.coord.members)
    await pair.coord.ops.apply(workload("web", 2))
    await until(lambda: pair.ready("web") == 2)
    calls_before = list(node.runtime.calls)
    sent = wire.decode(pair.bus.retained[topics.node_desired("a")])
    pair.bus.wipe()
    assert topics.node_desired("a") not in pair.bus.retained
    await pair.coord.mqtt.stop()  # the coordinator's connection drops with the broker, then comes back
    await pair.coord.mqtt.start()
    await until(lambda: topics.node_desired("a") in pair.bus.retained, what="desired state republished")
    again = wire.decode(pair.bus.retained[topics.node_desired("a")])
    assert isinstance(sent, DesiredState) and isinstance(again, DesiredState)
    # the same content under the same generation: a reconnect is no fan-out of new generations (issue 17)
    assert (again.generation, again.epoch, again.replicas) == (sent.generation, sent.epoch, sent.replicas)
    await asyncio.sleep(0.3)
    assert node.runtime.calls == calls_before, "a healthy workload was touched"


@pytest.mark.parametrize("nodes", [["a"], ["a", "b"]], ids=["one-node-the-coordinator-lost-the-broker-too",
                                                            "every-node-at-once"])
async def test_a_broker_that_publishes_every_will_as_it_stops_replaces_nothing(pair: Pair, nodes: list[str]) -> None:
    """Mosquitto publishes every client's last will when it stops: the nodes are fine, so their replicas stay
    where they are (a lone crash is still replaced: test_a_crashed_node_loses_its_replicas_to_the_others)."""
    for n in nodes:
        await pair.add_node(n).agent.start()
    await until(lambda: len(pair.coord.members) == len(nodes))
    await pair.coord.ops.apply(workload("web", len(nodes), placement={"spread": "node"}))
    await until(lambda: pair.ready("web") == len(nodes))
    placement, calls = pair.placement("web"), {n: list(node.runtime.calls) for n, node in pair.nodes.items()}
    await pair.bus.shutdown()
    await asyncio.sleep(1.0)  # twice the will settle time and many rounds while the broker is away (lost_after 0.5)
    assert pair.placement("web") == placement
    for client in pair.bus.clients:
        await client.start()  # the broker is back (empty) and everyone reconnects
    await until(lambda: topics.node_desired("a") in pair.bus.retained and pair.ready("web") == len(nodes),
                what="refilled")
    await asyncio.sleep(0.5)
    assert pair.placement("web") == placement
    assert {n: list(node.runtime.calls) for n, node in pair.nodes.items()} == calls, "a healthy workload was touched"
    left = [e for e in pair.coord.journal.events if e.reason == "NodeLeft"]
    assert len(left) == len(nodes) and all("broker" in e.message for e in left)
    assert not [e for e in pair.coord.journal.events if e.reason in ("NodeLost", "ReplicaLost")]


async def test_half_the_nodes_willing_together_keep_their_replicas_for_the_grace_period(patient_pair: Pair) -> None:
    """The coordinator stays connected; two of three nodes' wills arrive together (the broker's network, a shared
    uplink): not a crash of each, so nothing moves during the grace period, and nothing once they are back."""
    pair = patient_pair
    for n in ("a", "b", "c"):
        await pair.add_node(n).agent.start()
    await until(lambda: len(pair.coord.members) == 3)
    await pair.coord.ops.apply(workload("web", 3, placement={"spread": "node"}))
    await until(lambda: pair.ready("web") == 3)
    placement = pair.placement("web")
    await pair.nodes["b"].agent.mqtt.abort()  # type: ignore[attr-defined]
    await pair.nodes["c"].agent.mqtt.abort()  # type: ignore[attr-defined]
    await asyncio.sleep(1.5)  # three times the will settle time, well inside the 5 s grace
    assert pair.placement("web") == placement
    left = {e.object: e.message for e in pair.coord.journal.events if e.reason == "NodeLeft"}
    assert set(left) == {"node/b", "node/c"} and all("together with 1 of the other 2" in m for m in left.values())
    assert not [e for e in pair.coord.journal.events if e.reason in ("NodeLost", "ReplicaLost")]
    for n in ("b", "c"):
        await pair.nodes[n].agent.mqtt.start()  # type: ignore[attr-defined]
    await until(lambda: all(i.online for i in pair.coord.members.values()) and pair.ready("web") == 3)
    assert pair.placement("web") == placement


async def test_a_retained_will_replayed_on_reconnect_is_no_crash(patient_pair: Pair) -> None:
    """The broker kept its retained store over a restart, so the coordinator, reconnecting before the node, is
    sent the node's will again as a retained message: old news, not a crash (the grace period applies)."""
    pair = patient_pair
    await pair.add_node("a").agent.start()
    await until(lambda: "a" in pair.coord.members)
    await pair.coord.ops.apply(workload("web", 1))
    await until(lambda: pair.ready("web") == 1)
    placement = pair.placement("web")
    await pair.bus.shutdown(wipe=False)
    await asyncio.sleep(0.8)  # longer than the will settle time: the replay cannot be taken for the same outage
    await pair.coord.mqtt.start()
    assert topics.node_status("a") in pair.bus.retained  # the will, replayed to the coordinator
    await asyncio.sleep(1.5)
    assert pair.placement("web") == placement
    assert not [e for e in pair.coord.journal.events if e.reason in ("NodeLost", "ReplicaLost")]
    await pair.nodes["a"].agent.mqtt.start()  # type: ignore[attr-defined]
    await until(lambda: pair.coord.members["a"].online and pair.ready("web") == 1)
    assert pair.placement("web") == placement


async def test_a_stale_epoch_is_ignored_by_the_agent(pair: Pair) -> None:
    node = pair.add_node("a")
    await node.agent.start()
    await until(lambda: "a" in pair.coord.members)
    await pair.coord.ops.apply(workload("web", 1))
    await until(lambda: pair.ready("web") == 1)
    stale = wire.DesiredState(node_id="a", generation=999, epoch=pair.coord.epoch - 1, issued_at=time.time())
    pair.bus.route("rogue", topics.node_desired("a"), wire.encode(stale), True)
    await asyncio.sleep(0.3)
    assert pair.ready("web") == 1
    assert node.agent.desired is not None and node.agent.desired.generation != 999


async def test_a_coordinator_behind_the_nodes_epoch_catches_up_from_their_heartbeats(pair: Pair) -> None:
    """The coordinator's state restored from an older copy: its epoch is below what the agent honours, so the agent
    ignores its desired state. The agent says so in its heartbeats; the only coordinator raises its epoch past it,
    records why, and the workload runs (issue 16, item 5)."""
    node = pair.add_node("a")
    node.agent.max_epoch = pair.coord.epoch + 5  # what the agent saw before the restore
    await node.agent.start()
    await until(lambda: "a" in pair.coord.members)
    await pair.coord.ops.apply(workload("web", 1))
    await until(lambda: pair.ready("web") == 1, what="the replica runs once the epoch caught up")
    assert pair.coord.epoch > node.agent.max_epoch - 1
    assert any(e.reason == "EpochRegressed" for e in pair.coord.journal.events)
