"""The coordinator's journal (adapter, composed into the engine): the store writes a round or a request queues
(`queue`), and the events that ride with them.

Writes are behind: state changes in memory first and is written in one or more transactions at the end of a round
(`flush`), or right away for a request handler (`record_now`). An event is shown — listed over REST, replayed
to or streamed on /v1/events/stream — only once it is written, so an event a leader recorded but never wrote
(its store or its term lost) is never seen, and its id, which the next leader reuses, never skipped by a client
resuming from it."""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable

from coordinator import model
from coordinator.damper import Damper, is_churn, is_security
from coordinator.model import Event
from coordinator.store import Op, Store, StoreError, put
from coordinator.store import delete as delete_op

log = logging.getLogger(__name__)
FLUSH_CHUNK = 100  # ops per store transaction (etcd's default limit is 128)
EVENT_RETENTION = 5000  # churn events (presence, placement, rollouts) kept
SECURITY_RETENTION = 2000  # security events (coordinator.damper.is_security), kept apart: churn never evicts them
EVENT_DAMP_S = 10.0  # one event per (object, reason) per this long; the next one counts the repeats left out
EVENT_LISTENER_BACKLOG = 10_000  # events queued for one slow /v1/events/stream client before it is cut off


def retained(events: list[Event]) -> list[Event]:
    """The events kept of those read back, in id order: the newest of each class within its own bound."""
    events = sorted(events, key=lambda ev: ev.seq)
    security = [e for e in events if is_security(e.reason)][-SECURITY_RETENTION:]
    churn = [e for e in events if not is_security(e.reason)][-EVENT_RETENTION:]
    return sorted(security + churn, key=lambda ev: ev.seq)


_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(Event))


def event_json(ev: Event) -> bytes:
    """model.to_json(ev), byte for byte, without dataclasses.asdict's deep copy (a round that replaces 250
    replicas records 500 events)."""
    return json.dumps({name: getattr(ev, name) for name in _EVENT_FIELDS}, sort_keys=True,
                      separators=(",", ":")).encode()


class Journal:
    """`recording()` says whether this process records events now (the only coordinator, or the acting leader):
    a follower only logs them. `lock` is the engine's lock, taken by `record_now`."""

    def __init__(self, store: Store, *, clock: Callable[[], float], lock: asyncio.Lock,
                 recording: Callable[[], bool]) -> None:
        self.store = store
        self.clock = clock
        self.lock = lock
        self.recording = recording
        self.pending: list[Op] = []
        self._events: list[Event] = []
        self._per_class = {True: 0, False: 0}  # events held, security and not: eviction never rescans the list
        # each class's event ids, oldest first: the oldest of a class is found by bisection on the id-ordered list
        # (a scan went past up to 2,000 security events for every churn event: ~0.2 ms each in a mass loss)
        self._seqs: dict[bool, collections.deque[int]] = {True: collections.deque(), False: collections.deque()}
        self._unstreamed: list[Event] = []  # recorded, streamed to listeners once their write is committed
        self._committed_seq = 0  # the newest event known to be in the store
        self._event_seq = 0
        self._listeners: set[asyncio.Queue[Event | None]] = set()
        self._saved: tuple[list[Event], int] = ([], 0)  # events and the event id at `begin`
        self._damper = Damper(interval_s=EVENT_DAMP_S, max_keys=4096)

    def queue(self, op: Op) -> None:
        """A store write for the next flush."""
        self.pending.append(op)

    def load(self, events: list[Event], *, stream_new: bool) -> None:
        """The store's events (re)read: they are committed; with `stream_new`, those newer than the last known
        go to the event streams (the first read is history, not news)."""
        seen = self._committed_seq
        self.events = events
        self._committed_seq = max([seen, *(ev.seq for ev in events)])
        self._event_seq = self._committed_seq
        if stream_new:
            for ev in events:
                if ev.seq > seen:
                    self._stream(ev)

    def _stream(self, ev: Event) -> None:
        for queue in list(self._listeners):
            if queue.qsize() >= EVENT_LISTENER_BACKLOG:  # a stalled stream is cut, never grows memory
                self._listeners.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(ev)

    def listen_events(self) -> asyncio.Queue[Event | None]:
        """A queue that receives every event recorded from now on; None means the listener fell more than
        EVENT_LISTENER_BACKLOG events behind and was cut off (re-list, then listen again). Call
        `unlisten_events` when done."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unlisten_events(self, queue: asyncio.Queue[Event | None]) -> None:
        self._listeners.discard(queue)

    def end_event_streams(self) -> None:
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()

    def event(self, type_: str, reason: str, obj: str, message: str, *, about: str = "") -> Event:
        """Record an event. A churn event (coordinator.damper.is_churn) is damped per (object, reason, `about`):
        `about` narrows it (one node's path to one peer, one replica) so one noisy thing does not hide the others."""
        if not self.recording():  # only the leader records events; a follower just logs
            log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s %s: %s", reason, obj, message)
            return Event(seq=0, time=self.clock(), type=type_, reason=reason, object=obj, message=message[:1024])
        now, security = self.clock(), is_security(reason)
        if is_churn(reason):  # a node flapping 2,600 times in 18 s is a handful of events, each counting the rest
            left_out = self._damper.allow(f"{obj}\0{reason}\0{about}", now)
            if left_out is None:
                log.debug("%s %s: %s (damped)", reason, obj, message)
                return Event(seq=0, time=now, type=type_, reason=reason, object=obj, message=message[:1024])
            if left_out:
                message = f"{message[:900]} (and {left_out:,} more like it since the last one)"
        self._event_seq += 1
        ev = Event(seq=self._event_seq, time=now, type=type_, reason=reason, object=obj, message=message[:1024])
        self.events.append(ev)
        self._seqs[security].append(ev.seq)
        self.pending.append(put(model.event_key(ev.seq), event_json(ev)))
        self._evict(security)
        self._unstreamed.append(ev)  # streamed by flush once written: never an event a failover could lose
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s %s: %s", reason, obj, message)
        return ev

    @property
    def events(self) -> list[Event]:
        return self._events

    @events.setter
    def events(self, events: list[Event]) -> None:
        self._events = events
        self._seqs = {True: collections.deque(), False: collections.deque()}
        for e in events:
            self._seqs[is_security(e.reason)].append(e.seq)
        security = len(self._seqs[True])
        self._per_class = {True: security, False: len(events) - security}

    def _evict(self, security: bool) -> None:
        """Past its class's bound, the oldest event of the same class goes (security and churn are bounded apart).
        Runs for every event: a count decides, and the search stops at the oldest of that class."""
        self._per_class[security] += 1
        if self._per_class[security] <= (SECURITY_RETENTION if security else EVENT_RETENTION):
            return
        events, seqs = self._events, self._seqs[security]
        seq = seqs.popleft() if seqs else -1
        index = bisect.bisect_left(events, seq, key=lambda e: e.seq)
        if index >= len(events) or events[index].seq != seq:  # not in id order after all: the scan
            index = next(i for i, e in enumerate(events) if is_security(e.reason) == security)
        old = events.pop(index)
        self._per_class[security] -= 1
        self.pending.append(delete_op(model.event_key(old.seq)))

    async def record_now(self, type_: str, reason: str, obj: str, message: str) -> None:
        """An event from a request handler, written before the handler answers (so a client listing events next
        sees it); with the store down it waits for the next round's write like any other."""
        self.event(type_, reason, obj, message)
        async with self.lock:
            with contextlib.suppress(StoreError):
                await self.flush()

    async def flush(self, *, sliced: bool = False) -> None:
        """Write the round's pending ops, in transactions of at most FLUSH_CHUNK ops (etcd refuses more than 128
        per transaction). They are unconditional puts and deletes, so a chunk that fails is kept and replayed next
        round: memory and the store must not drift apart because one write failed. `sliced` (a round's flush, not
        a request's all-or-nothing commit): the loop serves others between transactions (a mass loss is thousands
        of events and evictions to write, and SQLite writes on the loop's thread)."""
        while self.pending:
            chunk = self.pending[:FLUSH_CHUNK]
            await self.store.txn(chunk)  # on failure the chunk (and the rest) stays queued
            del self.pending[:len(chunk)]
            if sliced and self.pending:
                await asyncio.sleep(0)
        committed, self._unstreamed = self._unstreamed, []  # written now: safe to show, ids final
        for ev in committed:
            self._committed_seq = max(self._committed_seq, ev.seq)
            self._stream(ev)

    async def begin(self) -> None:
        """Start a request's all-or-nothing write (under the engine's lock): first write what is already pending
        (a StoreError here means nothing of the request has happened yet), so every op and event queued from now
        until `commit` is the request's own."""
        await self.flush()
        self._saved = (list(self.events), self._event_seq)

    async def commit(self, undo: Callable[[], None]) -> None:
        """Write the request's changes now, or none of them. On a StoreError (a full disk, no quorum) the ops and
        events queued since `begin` are dropped and `undo` puts the in-memory state back before the error goes up:
        an API that answered "503, retry" must not have the change take effect later, when a round writes what
        was left pending (issue 16: applies refused on a full disk were applied once space came back)."""
        try:
            await self.flush()
        except StoreError:
            self.pending.clear()
            self._unstreamed.clear()
            self.events, self._event_seq = self._saved
            undo()
            raise

    def committed_events(self) -> list[Event]:
        """The events known to be in the store (what REST lists and streams replay): an event recorded but not
        written yet may still be lost with this coordinator's term, and its id reused by the next leader."""
        return [e for e in self.events if e.seq <= self._committed_seq]

    def drop_uncommitted(self) -> None:
        """This term is over: its unwritten ops and events are gone, and event ids go on from the store's."""
        self.pending.clear()
        self._unstreamed.clear()
        self.events = self.committed_events()
        self._event_seq = self._committed_seq
