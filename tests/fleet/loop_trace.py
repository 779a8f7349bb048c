"""Run a program (`python -m tests.fleet.loop_trace OUT MODULE ARGS...`) with every event-loop step that takes longer
than TRACE_MS of wall time written to OUT, one line each: monotonic time, wall ms, CPU ms (this thread), garbage
collection ms within it, and what the step was (tests.coordinator.loop_guard.describe). What bench/fleet.py runs the
coordinator under with `--loop-trace FILE`: the loop guard's view of a real process meeting a real fleet, where
wall time also counts what the guard's CPU clock cannot see (an fsync, a lock, another thread holding the GIL).
"""

from __future__ import annotations

import asyncio
import gc
import os
import runpy
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tests.coordinator.loop_guard import describe

TRACE_MS = float(os.environ.get("CLOUDLESS_LOOP_TRACE_MS", "20"))


class _Trace:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.gc_s = 0.0
        self._gc_started: float | None = None

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            spent = time.perf_counter() - self._gc_started
            self._gc_started = None
            self.gc_s += spent
            if spent * 1000 >= TRACE_MS:
                self.out.write(f"{time.monotonic():.3f} gc generation {info.get('generation')} {spent * 1000:.1f} ms\n")

    def install(self) -> None:
        original: Callable[[asyncio.Handle], None] = asyncio.events.Handle._run
        trace = self

        def timed(handle: asyncio.Handle) -> None:
            trace.gc_s = 0.0
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                original(handle)
            finally:
                wall_ms = (time.perf_counter() - wall) * 1000
                if wall_ms >= TRACE_MS:
                    cpu_ms = (time.thread_time() - cpu) * 1000
                    trace.out.write(f"{time.monotonic():.3f} step {wall_ms:.1f} ms wall {cpu_ms:.1f} ms cpu "
                                    f"{trace.gc_s * 1000:.1f} ms gc: {describe(handle)[:300]}\n")
                    trace.out.flush()

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        gc.callbacks.append(self.on_gc)


def main() -> None:
    out_path, module, *args = sys.argv[1:]
    out = open(out_path, "a", buffering=1)  # open for the life of the process
    _Trace(out).install()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
