"""Rounds work on what changed (issue 17): through the real engine on a small in-memory fleet
(tests.coordinator.fleet_memory), with the safety-net sweeps turned off so a change that is not marked would go
unnoticed — each test fails if the mark it relies on is missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import NodeFacts, ObservedState, ReplicaObserved, ReplicaState, topics
from coordinator import journal, model, outbox, service
from coordinator.membership import NodeState
from coordinator.model import ReplicaPhase, ReplicaRecord
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import FleetCluster, converge, workload

NODES = 12


@pytest.fixture
async def fc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FleetCluster]:
    monkeypatch.setattr(service, "SWEEP_REPLICAS", 0)  # no workload is looked at only because of the sweep
    monkeypatch.setattr(outbox, "SWEEP_NODES", 0)  # no node's desired state is re-checked only by the sweep
    async with fleet_memory.cluster(tmp_path, nodes=NODES) as fc:
        fc.bus.keep_log = True
        await fc.apply(workload("web", 6))
        await fc.apply(workload("db", 2))
        await converge(fc, 8)
        for _ in range(3):  # past the rounds that follow the last reports
            await fc.round(advance=0.5)
        yield fc


def desired_published(fc: FleetCluster) -> set[str]:
    return {t.split("/")[3] for _, t in fc.bus.log if t.startswith("cloudless/v1/node/") and t.endswith("/desired")}


async def test_a_steady_round_reconciles_no_workload_and_publishes_no_desired_state(fc: FleetCluster) -> None:
    assert fc.coord._workloads_due() == []
    fc.bus.log.clear()
    await fc.round(advance=0.5)
    assert desired_published(fc) == set()


async def test_a_scale_reconciles_that_workload_and_publishes_only_to_the_nodes_it_touches(fc: FleetCluster) -> None:
    before = {n: d.generation for n in fc.nodes if (d := fc.desired(n)) is not None}
    fc.bus.log.clear()
    await fc.apply(workload("web", 7))
    assert fc.coord._workloads_due() == ["default/web"]
    await converge(fc, 9)
    changed = {n for n in fc.nodes if (d := fc.desired(n)) is not None and before.get(n) != d.generation}
    assert len(changed) == 1 and desired_published(fc) == changed  # the new replica's node, no other


async def test_a_silent_node_is_lost_and_its_replicas_replaced_without_a_sweep(fc: FleetCluster) -> None:
    victim = next(iter(fc.placed("web").values()))
    await fc.lose([victim])
    assert fc.coord.members[victim].state is NodeState.LOST
    await converge(fc, 8)
    assert victim not in fc.placed().values()


async def test_a_drain_moves_the_replicas_off_the_node(fc: FleetCluster) -> None:
    victim = next(iter(fc.placed("web").values()))
    await fc.coord.ops.set_admin(victim, draining=True)
    await converge(fc, 8)
    for _ in range(3):
        await fc.round(advance=0.5)
        await fc.report_ready()
    assert victim not in fc.placed().values()


async def test_a_refusal_reported_in_observed_state_moves_the_replica(fc: FleetCluster) -> None:
    """Only the node's observed state changes: the mark from the inbox makes the workload due."""
    rid, node = next(iter(fc.placed("db").items()))
    d = fc.desired(node)
    assert d is not None
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


async def test_a_reconnect_resends_every_desired_state_under_its_generation(fc: FleetCluster) -> None:
    before = {n: (d.generation, d.replicas) for n in fc.nodes if (d := fc.desired(n)) is not None}
    assert before
    fc.bus.wipe()  # the broker lost its retained store
    fc.coord.outbox.forget_sent()
    for _ in range(5):
        await fc.round(advance=0.5)
    after = {n: (d.generation, d.replicas) for n in fc.nodes if (d := fc.desired(n)) is not None}
    assert after == before


async def test_a_round_stores_its_generations_in_one_transaction(fc: FleetCluster,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    txns: list[list[str]] = []
    real = fc.store.txn

    async def counting(ops: list[object], *args: object, **kw: object) -> object:
        txns.append([str(getattr(op, "key", "")) for op in ops])
        return await real(ops, *args, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(fc.store, "txn", counting)
    await fc.apply(workload("wide", 5))
    await fc.round()
    nodegen = [t for t in txns if any(k.startswith("/nodegen/") for k in t)]
    assert len(nodegen) == 1 and len(nodegen[0]) == 5


@settings(max_examples=100, deadline=None)
@given(st.builds(ReplicaRecord, replica_id=st.text(max_size=8), namespace=st.text(max_size=8),
                 workload=st.text(max_size=8), revision=st.integers(0, 10), spec_hash=st.text(max_size=8),
                 node=st.none() | st.text(max_size=8), phase=st.sampled_from(list(ReplicaPhase)),
                 created_at=st.floats(0, 1e10), assigned_at=st.none() | st.floats(0, 1e10),
                 stop_requested_at=st.none() | st.floats(0, 1e10), message=st.text(max_size=20),
                 unschedulable=st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3)))
def test_the_fast_replica_record_encoding_is_byte_for_byte_the_models(r: ReplicaRecord) -> None:
    assert service.replica_json(r) == model.to_json(r)


@settings(max_examples=100, deadline=None)
@given(st.builds(model.Event, seq=st.integers(0, 2**40), time=st.floats(0, 1e10), type=st.text(max_size=8),
                 reason=st.text(max_size=12), object=st.text(max_size=20), message=st.text(max_size=40)))
def test_the_fast_event_encoding_is_byte_for_byte_the_models(ev: model.Event) -> None:
    assert journal.event_json(ev) == model.to_json(ev)
