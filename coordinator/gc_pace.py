"""The cyclic garbage collector paced for a coordinator that holds a fleet (adapter; issue 17: /healthz p99 <= 50 ms).

A full (generation 2) collection walks every tracked object of the process. With 5,000 nodes and 2,500 replicas
in memory that is 100-215 ms during which the event loop serves nobody — heartbeats, REST, the MQTT keep-alive —
and it came every few seconds while a fleet joined or a big apply was written. Almost everything it walks is the
coordinator's long-lived state (node records, replica records, specs, the modules), which it never frees.

So, in the spirit of Instagram's `gc.freeze()` (CPython docs: "gc.freeze ... to avoid ... collections"):
- `install()` freezes what the process holds at start (modules, the loaded state; no collection first: that
  would cost every start a full pause, and startup garbage cycles wait for the thaw like any other);
- after every full collection, what survived it is frozen too (moved to the permanent generation, which no
  collection walks): the next full collection walks only what became long-lived since, a pause proportional to
  the churn, not to the fleet;
- frozen objects are still freed by reference counting when dropped (a replaced node record, a deleted
  replica); only garbage *cycles* among frozen objects wait. Every `THAW_S` the permanent generation is given
  back (`gc.unfreeze()`), so the next full collection walks everything once and frees such cycles: one long
  pause an hour instead of one every few seconds.

Process-wide: the collector is one per interpreter. Installs are counted (several coordinators in one test
process), and the last `uninstall()` removes the callback and thaws what was frozen.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

THAW_S = 3600.0  # how often the frozen objects are given back to one full collection


class _Pacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.installs = 0
        self.thawed_at = 0.0
        self.freezes = 0  # full collections whose survivors were frozen (for tests and metrics)
        self.thaws = 0

    def install(self) -> None:
        self.installs += 1
        if self.installs > 1:
            return
        gc.freeze()
        self.thawed_at = self.clock()
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self.installs == 0:
            return
        self.installs -= 1
        if self.installs:
            return
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self.clock()
        if now - self.thawed_at >= THAW_S:  # the next full collection walks everything once again
            self.thawed_at = now
            self.thaws += 1
            gc.unfreeze()
            return
        self.freezes += 1
        gc.freeze()  # the survivors of this collection: no later collection walks them (until the thaw)


pacer = _Pacer()


def install() -> None:
    """Pace the collector for this process (idempotent per install; see the module's doc)."""
    pacer.install()


def uninstall() -> None:
    pacer.uninstall()
