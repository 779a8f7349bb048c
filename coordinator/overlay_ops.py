"""What the REST layer asks of the overlay (adapter, composed into the engine): keep a connection between two nodes
(`connect`, persisted until `disconnect`), and probe one (`ping`: the pair is wanted for a while, the first node is
asked over MQTT to reach the second and answers with the path and round-trip times).

The decisions (which directory each node gets, who dials) are coordinator.overlay's; this module changes the book
under the engine's lock, persists kept pairs with an event in one store transaction, and wakes the loop so the
directories go out in the next round."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from broker import wire
from broker.errors import WireError
from broker.wire import CommandName, CommandReply, OverlayPingResult
from broker.wire.schema import compile_schema
from coordinator.cluster import Cluster
from coordinator.errors import CoordinatorError
from coordinator.operations import CommandFailed, NotFound, Recorder
from coordinator.overlay import PROBE_PAIR_S, OverlayBook, pair
from coordinator.store import delete as delete_op
from coordinator.store import put

PAIRS_PREFIX = "/overlay/pairs/"
MAX_PING_COUNT = 100
CONNECT_WAIT_S = 15.0  # how long a ping gives the two nodes to get their directories and connect


class BadRequest(CoordinatorError):
    """A 400: the request names something that cannot be (a node with itself, a count out of range)."""


def pair_key(a: str, b: str) -> str:
    x, y = pair(a, b)
    return f"{PAIRS_PREFIX}{x}/{y}"


def pairs_from_store(entries: list[tuple[str, bytes]]) -> dict[tuple[str, str], str]:
    """Stored kept pairs -> {pair: why}; an entry that does not parse is skipped (never fails the load)."""
    out = {}
    for key, value in entries:
        parts = key[len(PAIRS_PREFIX):].split("/")
        if len(parts) != 2 or not all(wire.valid_id(p) for p in parts) or parts[0] == parts[1]:
            continue
        try:
            why = str(json.loads(value).get("why", ""))[:200]
        except (ValueError, AttributeError):
            why = ""
        out[pair(parts[0], parts[1])] = why
    return out


class NodeCommander(Protocol):
    async def command_node(self, node_id: str, name: CommandName, *, args: dict[str, str] | None = None,
                           argv: tuple[str, ...] = (), timeout_s: float = 10.0) -> CommandReply: ...


class OverlayOps:
    def __init__(self, book: OverlayBook, cluster: Cluster, journal: Recorder, *, commander: NodeCommander,
                 clock: Callable[[], float], lock: asyncio.Lock, wake: Callable[[], None]) -> None:
        self.book = book
        self.cluster = cluster
        self.journal = journal
        self.commander = commander
        self.clock = clock
        self.lock = lock
        self.wake = wake

    def _known(self, *nodes: str) -> None:
        for n in nodes:
            if n not in self.cluster.members:
                raise NotFound(f"node {n} not found")
        if len(nodes) == 2 and nodes[0] == nodes[1]:
            raise BadRequest(f"a node cannot be its own peer ({nodes[0]})")

    async def connect(self, a: str, b: str, *, why: str = "cloudless overlay connect") -> bool:
        """Keep a connection between a and b (until disconnect). True if it was not kept before."""
        async with self.lock:
            self._known(a, b)  # under the lock: a concurrent delete node cannot leave a pair behind
            await self.journal.begin()
            before = self.book.wants.get(pair(a, b))
            new = self.book.want(a, b, until=None, why=why)
            self.journal.queue(put(pair_key(a, b), json.dumps({"why": why, "since": self.clock()}).encode()))
            x, y = pair(a, b)
            self.journal.event("Normal", "OverlayConnect", f"node/{x}", f"{x} <-> {y}: connection kept ({why})")

            def undo() -> None:
                if before is None:
                    self.book.unwant(a, b)
                else:
                    self.book.put_want(pair(a, b), before)
            await self.journal.commit(undo=undo)
        self.wake()
        return new

    async def disconnect(self, a: str, b: str) -> bool:
        """Stop keeping a connection between a and b. False if it was not kept."""
        if a == b:
            raise BadRequest(f"a node cannot be its own peer ({a})")
        async with self.lock:
            want = self.book.wants.get(pair(a, b))
            if want is None or want.until is not None:
                return False
            await self.journal.begin()
            self.book.unwant(a, b)
            self.journal.queue(delete_op(pair_key(a, b)))
            x, y = pair(a, b)
            self.journal.event("Normal", "OverlayDisconnect", f"node/{x}", f"{x} <-> {y}: connection no longer kept")

            def undo() -> None:
                self.book.put_want(pair(a, b), want)
            await self.journal.commit(undo=undo)
        self.wake()
        return True

    async def ping(self, a: str, b: str, *, count: int = 5, timeout_s: float = 30.0) -> OverlayPingResult:
        """Ask node a to reach node b over the overlay and measure `count` round trips. The pair is wanted for
        PROBE_PAIR_S, so the directories go out; the node waits for its connection within the command's time."""
        if not 1 <= count <= MAX_PING_COUNT:
            raise BadRequest(f"count: {count} is not within 1..{MAX_PING_COUNT}")
        self._known(a, b)
        for n in (a, b):
            report = self.book.reports.get(n)
            if report is not None and not report.enabled:
                raise CommandFailed(f"node {n} runs no overlay: {report.disabled or 'switched off'}")
        async with self.lock:
            self.book.want(a, b, until=self.clock() + PROBE_PAIR_S, why="cloudless overlay ping")
        self.wake()
        reply = await self.commander.command_node(a, CommandName.OVERLAY_PING, args={"peer": b, "count": str(count)},
                                                  timeout_s=timeout_s)
        if not reply.ok:
            raise CommandFailed(f"node {a}: {reply.error or 'overlay ping failed'}")
        try:
            result = parse_ping_result(reply.output)
        except (ValueError, WireError, RecursionError) as exc:
            raise CommandFailed(f"node {a} answered something that is not a ping result: {str(exc)[:200]}") from None
        if result.peer != b:
            raise CommandFailed(f"node {a} answered a ping of {result.peer}, not of {b}")
        return result

    def rows(self, node_id: str | None = None) -> list[dict[str, Any]]:
        if node_id is not None and node_id not in self.cluster.members and node_id not in self.book.reports:
            raise NotFound(f"node {node_id} not found")
        return self.book.peer_rows(node_id)


def parse_ping_result(output: bytes) -> OverlayPingResult:
    """The JSON an agent answers an overlay-ping with, checked by the wire's own rules (a node's answer is input)."""
    doc = json.loads(output.decode("utf-8", errors="replace") or "null")
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    result: OverlayPingResult = compile_schema(OverlayPingResult).from_plain(doc)
    return result


def ping_json(result: OverlayPingResult) -> dict[str, Any]:
    """The REST shape of a ping result (camelCase like the rest of the API)."""
    return {"peer": result.peer, "path": result.path.value, "relay": result.relay, "address": result.address,
            "rttsMs": list(result.rtts_ms), "connectMs": result.connect_ms, "error": result.error}
