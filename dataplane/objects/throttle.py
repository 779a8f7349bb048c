"""`NodeLimited`: a `ChunkClient` that keeps the requests to any one storage node within what the node serves at once
(adapter around another ChunkClient).

Why: an S3 gateway under load (`aws s3 sync` uploads 10 objects at a time, each with `ObjectBackend.parallel` chunks in
flight, R copies each) sends many more chunk requests to a node than its chunk server takes from one peer at once
(`peer.Limits.per_peer`, 8). The server answers the extra ones "busy" at once; the writer then counted that node as
failed for the chunk and, with every node busy, the PUT failed "0 of 2 copies placeable". And requests that do get
in share the overlay connection's bandwidth, so with many of them a 1 MiB put overruns its deadline (10 s + 4 s at
the minimum rate) on a slow link. So requests to a node wait their turn here (`per_node` at a time; the deadline of
the underlying client starts only when a request runs), and a "busy" answer (another peer of the node keeps it
busy) is retried a few times after a short pause before it counts as a failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from dataplane.objects.ports import ChunkBusy, ChunkClient, ChunkUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
PER_NODE = 4  # below the chunk server's per-peer limit (8): room for the node's other work from this peer
BUSY_RETRIES = 4
BACKOFF_S = 0.25


def is_busy(exc: ChunkUnavailable) -> bool:
    """The node refused for want of room now, not for good (a quota, a bad id)."""
    return isinstance(exc, ChunkBusy) or exc.why.startswith("busy")  # the overlay client says "busy: ..."


class NodeLimited:
    def __init__(self, client: ChunkClient, *, per_node: int = PER_NODE, busy_retries: int = BUSY_RETRIES,
                 backoff_s: float = BACKOFF_S, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if per_node < 1:
            raise ValueError(f"per_node must be at least 1, got {per_node}")
        self._client, self.per_node = client, per_node
        self._retries, self._backoff, self._sleep = busy_retries, backoff_s, sleep
        self._gates: dict[str, asyncio.Semaphore] = {}
        self.waiting = 0  # requests queued behind others to the same node (for status/metrics)
        self.busy_answers = 0

    def _gate(self, node: str) -> asyncio.Semaphore:
        gate = self._gates.get(node)
        if gate is None:
            gate = self._gates[node] = asyncio.Semaphore(self.per_node)
        return gate

    async def _run(self, node: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self._retries + 1):
            gate = self._gate(node)
            self.waiting += 1
            try:
                await gate.acquire()
            finally:
                self.waiting -= 1
            try:
                return await call()
            except ChunkUnavailable as exc:
                if not is_busy(exc) or attempt == self._retries:
                    raise
                self.busy_answers += 1
            finally:
                gate.release()
            await self._sleep(self._backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        await self._run(node, lambda: self._client.put(node, chunk_id, data))

    async def get(self, node: str, chunk_id: str) -> bytes:
        return await self._run(node, lambda: self._client.get(node, chunk_id))

    async def delete(self, node: str, chunk_id: str) -> None:
        await self._run(node, lambda: self._client.delete(node, chunk_id))

    async def has(self, node: str, chunk_ids: Sequence[str]) -> frozenset[str]:
        return await self._run(node, lambda: self._client.has(node, chunk_ids))
