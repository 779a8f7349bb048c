"""Review 2 H2 and M1: the stall detector measures the event loop's lag (a watchdog task), not the length of a
round. A slow round on a live loop (a slow store write while heartbeats are served) pauses no clock, so a dead
node among heartbeating ones is still judged silent on time; a stall during a broker outage is counted once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from coordinator import membership
from coordinator.membership import NodeState
from tests.coordinator import fleet_memory
from tests.coordinator.fleet_memory import FleetCluster

SLOW_S = 6.0  # each round's journal flush takes this long (past the 5 s stall limit); the loop is live meanwhile
STEP_S = 0.25  # fleet time moves on in steps this long, each with the live nodes' heartbeats


async def _until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def fake_time(fc: FleetCluster) -> None:
    """The coordinator's monotonic clock and its watchdog's sleep run on fleet time (which the test moves)."""
    async def sleep(seconds: float) -> None:
        until = fc.clock() + seconds
        while fc.clock() < until:
            await asyncio.sleep(0.002)
    fc.coord.monotonic = fc.clock
    fc.coord._watch_sleep = sleep
    fc.coord._loop_watch.last = None
    assert fc.coord._watch_task is not None  # restarted: its sleep under way is on the real clock
    fc.coord._watch_task.cancel()
    fc.coord._watch_task = asyncio.create_task(fc.coord._watchdog())


async def test_slow_rounds_on_a_live_loop_pause_no_clock(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=5, tick_s=0.05) as fc:
        fake_time(fc)
        victim = sorted(fc.nodes)[0]
        fc.silence([victim])
        real_flush = fc.coord.journal.flush

        async def slow_flush() -> None:  # the write takes SLOW_S of fleet time; the loop serves others meanwhile
            until = fc.clock() + SLOW_S
            while fc.clock() < until:
                await asyncio.sleep(0.002)
            await real_flush()
        fc.coord.journal.flush = slow_flush  # type: ignore[method-assign]

        async def time_goes_on() -> None:  # the live nodes keep heartbeating as fleet time passes
            while True:
                fc.advance(STEP_S)
                await fc.heartbeat_all()
                await asyncio.sleep(0.005)
        ticker = asyncio.create_task(time_goes_on())
        try:
            silent_from = fc.coord.members[victim].last_seen
            ttl = membership.silence_ttl(fc.coord.members[victim], fc.coord.cfg.membership)
            await _until(lambda: fc.coord.members[victim].state is not NodeState.ONLINE
                         or fc.clock() - silent_from > 3 * ttl, "the silent node judged, or three TTLs")
            judged_after = fc.clock() - silent_from
        finally:
            ticker.cancel()
        assert fc.coord.members[victim].state is not NodeState.ONLINE, f"still online after {judged_after:.0f} s"
        # its TTL, plus at most the round running then and the next (a round flushes the journal twice)
        assert judged_after <= ttl + 4 * SLOW_S + 1.0
        assert fc.coord.stalls == 0
        assert {i.state for n, i in fc.coord.members.items() if n != victim} == {NodeState.ONLINE}


async def test_a_stalled_watchdog_still_counts_as_a_stall(tmp_path: Path) -> None:
    """The control: fleet time jumping with no turn of the loop at all (nothing heard) is a stall, paused."""
    async with fleet_memory.cluster(tmp_path, nodes=5, tick_s=0.05) as fc:
        fake_time(fc)
        ttl = fc.coord.cfg.membership.heartbeat_ttl_s
        await _until(lambda: fc.coord._loop_watch.last is not None, "the watchdog turning")
        fc.advance(3 * ttl)
        await _until(lambda: fc.coord.stalls == 1, "the stall noticed")
        for _ in range(3):
            await fc.round()
        assert {i.state for i in fc.coord.members.values()} == {NodeState.ONLINE}


async def test_a_stall_during_a_broker_outage_pauses_no_clock_twice(tmp_path: Path) -> None:
    async with fleet_memory.cluster(tmp_path, nodes=5, tick_s=0.05) as fc:
        fake_time(fc)
        coord = fc.coord
        coord.link.disconnected(fc.clock())  # the link is down: the outage will move every clock by all of it
        coord._loop_watch.last = fc.clock()
        before = {n: i.last_seen for n, i in coord.members.items()}
        fc.advance(60.0)  # the loop stalled for a minute within the outage
        coord._check_stall()
        assert coord.stalls == 1
        assert {n: i.last_seen for n, i in coord.members.items()} == before  # the outage counts it, once
