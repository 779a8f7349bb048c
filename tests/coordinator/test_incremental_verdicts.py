"""Membership verdicts are deadline-driven (issue 17): a round judges only the nodes that changed or whose next
deadline (membership.next_deadline) has passed. Through the real engine on a small in-memory fleet, with the slow
sweep over every node pushed out of reach, so a verdict that only the sweep would make goes missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator import judging
from coordinator.membership import NodeState
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import FleetCluster

NODES = 12


@pytest.fixture
async def fc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FleetCluster]:
    monkeypatch.setattr(judging, "JUDGE_SWEEP_S", 1e9)  # only the first round judges every node
    async with fleet_memory.cluster(tmp_path, nodes=NODES) as fc:
        for _ in range(3):
            await fc.round(advance=0.5)
        yield fc


async def test_a_round_with_no_deadline_due_evaluates_no_node(fc: FleetCluster) -> None:
    await fc.heartbeat_all()  # heartbeats only move deadlines later: nobody is due
    before = fc.coord.evaluations
    for _ in range(4):
        await fc.round(advance=0.5)
    assert fc.coord.evaluations == before
    assert all(i.state is NodeState.ONLINE for i in fc.coord.members.values())


async def test_a_passed_deadline_is_judged_and_only_then(fc: FleetCluster) -> None:
    ttl = fc.coord.cfg.membership.heartbeat_ttl_s
    before = fc.coord.evaluations
    await fc.round(advance=ttl + 1)  # every node's silence deadline has passed (nobody heartbeated)
    assert fc.coord.evaluations - before == NODES
    assert all(i.state is NodeState.SUSPECT for i in fc.coord.members.values())
    before = fc.coord.evaluations
    await fc.round(advance=0.5)  # the next deadline (lost after) is not due yet
    assert fc.coord.evaluations == before
    await fc.round(advance=fc.coord.cfg.membership.lost_after_s)
    assert all(i.state is NodeState.LOST for i in fc.coord.members.values())


async def test_a_silent_node_is_suspect_then_lost_while_the_others_heartbeat(fc: FleetCluster) -> None:
    victim = sorted(fc.coord.members)[0]
    await fc.lose([victim])
    assert fc.coord.members[victim].state is NodeState.LOST
    assert all(i.state is NodeState.ONLINE for n, i in fc.coord.members.items() if n != victim)


async def test_a_last_will_is_judged_without_a_deadline(fc: FleetCluster) -> None:
    """A will (from the status, not a deadline: a node waiting on one has none) gets its verdict: a lone will is
    a crash, LOST."""
    victim = sorted(fc.coord.members)[0]
    await fc.crash([victim])
    await fc.settle()
    assert fc.coord.members[victim].state in (NodeState.OFFLINE, NodeState.LOST)
    for _ in range(3):
        await fc.heartbeat_all()
        await fc.round(advance=fc.coord.cfg.membership.lost_after_s / 2 + 1)
    assert fc.coord.members[victim].state is NodeState.LOST
