"""In-memory `ChunkClient` (dataplane.objects.ports) over several fake storage nodes, with faults injectable per
node: `down` (every call raises ChunkUnavailable, as an unreachable node does) and `corrupt(node, id)` (flips a byte of
the stored copy, as bit rot does). Counts calls so a test can see which node served what."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from dataplane.objects.chunking import chunk_id as hash_id
from dataplane.objects.model import StorageNode
from dataplane.objects.ports import ChunkMismatch, ChunkMissing, ChunkUnavailable


@dataclass
class FakeNode:
    node: StorageNode
    chunks: dict[str, bytes] = field(default_factory=dict)
    down: bool = False


class FakeChunkClient:
    def __init__(self, nodes: Sequence[StorageNode], *, verifying: bool = False) -> None:
        self.verifying = verifying  # check the bytes as the overlay client does: a bad copy raises ChunkMismatch
        self.nodes = {n.node_id: FakeNode(n) for n in nodes}
        self.gets: Counter[tuple[str, str]] = Counter()  # (node, chunk id)
        self.puts: Counter[str] = Counter()

    def storage_nodes(self) -> list[StorageNode]:
        """What placement sees: each node with its used bytes; a down node is offline."""
        return [replace(f.node, used=sum(len(c) for c in f.chunks.values()), online=f.node.online and not f.down)
                for f in self.nodes.values()]

    def _node(self, node: str, chunk_id: str) -> FakeNode:
        fake = self.nodes.get(node)
        if fake is None or fake.down:
            raise ChunkUnavailable(node, chunk_id, "unreachable")
        return fake

    def corrupt(self, node: str, chunk_id: str) -> None:
        data = bytearray(self.nodes[node].chunks[chunk_id])
        data[len(data) // 2] ^= 0x01
        self.nodes[node].chunks[chunk_id] = bytes(data)

    def holders(self, chunk_id: str) -> set[str]:
        return {n for n, f in self.nodes.items() if chunk_id in f.chunks}

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        fake = self._node(node, chunk_id)
        self.puts[node] += 1
        fake.chunks[chunk_id] = bytes(data)

    async def get(self, node: str, chunk_id: str) -> bytes:
        fake = self._node(node, chunk_id)
        self.gets[node, chunk_id] += 1
        data = fake.chunks.get(chunk_id)
        if data is None:
            raise ChunkMissing(node, chunk_id, "no such chunk")
        if self.verifying and hash_id(data) != chunk_id:
            raise ChunkMismatch(node, chunk_id, "the bytes received do not hash to the id")
        return data

    async def delete(self, node: str, chunk_id: str) -> None:
        self._node(node, chunk_id).chunks.pop(chunk_id, None)

    async def has(self, node: str, chunk_ids: Sequence[str]) -> frozenset[str]:
        fake = self._node(node, "")
        return frozenset(i for i in chunk_ids if i in fake.chunks)
