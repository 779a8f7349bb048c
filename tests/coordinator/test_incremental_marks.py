"""Review 2 M2: the outbox's change marks, checked where an agent acts on them (the node's retained desired state),
with the sweep off so only the marks can carry a change: a change under the same spec hash (a label) reaches every
node of the workload, and a replica moved off a node (drained, refused) leaves that node's desired state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.wire import NodeFacts, ObservedState, ReplicaObserved, ReplicaState, topics
from coordinator import outbox, service
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import FleetCluster, converge, workload

NODES = 12


@pytest.fixture
async def fc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FleetCluster]:
    monkeypatch.setattr(service, "SWEEP_REPLICAS", 0)  # no workload is looked at only because of the sweep
    monkeypatch.setattr(outbox, "SWEEP_NODES", 0)  # no node's desired state is re-checked only by the sweep
    async with fleet_memory.cluster(tmp_path, nodes=NODES) as fc:
        await fc.apply(workload("web", 6))
        await fc.apply(workload("db", 2))
        await converge(fc, 8)
        for _ in range(3):
            await fc.round(advance=0.5)
        yield fc


def listed(fc: FleetCluster, node: str) -> set[str]:
    d = fc.desired(node)
    return {r.replica_id for r in d.replicas} if d is not None else set()


async def test_a_label_only_change_reaches_every_nodes_desired_state(fc: FleetCluster) -> None:
    before = {rid: fc.coord.replicas[rid].spec_hash for rid in fc.placed("web")}
    doc = workload("web", 6)
    doc["metadata"]["labels"] = {"tier": "two"}  # type: ignore[index]
    await fc.apply(doc)
    for _ in range(3):
        await fc.round(advance=0.5)
    assert {rid: fc.coord.replicas[rid].spec_hash for rid in fc.placed("web")} == before  # same spec hash
    for node in set(fc.placed("web").values()):
        d = fc.desired(node)
        assert d is not None
        assert {r.labels.get("tier") for r in d.replicas if r.workload == "web"} == {"two"}, node


async def test_a_drained_nodes_desired_state_no_longer_lists_its_replicas(fc: FleetCluster) -> None:
    victim = next(iter(fc.placed("web").values()))
    moved = {rid for rid, n in fc.placed().items() if n == victim}
    assert moved and moved <= listed(fc, victim)
    await fc.coord.ops.set_admin(victim, draining=True)
    await converge(fc, 8)
    for _ in range(3):
        await fc.round(advance=0.5)
        await fc.report_ready()
    assert victim not in fc.placed().values()
    assert not moved & listed(fc, victim)  # what the agent acts on: it stops them


async def test_a_refused_replica_leaves_the_old_nodes_desired_state(fc: FleetCluster) -> None:
    rid, node = next(iter(fc.placed("db").items()))
    d = fc.desired(node)
    assert d is not None and rid in listed(fc, node)
    fc._publish(fc.nodes[node], topics.Channel.OBSERVED, ObservedState(
        node_id=node, generation=d.generation, epoch=d.epoch, ts=fc.clock(),
        replicas=tuple(ReplicaObserved(replica_id=r.replica_id, workload=r.workload, spec_hash=r.spec_hash,
                                       state=ReplicaState.FAILED if r.replica_id == rid else ReplicaState.RUNNING,
                                       ready=r.replica_id != rid,
                                       last_error=NodeFacts.REFUSED + "no such runtime" if r.replica_id == rid
                                       else "") for r in d.replicas)))
    fc.nodes[node].silent = True  # it reports nothing else
    for _ in range(3):
        await fc.round(advance=0.5)
    assert fc.coord.replicas[rid].node not in (None, node)
    assert rid not in listed(fc, node)
