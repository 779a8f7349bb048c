"""The in-memory fleet (tests.coordinator.fleet_memory) does what it says: nodes join with their facts, replicas are
placed, delivered through the broker's retained desired state and reported ready, silent nodes go lost and their
replicas are replaced, and the REST app answers."""

from __future__ import annotations

from pathlib import Path

from broker.wire import topics
from coordinator.membership import NodeState
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import AUTH, converge, workload


async def test_nodes_join_with_their_facts_and_are_listed(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=30) as fc:
        assert len(fc.coord.members) == 30
        assert all(i.state is NodeState.ONLINE for i in fc.coord.members.values())
        info = fc.coord.members["node-00007"]
        assert info.status is not None and info.status.facts.zone == "zone-d" and info.heartbeat is not None
        resp = await fc.http.get("/v1/nodes", headers=AUTH)
        assert resp.status == 200
        body = await resp.json()
        assert len(body["items"]) == 30 or "continue" in body.get("metadata", {})
        assert (await fc.http.get("/healthz")).status == 200


async def test_replicas_are_placed_delivered_and_reported_ready(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=40) as fc:
        await fc.apply(workload("web", 25))
        await converge(fc, 25, workload="web")
        placed = fc.placed("web")
        assert len(placed) == 25
        for node in set(placed.values()):  # each holder got its replicas through the broker's retained copy
            d = fc.desired(node)
            assert d is not None and {r.replica_id for r in d.replicas} == {
                rid for rid, n in placed.items() if n == node}
            assert topics.node_desired(node) in fc.bus.retained


async def test_silent_nodes_go_lost_and_their_replicas_are_replaced(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=20) as fc:
        await fc.apply(workload("web", 10))
        await converge(fc, 10, workload="web")
        gone = sorted(set(fc.placed("web").values()))[:3]
        await fc.lose(gone)
        assert all(fc.coord.members[n].state is NodeState.LOST for n in gone)
        await converge(fc, 10, workload="web")
        assert not set(fc.placed("web").values()) & set(gone)


async def test_crashed_nodes_publish_their_wills(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=10) as fc:
        await fc.crash(["node-00001"])
        fc.advance(1.0)
        await fc.round()
        assert fc.coord.members["node-00001"].state is NodeState.LOST
        assert fc.coord.members["node-00002"].state is NodeState.ONLINE


async def test_small_replicas_spread_over_the_fleet(tmp_path: Path) -> None:
    """Issue 17 through the real coordinator: ten 10m replicas on 20 alike nodes take ten nodes (they took two)."""
    async with fleet_memory.cluster(tmp_path, nodes=20) as fc:
        await fc.apply(workload("ten", 10))
        await converge(fc, 10, workload="ten")
        assert len(set(fc.placed("ten").values())) == 10
