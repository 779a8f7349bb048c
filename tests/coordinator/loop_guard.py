"""A guard for tests: nothing may hold the event loop longer than a limit (issue 17, "nothing blocks the loop").

    with loop_guard.watch(limit_s=0.05) as guard:
        ...  # every callback and task step the loop runs meanwhile is timed
    # leaving the block raises LoopBlocked naming the culprits, if any step went over

Every callback the asyncio loop runs goes through `asyncio.events.Handle._run` (call_soon, call_later, I/O
readiness, and each step of a task); `watch` wraps it and measures each one's CPU time with `time.thread_time()`,
not wall time, so a loaded CI machine (another process holding the core) does not make a test fail. Time the cyclic
garbage collector spends inside a callback is subtracted and reported apart: a collection lands in whichever
callback happens to allocate, so it names no culprit (`gc_s` says how much there was).

A task step's culprit is named by its task (name, coroutine and where it is suspended now), since the Handle of a
step only says "Task.__step". `exempt` takes tasks whose steps are recorded but never fail the test (a test's own
body, which only drives a simulator and reads responses).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

LIMIT_S = 0.05
PROFILE_LINES = 25


@dataclass(frozen=True, slots=True)
class Step:
    """One callback the loop ran: what it was, and the CPU it took (without the garbage collector's)."""

    what: str
    cpu_s: float
    gc_s: float = 0.0
    exempt: bool = False
    profile: str = ""  # with `watch(profile=True)`, for a step over the limit: its functions by cumulative time

    def __str__(self) -> str:
        gc_note = f" (+{self.gc_s * 1000:.1f} ms gc)" if self.gc_s >= 0.001 else ""
        text = f"{self.cpu_s * 1000:.1f} ms CPU{gc_note}: {self.what}"
        return f"{text}\n{self.profile}" if self.profile else text


class LoopBlocked(AssertionError):
    """A callback held the loop longer than the limit."""

    def __init__(self, limit_s: float, culprits: list[Step]) -> None:
        self.limit_s = limit_s
        self.culprits = culprits
        shown = "\n  ".join(str(s) for s in culprits[:10])
        more = f"\n  ... and {len(culprits) - 10} more" if len(culprits) > 10 else ""
        super().__init__(f"{len(culprits)} callback(s) held the event loop longer than {limit_s * 1000:.0f} ms "
                         f"of CPU:\n  {shown}{more}")


def describe(handle: asyncio.Handle) -> str:
    """A callback's repr; for a task's step, the task (name, coroutine, where it waits now)."""
    callback: Any = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        where = ""
        frame = getattr(coro, "cr_frame", None)
        while frame is not None:  # the innermost of our coroutines (not asyncio's): where the step suspended
            path = frame.f_code.co_filename
            if "/asyncio/" not in path:
                where = f" now at {'/'.join(path.rsplit('/', 2)[-2:])}:{frame.f_lineno} ({frame.f_code.co_name})"
            coro = getattr(coro, "cr_await", None)
            frame = getattr(coro, "cr_frame", None)
        state = " (done)" if task.done() else where
        return f"task {task.get_name()!r} {name}{state}"
    return repr(handle)


@dataclass
class Guard:
    """What `watch` recorded: every step (`steps`), and those over the limit (`culprits`)."""

    limit_s: float
    exempt_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    steps: list[Step] = field(default_factory=list)
    gc_total_s: float = 0.0
    gc_longest_s: float = 0.0  # the longest single collection (a pause the loop took, whoever allocated)
    gc_longest_gen: int = -1  # its generation
    _gc_started: float | None = None
    _gc_in_step: float = 0.0

    @property
    def culprits(self) -> list[Step]:
        return sorted((s for s in self.steps if s.cpu_s > self.limit_s and not s.exempt), key=lambda s: -s.cpu_s)

    def longest(self, n: int = 5, *, include_exempt: bool = False) -> list[Step]:
        return sorted((s for s in self.steps if include_exempt or not s.exempt), key=lambda s: -s.cpu_s)[:n]

    def max_cpu_s(self) -> float:
        return max((s.cpu_s for s in self.steps if not s.exempt), default=0.0)

    def exempt(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.exempt_tasks.add(task)

    def check(self) -> None:
        """Raise LoopBlocked when any non-exempt step went over the limit."""
        if culprits := self.culprits:
            raise LoopBlocked(self.limit_s, culprits)

    def reset(self) -> None:
        self.steps.clear()

    # ---- the hooks -----------------------------------------------------------------------------------------

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        elif self._gc_started is not None:
            spent = time.thread_time() - self._gc_started
            self._gc_started = None
            self._gc_in_step += spent
            self.gc_total_s += spent
            if spent > self.gc_longest_s:
                self.gc_longest_s, self.gc_longest_gen = spent, int(info.get("generation", -1))

    def _record(self, handle: asyncio.Handle, cpu_s: float, profiler: cProfile.Profile | None = None) -> None:
        gc_s, self._gc_in_step = self._gc_in_step, 0.0
        own = max(0.0, cpu_s - gc_s)
        callback: Any = getattr(handle, "_callback", None)
        task = getattr(callback, "__self__", None)
        exempt = isinstance(task, asyncio.Task) and task in self.exempt_tasks
        # describing every step would cost more than most steps: only the ones worth reading
        what = describe(handle) if own > self.limit_s / 5 else ""
        profile = ""
        if profiler is not None and own > self.limit_s and not exempt:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(PROFILE_LINES)
            profile = "\n".join(line for line in out.getvalue().splitlines() if line.strip()
                                 and "{method 'disable'" not in line)
        self.steps.append(Step(what, own, gc_s, exempt, profile))


@contextmanager
def watch(limit_s: float = LIMIT_S, *, exempt: Iterable[asyncio.Task[Any] | None] = (),
          check: bool = True, profile: bool = False) -> Iterator[Guard]:
    """Time every callback the loop runs inside the block; on leaving it (without an exception already), raise
    LoopBlocked when one took more than `limit_s` of CPU (`check=False`: record only). `profile`: run each step
    under cProfile and keep, for the steps over the limit, where their time went (slower: for finding culprits,
    and its overhead counts in the CPU measured)."""
    guard = Guard(limit_s)
    for task in exempt:
        guard.exempt(task)
    original: Callable[[asyncio.Handle], None] = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        guard._gc_in_step = 0.0
        profiler = cProfile.Profile() if profile else None
        started = time.thread_time()
        try:
            if profiler is not None:
                profiler.enable()
                try:
                    original(handle)
                finally:
                    profiler.disable()
            else:
                original(handle)
        finally:
            guard._record(handle, time.thread_time() - started, profiler)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
    gc.callbacks.append(guard._on_gc)
    try:
        yield guard
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign,assignment]
        gc.callbacks.remove(guard._on_gc)
    if check:
        guard.check()
