"""coordinator.gc_pace: what survives a full collection is frozen (later full collections do not walk it), given back
once every THAW_S, and everything is given back when the last install goes. Through the real collector: a fresh pacer
per test, and every test leaves the process as it found it (nothing frozen)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from coordinator import gc_pace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def paced() -> Iterator[tuple[gc_pace._Pacer, Clock]]:
    gc.unfreeze()  # an earlier test (a broker, a coordinator) may have frozen objects: start from none, never skip
    clock = Clock()
    pacer = gc_pace._Pacer(clock)
    pacer.install()
    try:
        yield pacer, clock
    finally:
        while pacer.installs:
            pacer.uninstall()
        gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_install_freezes_what_the_process_holds(paced: tuple[gc_pace._Pacer, Clock]) -> None:
    assert gc.get_freeze_count() > 0


def test_survivors_of_a_full_collection_are_frozen_and_not_walked_again(
        paced: tuple[gc_pace._Pacer, Clock]) -> None:
    pacer, _ = paced
    kept = [Cycle() for _ in range(1000)]  # long-lived state the coordinator holds
    frozen = gc.get_freeze_count()
    gc.collect()
    assert pacer.freezes == 1
    assert gc.get_freeze_count() >= frozen + len(kept), "the survivors went to the permanent generation"
    assert all(gc.is_tracked(c) for c in kept)
    assert gc.get_count()[0] < 100  # nothing left in the young generation to walk


def test_a_dropped_frozen_object_is_still_freed_by_reference_counting(paced: tuple[gc_pace._Pacer, Clock]) -> None:
    class Plain:
        pass

    obj = Plain()
    ref = weakref.ref(obj)
    gc.collect()  # obj survives: frozen
    del obj
    assert ref() is None


def test_once_a_thaw_period_a_full_collection_walks_everything_and_frees_frozen_cycles(
        paced: tuple[gc_pace._Pacer, Clock]) -> None:
    pacer, clock = paced
    c = Cycle()
    ref = weakref.ref(c)
    gc.collect()  # c survives and is frozen
    del c
    gc.collect()
    assert ref() is not None, "a cycle among frozen objects waits for the thaw"
    clock.now += gc_pace.THAW_S
    gc.collect()  # this collection's end gives the permanent generation back
    assert pacer.thaws == 1 and gc.get_freeze_count() == 0
    gc.collect()  # the next full collection walks everything
    assert ref() is None


def test_installs_are_counted_and_the_last_uninstall_gives_everything_back(
        paced: tuple[gc_pace._Pacer, Clock]) -> None:
    pacer, _ = paced
    pacer.install()  # a second coordinator in the process
    pacer.uninstall()
    assert pacer._on_gc in gc.callbacks and gc.get_freeze_count() > 0
    pacer.uninstall()
    assert pacer._on_gc not in gc.callbacks and gc.get_freeze_count() == 0
