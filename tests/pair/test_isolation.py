"""Issue 16, High 1: one admitted workload must never stop the control loop for the whole cluster. A node's
desired state that the wire refuses (over the 2 MiB cap, or a string it cannot carry) is that node's problem —
an event and a condition on it — and every other node still gets its desired state; the scheduler does not
place past the cap in the first place; `/readyz` reports rounds that keep failing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from broker import wire
from coordinator.errors import SpecError
from coordinator.model import ReplicaPhase, ReplicaRecord
from tests.coordinator.rest_harness import rest
from tests.pair.test_pair import Pair, pair, until, workload

__all__ = ["pair"]

BIG_ENV = [{"name": f"V{i}", "value": "x" * 4000} for i in range(200)]  # ~800 KB of legitimate content


def _big(name: str, replicas: int, node: str) -> dict[str, object]:
    return workload(name, replicas, env=BIG_ENV, placement={"nodeSelector": {"cloudless.io/node": node}})


async def test_the_scheduler_stops_placing_on_a_node_whose_desired_state_would_pass_the_wire_cap(pair: Pair) -> None:
    await pair.add_node("a").agent.start()
    await until(lambda: "a" in pair.coord.members)
    await pair.coord.ops.apply(_big("big", 3, "a"))
    await until(lambda: sum(1 for r in pair.coord.replicas.values() if r.node == "a") == 2
                and any(r.node is None and r.unschedulable for r in pair.coord.replicas.values()),
                what="two placed, the third refused")
    await until(lambda: pair.ready("big") == 2, what="the two on a running")
    (waiting,) = [r for r in pair.coord.replicas.values() if r.node is None]
    assert "desired state" in waiting.unschedulable["a"], waiting.unschedulable
    assert len(wire.encode(wire.decode(pair.bus.retained[wire.topics.node_desired("a")]))) <= wire.MAX_PAYLOAD_BYTES


async def test_a_node_whose_desired_state_the_wire_refuses_does_not_stop_the_others(pair: Pair) -> None:
    for n in ("a", "b"):
        await pair.add_node(n).agent.start()
    await until(lambda: len(pair.coord.members) == 2, what="two members")
    await pair.coord.ops.apply(_big("big", 2, "a"))
    await until(lambda: pair.ready("big") == 2, what="big running on a")
    # a third replica assigned to `a` outside the scheduler (e.g. by an older coordinator with no size bound):
    # a's desired state is now over the wire's cap
    w = pair.coord.workloads["default/big"]
    async with pair.coord.journal.lock:
        pair.coord.replicas["big-extra"] = ReplicaRecord(
            replica_id="big-extra", namespace="default", workload="big", revision=w.revision,
            spec_hash=w.spec_hash, created_at=0.0, node="a", phase=ReplicaPhase.ASSIGNED)
        pair.coord.workloads["default/big"] = replace(w, doc={**w.doc, "spec": {**w.doc["spec"], "replicas": 3}})
    await pair.coord.ops.apply(workload("web", 1, placement={"nodeSelector": {"cloudless.io/node": "b"}}))
    await until(lambda: pair.ready("web") == 1, what="web running on b although a's desired state cannot go out")
    await until(lambda: any(e.reason == "DesiredStateRefused" and e.object == "node/a"
                            for e in pair.coord.journal.events), what="an event on node a")
    assert "over" in pair.coord.outbox.refused["a"]
    assert pair.coord.round_failures == 0


async def test_readyz_reports_rounds_that_keep_failing_and_the_objects_a_round_skipped() -> None:
    async with rest() as r:
        await until(lambda: r.coord.rounds > 2, what="rounds")
        assert (await r.client.get("/readyz")).status == 200
        r.coord.cluster.problems["node/a"] = "desired state not sent: too big"
        body = await (await r.client.get("/readyz")).json()
        assert body["problems"] == {"node/a": "desired state not sent: too big"} and body["ready"]
        r.store.full = True
        r.coord.journal.event("Normal", "Test", "node/a", "a write the full disk refuses, every round")
        await until(lambda: r.coord.round_failures >= 3, what="three failed rounds")
        resp = await r.client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503 and not body["ready"] and "disk is full" in body["roundError"], body
        r.store.full = False
        await until(lambda: r.coord.round_failures == 0, what="a round completing again")
        assert (await r.client.get("/readyz")).status == 200


async def test_a_replica_no_node_could_ever_be_sent_is_refused_at_apply(pair: Pair) -> None:
    huge = workload("huge", 1, env=[{"name": f"V{i}", "value": "x" * 4096} for i in range(256)],
                    args=["y" * 4096] * 256)
    with pytest.raises(SpecError) as info:
        await pair.coord.ops.apply(huge)
    assert info.value.path == "spec" and "desired state" in info.value.message
    assert "default/huge" not in pair.coord.workloads
