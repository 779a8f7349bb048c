"""A stalled coordinator loop is not silent nodes (issue 17): the gap between turns of the engine's loop, on its
monotonic clock, is treated like a broker outage (coordinator.link.LoopWatch, LinkClock.stalled, pause_clocks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.link import STALL_MIN_S, LinkClock, LoopWatch
from coordinator.membership import MembershipConfig, NodeState
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import FleetCluster


@pytest.mark.parametrize(("tick", "turns", "expected"), [
    pytest.param(0.5, [0.0, 0.5, 1.0, 1.6], [None, None, None, None], id="on-pace"),
    pytest.param(0.5, [0.0, 0.5, 5.5], [None, None, None], id="at-the-limit-is-no-stall"),
    pytest.param(0.5, [0.0, 0.5, 60.5], [None, None, 59.5], id="a-minute-stalled-less-the-tick"),
    pytest.param(2.0, [0.0, 19.0, 41.0], [None, None, 20.0], id="ten-ticks-when-longer"),
])
def test_loop_watch(tick: float, turns: list[float], expected: list[float | None]) -> None:
    watch = LoopWatch.for_tick(tick)
    assert watch.limit_s == max(STALL_MIN_S, 10 * tick)
    assert [watch.turned(t) for t in turns] == expected


def test_a_stall_is_not_time_heard() -> None:
    link = LinkClock(started_at=0.0)
    link.connected(0.0, MembershipConfig())
    assert link.hearing(100.0, connected=True)[0]
    before = link.heard_for(200.0)
    link.stalled(50.0)
    assert link.heard_for(200.0) == pytest.approx(before - 50.0)
    link.disconnected(210.0)
    deaf = link.deaf_s
    link.stalled(5.0)  # deaf anyway: the outage counts that time already
    assert link.deaf_s == deaf


async def _until(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _jump(fc: FleetCluster, seconds: float) -> None:
    """Time moves on by `seconds` with no heartbeat heard; the engine's own loop (tick 0.05 s) runs rounds."""
    rounds = fc.coord.rounds
    fc.advance(seconds)
    await _until(lambda: fc.coord.rounds >= rounds + 3, "three rounds of the engine's loop")


async def test_a_stalled_loop_takes_no_node_for_silent(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=5, tick_s=0.05) as fc:
        fc.coord.monotonic = fc.clock  # the loop's own clock jumps with the stall
        ttl = fc.coord.cfg.membership.heartbeat_ttl_s
        await _until(lambda: fc.coord.rounds >= 2, "the loop turning")
        await _jump(fc, ttl + 15.0)
        assert {i.state for i in fc.coord.members.values()} == {NodeState.ONLINE}
        assert fc.coord.stalls == 1
        assert not [e for e in fc.coord.journal.events if e.reason == "NodeSuspect"]
        # the nodes are judged again from there: silent past the TTL after the stall, they are suspect
        await _jump(fc, 1.0)
        fc.coord.monotonic = lambda: fc.clock() - 1e6  # from here the loop keeps pace (no further stall)
        fc.coord._loop_watch.last = None
        await _jump(fc, ttl + 1.0)
        await _until(lambda: {i.state for i in fc.coord.members.values()} == {NodeState.SUSPECT}, "suspect nodes")


async def test_without_a_stall_silence_past_the_ttl_is_suspect(tmp_path: Path) -> None:
    """The control: the same jump of the wall clock while the loop kept its pace (its monotonic clock did not
    jump) is real silence."""
    async with fleet_memory.cluster(tmp_path, nodes=5, tick_s=0.05) as fc:
        ttl = fc.coord.cfg.membership.heartbeat_ttl_s
        await _until(lambda: fc.coord.rounds >= 2, "the loop turning")
        await _jump(fc, ttl + 15.0)
        assert fc.coord.stalls == 0
        await _until(lambda: {i.state for i in fc.coord.members.values()} == {NodeState.SUSPECT}, "suspect nodes")
