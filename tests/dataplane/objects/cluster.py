"""A small object store for repair tests: `ObjectBackend` and `Repairer` over fake storage nodes (two zones) and the
in-memory metadata, 1 KiB chunks, with helpers to put and read objects through the Backend port and to see where
copies really are."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from dataplane.objects.model import StorageNode
from dataplane.objects.repair import ChunkState
from dataplane.objects.repairer import Repairer, chunk_states
from dataplane.objects.store import ObjectBackend
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import S3Error
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata

CHUNK = 1024


class Cluster:
    def __init__(self, n: int = 4) -> None:
        self.client = FakeChunkClient([StorageNode(f"n{i}", f"z{i % 2}", quota=1 << 30) for i in range(n)])
        self.lost: set[str] = set()
        self.metadata = MemoryMetadata()
        self.backend = ObjectBackend(self.metadata, self.client, self.nodes, chunk_size=CHUNK, clock=lambda: 0.0)
        self.repairer = Repairer(self.metadata, self.client, self.nodes)

    def nodes(self) -> list[StorageNode]:
        return [replace(n, online=n.online and n.node_id not in self.lost) for n in self.client.storage_nodes()]

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        staging = await self.backend.stage(bucket)
        assert not isinstance(staging, S3Error)
        await staging.write(body)
        info = ObjectInfo(key, len(body), hashlib.md5(body).hexdigest(), 0.0)
        assert await staging.commit_object(bucket, info) is None

    async def read(self, bucket: str, key: str) -> bytes:
        info = await self.backend.head_object(bucket, key)
        assert isinstance(info, ObjectInfo)
        pieces = await self.backend.read_object(bucket, key, 0, info.size - 1)
        assert not isinstance(pieces, S3Error)
        return b"".join([p async for p in pieces])

    async def states(self) -> dict[str, ChunkState]:
        return await chunk_states(self.metadata)

    def good_online(self, state: ChunkState) -> set[str]:
        online = {n.node_id for n in self.nodes() if n.online}
        return {h for h in state.record.good() & online if state.record.id in self.client.nodes[h].chunks}
