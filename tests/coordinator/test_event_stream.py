"""Event streams (GET /v1/events/stream) show an event only once it is committed: an event a leader recorded but
never wrote (it died, or lost the store) must not reach a client, whose resume id would then skip the event the
next leader records under the same sequence number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.store import SqliteStore
from coordinator.store.base import Op, StoreUnavailable
from tests.pair.fakebus import FakeBroker


class FlakyStore(SqliteStore):
    """A real SQLite store whose writes fail while `down` (an etcd without quorum)."""

    down = False

    async def txn(self, ops: Sequence[Op]) -> int:
        if self.down:
            raise StoreUnavailable("the store is down (test)")
        return await super().txn(ops)


@pytest.fixture
async def coord() -> Any:
    store = FlakyStore(":memory:")
    c = Coordinator(CoordinatorConfig(), store=store, mqtt=FakeBroker().client("coordinator@t"))  # type: ignore[arg-type]
    await c.start()
    yield c
    await c.stop()
    await store.close()


async def test_an_event_is_streamed_once_committed(coord: Coordinator) -> None:
    queue = coord.journal.listen_events()
    store: FlakyStore = coord.store  # type: ignore[assignment]
    async with coord._lock:  # no round in between: this test drives the flushes
        store.down = True
        first = coord.journal.event("Normal", "Test", "node/x", "recorded while the store is down")
        with pytest.raises(StoreUnavailable):
            await coord.journal.flush()
        assert queue.empty(), "streamed before it was committed"
        store.down = False
        await coord.journal.flush()
        assert queue.get_nowait() == first and queue.empty()
    coord.journal.unlisten_events(queue)


async def test_events_a_term_never_wrote_are_neither_listed_nor_replayed_and_their_ids_go_on_from_the_store(
        coord: Coordinator) -> None:
    store: FlakyStore = coord.store  # type: ignore[assignment]
    async with coord._lock:
        kept = coord.journal.event("Normal", "Test", "node/y", "committed")
        await coord.journal.flush()
        store.down = True
        lost = coord.journal.event("Normal", "Test", "node/z",
                                   "never written: the store lost quorum, then the term ended")
        with pytest.raises(StoreUnavailable):
            await coord.journal.flush()
        assert coord.journal.committed_events() == [kept]  # what GET /v1/events lists and a stream replays
        coord.journal.drop_uncommitted()  # what the loop does when this coordinator stops leading
        store.down = False
        await coord._read_state()  # as a follower, or as the next leader
        assert coord.journal.committed_events() == [kept] and coord.journal.events == [kept]
        again = coord.journal.event("Normal", "Test", "node/w", "the next event")
        assert again.seq == lost.seq  # the id the lost event had: nobody ever saw that one
        await coord.journal.flush()
        assert coord.journal.committed_events() == [kept, again]
