"""Issue 17, review 2 H1: a round's desired-state work past PUBLISH_NODES must not starve anyone. Nodes consuming
a secret are re-checked only when their sealed boxes change (not every round), overflowing marks are taken oldest
first, and the resend after a reconnect and the sweep have their own budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import outbox
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import FleetCluster, converge, workload

NODES = 500
SECRET_ENV = [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]


def replicas_on(fc: FleetCluster, node: str) -> set[str]:
    d = fc.desired(node)
    return {r.replica_id for r in d.replicas} if d is not None else set()


async def test_secret_consumers_past_the_publish_limit_starve_no_node_no_resend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=NODES) as fc:
        await fc.apply(workload("app", NODES, env=SECRET_ENV))  # one secret consumer on (nearly) every node
        await converge(fc, NODES, rounds=40, workload="app")
        consumers = {n for n, _, _ in fc.coord.cluster.secret_wants()}
        assert len(consumers) > 400  # more than the real PUBLISH_NODES
        monkeypatch.setattr(outbox, "PUBLISH_NODES", 20)  # many more consumers than one round takes
        for _ in range(3):
            await fc.round(advance=0.5)

        await fc.apply(workload("web", 1))  # a change to one node, last in the order if any
        for _ in range(10):
            await fc.round(advance=0.5)
        (rid, node), = fc.placed("web").items()
        assert rid in replicas_on(fc, node)  # its node got its desired state within a few rounds

        fc.bus.wipe()  # the broker lost its retained store: every node is sent again, RESEND_NODES a round
        fc.coord.outbox.forget_sent()
        rounds = -(-NODES // outbox.RESEND_NODES) + 3
        for _ in range(rounds):
            await fc.round(advance=0.5)
        assert sorted(n for n in fc.nodes if fc.desired(n) is None) == []
        assert fc.coord.outbox.backlog == 0  # nothing left over: the engine is not re-woken for ever


def test_overflowing_marks_are_taken_oldest_first_and_the_resend_and_sweep_still_run() -> None:
    from coordinator.cluster import Cluster
    box = outbox.Outbox(Cluster(), None, mqtt=None, store=None, metrics=None,  # type: ignore[arg-type]
                        clock=lambda: 1000.0)
    limit = outbox.PUBLISH_NODES
    for i in range(limit + 5):
        box.mark_node(f"a{i:04d}")
    box.mark_node("z-changed")
    box._resend = ["r1"]
    first = box._changed_nodes(set())
    assert "r1" in first and "z-changed" not in first
    for i in range(limit):  # marked again every round: they go to the back, not before the older marks
        box.mark_node(f"a{i:04d}")
    second = box._changed_nodes(set())
    assert "z-changed" in second


class _Wire:
    """What the outbox publishes, in order (a fake MQTT client) and counts (a fake metrics sink)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload))

    def mqtt(self, *_: object) -> None:
        pass


async def test_a_node_deleted_while_service_tables_go_out_keeps_its_topic_empty(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 5, L2: publish_services yields every LOOK_NODES nodes; a node deleted meanwhile (clear_node empties
    its retained topic) must not get its table published again by the rest of that pass."""
    import asyncio

    from broker.wire import topics
    from coordinator.cluster import Cluster
    wire = _Wire()
    box = outbox.Outbox(Cluster(), None, mqtt=wire, store=None, metrics=wire,  # type: ignore[arg-type]
                        clock=lambda: 1000.0)
    monkeypatch.setattr(outbox, "LOOK_NODES", 2)  # a yield every two nodes
    nodes = [f"n{i}" for i in range(8)]
    publishing = asyncio.create_task(box.publish_services({n: () for n in nodes}, lambda _: "z", 1000.0, 1))
    await asyncio.sleep(0)  # the pass is at its first yield: n0 and n1 looked at
    box.clear_node("n5")
    await publishing
    topic = topics.node_services("n5")
    assert [p for t, p in wire.sent if t == topic] == [b""], "n5's topic stays empty after its clear"
    assert {t for t, p in wire.sent if p} == {topics.node_services(n) for n in nodes if n != "n5"}
    assert box._passes == []
