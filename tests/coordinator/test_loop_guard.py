"""The loop guard (tests.coordinator.loop_guard) catches a callback or task step that holds the loop, names it, and
passes fast ones and work done in slices. Blocking is made of CPU time (`burn`), which is what the guard measures,
so these hold on a loaded machine."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from tests.coordinator import loop_guard
from tests.coordinator.loop_guard import LoopBlocked


def burn(seconds: float) -> None:
    """Hold the loop for at least `seconds` of this thread's CPU."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


def blocking_callback() -> None:
    burn(0.08)


async def blocking_step() -> None:
    await asyncio.sleep(0)
    burn(0.08)  # one step of this task holds the loop
    await asyncio.sleep(0)


async def sliced_work() -> None:
    for _ in range(6):
        burn(0.01)
        await asyncio.sleep(0)  # 60 ms in all, never more than 10 ms at a time


async def test_a_blocking_callback_fails_the_block_and_is_named() -> None:
    with pytest.raises(LoopBlocked) as info, loop_guard.watch(limit_s=0.05):
        asyncio.get_running_loop().call_soon(blocking_callback)
        await asyncio.sleep(0.01)
    (culprit,) = info.value.culprits
    assert "blocking_callback" in culprit.what and culprit.cpu_s >= 0.08
    assert "blocking_callback" in str(info.value) and "50 ms" in str(info.value)


async def test_a_blocking_task_step_is_named_by_its_task() -> None:
    with pytest.raises(LoopBlocked) as info, loop_guard.watch(limit_s=0.05):
        await asyncio.create_task(blocking_step(), name="the-slow-one")
    (culprit,) = info.value.culprits
    assert "'the-slow-one'" in culprit.what and "blocking_step" in culprit.what


async def test_fast_callbacks_and_sliced_work_pass() -> None:
    with loop_guard.watch(limit_s=0.05) as guard:
        loop = asyncio.get_running_loop()
        for _ in range(100):
            loop.call_soon(lambda: None)
        await asyncio.create_task(sliced_work())
        await asyncio.sleep(0.01)
    assert len(guard.steps) >= 100 + 6  # every callback and task step was seen
    assert guard.culprits == [] and guard.max_cpu_s() < 0.05
    assert sum(s.cpu_s for s in guard.steps) >= 0.06  # the sliced work was measured, in pieces


async def test_an_exempt_task_is_recorded_but_does_not_fail() -> None:
    with loop_guard.watch(limit_s=0.05, exempt=[asyncio.current_task()]) as guard:
        await asyncio.sleep(0)
        burn(0.08)  # the test's own body: a simulator, not the system under test
        await asyncio.sleep(0)
    assert guard.culprits == []
    assert guard.longest(1, include_exempt=True)[0].cpu_s >= 0.08 and guard.longest(1, include_exempt=True)[0].exempt


async def test_the_garbage_collector_is_reported_apart() -> None:
    junk = [[i] for i in range(50_000)]  # something for the collector to walk
    with loop_guard.watch(limit_s=0.05, check=False) as guard:
        asyncio.get_running_loop().call_soon(gc.collect)
        await asyncio.sleep(0.01)
    del junk
    assert guard.gc_total_s > 0
    assert any(s.gc_s > 0 for s in guard.steps)


async def test_the_loop_is_restored_even_when_the_block_fails() -> None:
    original = asyncio.events.Handle._run
    with pytest.raises(RuntimeError), loop_guard.watch():
        raise RuntimeError("boom")
    assert asyncio.events.Handle._run is original
    assert not any(getattr(cb, "__self__", None).__class__ is loop_guard.Guard for cb in gc.callbacks)


async def test_a_profiled_culprit_says_where_its_time_went() -> None:
    with loop_guard.watch(limit_s=0.05, check=False, profile=True) as guard:
        asyncio.get_running_loop().call_soon(blocking_callback)
        asyncio.get_running_loop().call_soon(lambda: None)
        await asyncio.sleep(0.01)
    (culprit,) = guard.culprits
    assert "burn" in culprit.profile and "burn" in str(culprit)
    assert all(not s.profile for s in guard.steps if s is not culprit)  # only the culprits keep one
