"""`NodeLimited`: requests to one node wait their turn (at most `per_node` at once), a "busy" answer is retried after a
pause, other refusals are not. And the finding it fixes, with real overlays and the agent's real disk store: 24
concurrent chunk puts from one peer to one node (what a gateway uploading several objects at once sends) were
answered "busy" past the server's 8 per peer and failed; through NodeLimited every one is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from dataplane.objects.peer import OverlayChunkClient
from dataplane.objects.ports import ChunkBusy, ChunkUnavailable
from dataplane.objects.throttle import NodeLimited
from tests.dataplane.objects.test_peer_overlay import chunk, make_lab


class Recording:
    """A ChunkClient that records how many requests run at once per node, and fails as told."""

    def __init__(self, *, busy_first: int = 0, refuse: bool = False) -> None:
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.busy_left, self.refuse = busy_first, refuse
        self.calls = 0

    async def _call(self, node: str) -> None:
        self.calls += 1
        self.running[node] = self.running.get(node, 0) + 1
        self.peak[node] = max(self.peak.get(node, 0), self.running[node])
        try:
            await asyncio.sleep(0.01)
            if self.refuse:
                raise ChunkUnavailable(node, "c", "quota: full")
            if self.busy_left > 0:
                self.busy_left -= 1
                raise ChunkBusy(node, "c", "busy: 8 requests in progress")
        finally:
            self.running[node] -= 1

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        await self._call(node)

    async def get(self, node: str, chunk_id: str) -> bytes:
        await self._call(node)
        return b""

    async def delete(self, node: str, chunk_id: str) -> None:
        await self._call(node)

    async def has(self, node: str, chunk_ids: Sequence[str]) -> frozenset[str]:
        await self._call(node)
        return frozenset()


async def _no_sleep(_s: float) -> None:
    await asyncio.sleep(0)


async def test_requests_to_one_node_wait_their_turn() -> None:
    inner = Recording()
    client = NodeLimited(inner, per_node=3, sleep=_no_sleep)
    await asyncio.gather(*(client.put(node, "c", b"") for node in ("a", "b") for _ in range(10)))
    assert inner.peak == {"a": 3, "b": 3} and inner.calls == 20 and client.waiting == 0


async def test_busy_is_retried_and_other_refusals_are_not() -> None:
    inner = Recording(busy_first=2)
    client = NodeLimited(inner, sleep=_no_sleep)
    await client.put("a", "c", b"")
    assert inner.calls == 3 and client.busy_answers == 2
    always = NodeLimited(Recording(busy_first=99), busy_retries=2, sleep=_no_sleep)
    with pytest.raises(ChunkBusy):
        await always.get("a", "c")
    refused = Recording(refuse=True)
    with pytest.raises(ChunkUnavailable, match="quota"):
        await NodeLimited(refused, sleep=_no_sleep).delete("a", "c")
    assert refused.calls == 1


async def test_many_concurrent_puts_to_one_real_node_all_land(tmp_path: Path) -> None:
    lab = await make_lab(tmp_path)
    try:
        client = NodeLimited(OverlayChunkClient(lab.a))
        chunks = [chunk(i) for i in range(24)]
        results = await asyncio.gather(*(client.put("b", cid, data) for cid, data in chunks),
                                       return_exceptions=True)
        assert [r for r in results if r is not None] == []
        assert lab.store_b.has([cid for cid, _ in chunks]) == {cid for cid, _ in chunks}
    finally:
        await lab.stop()
