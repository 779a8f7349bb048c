"""What the MQTT client holds while disconnected (pure core).

Theory of operation. Messages offered while the broker is unreachable wait here, bounded by count and bytes.
Three rules keep the bound without losing state silently:

1. A retained message supersedes a queued retained message on the same topic: state is level-triggered, so only
   the newest one matters (the older one's publisher is told `SUPERSEDED`). It takes no extra slot, but a bigger
   payload must still fit the byte bound, so rules 2 and 3 apply to the bytes it adds.
2. When full, the oldest *droppable* message (heartbeats) is dropped first (`DROPPED`).
3. When full of non-droppable messages, a new droppable message is dropped itself, and a new state message is
   *rejected*: `offer()` returns `Rejected`, and the adapter raises `OutboxFull` to the caller. Never silent.

Order is preserved (FIFO) apart from supersession, which keeps the original slot.

`offer()` decides before it mutates: it first plans what the new message would displace (the superseded message,
then the oldest droppable ones) and applies the plan only if the message then fits both bounds. A message that
cannot fit leaves the outbox untouched, so every message removed is also reported in `Queued.settled`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"  # handed to the broker (QoS 0) or acknowledged (QoS 1)
    SUPERSEDED = "superseded"  # a newer retained message for the same topic replaced it before it was sent
    DROPPED = "dropped"  # a droppable message discarded to make room


@dataclass(frozen=True, slots=True)
class Outgoing:
    ref: int  # the adapter's handle, to settle the publisher's future
    topic: str
    payload: bytes
    qos: int
    retain: bool
    droppable: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    settled: tuple[tuple[int, Outcome], ...] = ()  # other messages this offer settled (superseded/dropped)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


class Outbox:
    def __init__(self, *, max_messages: int = 1000, max_bytes: int = 4 * 1024 * 1024) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("outbox bounds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, Outgoing] = OrderedDict()
        self._retained_slot: dict[str, int] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def offer(self, msg: Outgoing) -> Queued | Rejected:
        if len(msg.payload) > self.max_bytes:
            return Rejected(f"a {len(msg.payload)}-byte message exceeds the outbox's {self.max_bytes} bytes")
        superseded = self._retained_slot.get(msg.topic) if msg.retain else None
        victims = self._victims_for(msg, superseded)
        if victims is None:  # rule 3; nothing was touched
            if msg.droppable:
                return Queued(((msg.ref, Outcome.DROPPED),))
            return Rejected(
                f"outbox full ({len(self._items)} messages, {self._bytes} bytes) of undeliverable state messages"
            )
        settled: list[tuple[int, Outcome]] = []
        if superseded is not None:  # rule 1
            self._replace(superseded, msg)
            settled.append((superseded, Outcome.SUPERSEDED))
        for ref in victims:  # rule 2
            self._remove(ref)
            settled.append((ref, Outcome.DROPPED))
        if superseded is None:
            self._items[msg.ref] = msg
            self._bytes += len(msg.payload)
            if msg.retain:
                self._retained_slot[msg.topic] = msg.ref
        return Queued(tuple(settled))

    def drain(self) -> list[Outgoing]:
        """Everything queued, oldest first; the outbox is empty afterwards."""
        items = list(self._items.values())
        self._items.clear()
        self._retained_slot.clear()
        self._bytes = 0
        return items

    def _victims_for(self, msg: Outgoing, superseded: int | None) -> list[int] | None:
        """The oldest droppable messages to drop so that `msg` fits (after `superseded` leaves), or None if it
        cannot fit even with every droppable message gone. Pure: decides, changes nothing."""
        count = len(self._items) + (0 if superseded is not None else 1)
        size = self._bytes + len(msg.payload)
        if superseded is not None:
            size -= len(self._items[superseded].payload)
        victims: list[int] = []
        candidates = (m for m in self._items.values() if m.droppable and m.ref != superseded)
        while count > self.max_messages or size > self.max_bytes:
            victim = next(candidates, None)
            if victim is None:
                return None
            victims.append(victim.ref)
            count -= 1
            size -= len(victim.payload)
        return victims

    def _remove(self, ref: int) -> None:
        old = self._items.pop(ref)
        self._bytes -= len(old.payload)
        if old.retain and self._retained_slot.get(old.topic) == ref:
            del self._retained_slot[old.topic]

    def _replace(self, old_ref: int, msg: Outgoing) -> None:
        # keep the original position in the queue, under the new ref
        items = list(self._items.items())
        old = self._items[old_ref]
        self._bytes += len(msg.payload) - len(old.payload)
        self._items = OrderedDict((msg.ref, msg) if ref == old_ref else (ref, m) for ref, m in items)
        self._retained_slot[msg.topic] = msg.ref
