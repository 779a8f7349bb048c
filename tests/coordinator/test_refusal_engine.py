"""Through the real engine (in-memory broker, REST app): a Podman node and a process node; a replica the process node
would refuse never goes there, and a replica a node does refuse moves to another one with a Warning event."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from broker import wire
from broker.wire import NodeFacts, NodeStatus, ObservedState, Presence, ReplicaObserved, ReplicaState, topics
from tests.coordinator.rest_harness import AUTH, Rest, rest

PODMAN = NodeFacts(arch="x86_64", os="linux", cpu_count=4, memory_bytes=8 * 1024**3, runtime="podman",
                   abilities=("containers", "port-remap", "volumes", "images"))
PROCESS = NodeFacts(arch="x86_64", os="linux", cpu_count=4, memory_bytes=8 * 1024**3, runtime="process",
                    abilities=("process",))


async def _until(pred: Any, what: str, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _nodes(r: Rest, **facts: NodeFacts) -> None:
    bus = r.bus.client("nodes")
    await bus.start()
    for node, f in facts.items():
        bus.publish_nowait(topics.node_status(node), wire.encode(NodeStatus(node_id=node, presence=Presence.ONLINE,
                                                                            ts=time.time(), facts=f)), retain=True)
    await _until(lambda: set(facts) <= set(r.coord.cluster.members), "nodes known")


SECURE = {"securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
                               "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}


def _placed(r: Rest) -> dict[str, str | None]:
    return {rid: rep.node for rid, rep in r.coord.replicas.items()}


async def test_a_container_workload_never_lands_on_the_process_node_and_says_why() -> None:
    async with rest() as r:
        r.coord._settle_until = 0.0
        await _nodes(r, box=PODMAN, phone=PROCESS)
        doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "hello"},
               "spec": {"image": "nginx:1.25", "replicas": 2,
                        "ports": [{"containerPort": 80, "hostPort": 18081}], **SECURE}}
        resp = await r.client.put("/v1/workloads/default/hello", json=doc, headers=AUTH)
        assert resp.status in (200, 201), await resp.text()
        await _until(lambda: list(_placed(r).values()).count("box") == 1 and len(_placed(r)) == 2, "one placed")
        await asyncio.sleep(0.3)
        assert "phone" not in _placed(r).values()
        pending = next(rep for rep in r.coord.replicas.values() if rep.node is None)
        assert "phone" in pending.unschedulable and "runtime mismatch" in pending.unschedulable["phone"]
        await r.coord.journal.flush()
        assert any(e.reason == "Unschedulable" and "phone" in e.message for e in r.coord.journal.committed_events())


async def test_a_refused_replica_moves_to_another_node_with_a_warning() -> None:
    async with rest() as r:
        r.coord._settle_until = 0.0
        await _nodes(r, a=PROCESS, b=PROCESS)
        doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "job"},
               "spec": {"runtime": "process", "command": ["sleep", "3600"], "replicas": 1, **SECURE}}
        resp = await r.client.put("/v1/workloads/default/job", json=doc, headers=AUTH)
        assert resp.status in (200, 201), await resp.text()
        (rid, first), = (await _until(lambda: [(k, v) for k, v in _placed(r).items() if v], "placed"))
        rep = r.coord.replicas[rid]
        observed = ObservedState(node_id=first, generation=1, epoch=r.coord.epoch, ts=time.time(), replicas=(
            ReplicaObserved(replica_id=rid, workload="job", state=ReplicaState.FAILED, spec_hash=rep.spec_hash,
                            last_error=NodeFacts.REFUSED + "runAsUser needs a root agent"),))
        r.bus.route(first, topics.node_observed(first), wire.encode(observed), True)
        other = "b" if first == "a" else "a"
        await _until(lambda: r.coord.replicas[rid].node == other, "moved to the other node")
        await r.coord.journal.flush()
        refused = [e for e in r.coord.journal.committed_events() if e.reason == "ReplicaRefused"]
        assert refused and f"refused by node {first}: runAsUser needs a root agent" in refused[0].message


async def test_a_start_failure_is_a_warning_on_the_workload_naming_the_node() -> None:
    async with rest() as r:
        r.coord._settle_until = 0.0
        await _nodes(r, a=PROCESS)
        doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "job"},
               "spec": {"runtime": "process", "command": ["sleep", "3600"], "replicas": 1, **SECURE}}
        resp = await r.client.put("/v1/workloads/default/job", json=doc, headers=AUTH)
        assert resp.status in (200, 201), await resp.text()
        (rid, node), = (await _until(lambda: [(k, v) for k, v in _placed(r).items() if v], "placed"))
        rep = r.coord.replicas[rid]
        observed = ObservedState(node_id=node, generation=1, epoch=r.coord.epoch, ts=time.time(), replicas=(
            ReplicaObserved(replica_id=rid, workload="job", state=ReplicaState.FAILED, spec_hash=rep.spec_hash,
                            last_error="exec: sleep: permission denied"),))
        r.bus.route(node, topics.node_observed(node), wire.encode(observed), False)
        await _until(lambda: any(e.reason == "ReplicaFailed" for e in r.coord.journal.events), "the warning")
        ev = next(e for e in r.coord.journal.events if e.reason == "ReplicaFailed")
        assert ev.object == "workload/default/job" and ev.type == "Warning"
        assert f"on {node}" in ev.message and "permission denied" in ev.message
