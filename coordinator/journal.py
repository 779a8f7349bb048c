"""The coordinator's journal (a mixin of `coordinator.service.Coordinator`): the store writes a round or a request
queues (`_pending_ops`), and the events that ride with them.

Writes are behind: state changes in memory first and is written in one or more transactions at the end of a round
(`_flush`), or right away for a request handler (`record_now`). An event is shown — listed over REST, replayed
to or streamed on /v1/events/stream — only once it is written, so an event a leader recorded but never wrote
(its store or its term lost) is never seen, and its id, which the next leader reuses, never skipped by a client
resuming from it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from coordinator import model
from coordinator.model import Event
from coordinator.store import Store, StoreError, put
from coordinator.store import delete as delete_op

log = logging.getLogger(__name__)
FLUSH_CHUNK = 100  # ops per store transaction (etcd's default limit is 128)
EVENT_RETENTION = 5000
EVENT_LISTENER_BACKLOG = 10_000  # events queued for one slow /v1/events/stream client before it is cut off


class Journal:
    store: Store
    clock: Callable[[], float]
    solo: bool
    _leading: bool
    _lock: asyncio.Lock
    _pending_ops: list[Any]
    _unstreamed: list[Event]  # recorded, streamed to listeners once their write is committed
    _committed_seq: int  # the newest event known to be in the store
    _event_seq: int
    events: list[Event]
    _event_listeners: set[asyncio.Queue[Event | None]]

    def _stream(self, ev: Event) -> None:
        for queue in list(self._event_listeners):
            if queue.qsize() >= EVENT_LISTENER_BACKLOG:  # a stalled stream is cut, never grows memory
                self._event_listeners.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(ev)

    def listen_events(self) -> asyncio.Queue[Event | None]:
        """A queue that receives every event recorded from now on; None means the listener fell more than
        EVENT_LISTENER_BACKLOG events behind and was cut off (re-list, then listen again). Call
        `unlisten_events` when done."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._event_listeners.add(queue)
        return queue

    def unlisten_events(self, queue: asyncio.Queue[Event | None]) -> None:
        self._event_listeners.discard(queue)

    def end_event_streams(self) -> None:
        for queue in self._event_listeners:
            queue.put_nowait(None)
        self._event_listeners.clear()

    def event(self, type_: str, reason: str, obj: str, message: str) -> Event:
        if not self.solo and not self._leading:  # only the leader records events; a follower just logs
            log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s %s: %s", reason, obj, message)
            return Event(seq=0, time=self.clock(), type=type_, reason=reason, object=obj, message=message[:1024])
        self._event_seq += 1
        ev = Event(seq=self._event_seq, time=self.clock(), type=type_, reason=reason, object=obj,
                   message=message[:1024])
        self.events.append(ev)
        self._pending_ops.append(put(model.event_key(ev.seq), model.to_json(ev)))
        if len(self.events) > EVENT_RETENTION:
            old = self.events.pop(0)
            self._pending_ops.append(delete_op(model.event_key(old.seq)))
        self._unstreamed.append(ev)  # streamed by _flush once written: never an event a failover could lose
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s %s: %s", reason, obj, message)
        return ev

    async def record_now(self, type_: str, reason: str, obj: str, message: str) -> None:
        """An event from a request handler, written before the handler answers (so a client listing events next
        sees it); with the store down it waits for the next round's write like any other."""
        self.event(type_, reason, obj, message)
        async with self._lock:
            with contextlib.suppress(StoreError):
                await self._flush()

    async def _flush(self) -> None:
        """Write the round's pending ops, in transactions of at most FLUSH_CHUNK ops (etcd refuses more than 128
        per transaction). They are unconditional puts and deletes, so a chunk that fails is kept and replayed next
        round: memory and the store must not drift apart because one write failed."""
        while self._pending_ops:
            chunk = self._pending_ops[:FLUSH_CHUNK]
            await self.store.txn(chunk)  # on failure the chunk (and the rest) stays queued
            del self._pending_ops[:len(chunk)]
        committed, self._unstreamed = self._unstreamed, []  # written now: safe to show, ids final
        for ev in committed:
            self._committed_seq = max(self._committed_seq, ev.seq)
            self._stream(ev)

    def committed_events(self) -> list[Event]:
        """The events known to be in the store (what REST lists and streams replay): an event recorded but not
        written yet may still be lost with this coordinator's term, and its id reused by the next leader."""
        return [e for e in self.events if e.seq <= self._committed_seq]

    def _drop_uncommitted(self) -> None:
        """This term is over: its unwritten ops and events are gone, and event ids go on from the store's."""
        self._pending_ops.clear()
        self._unstreamed.clear()
        self.events = self.committed_events()
        self._event_seq = self._committed_seq
