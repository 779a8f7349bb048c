"""A holder whose copy is gone, through the real OverlayChunkClient and the real ChunkServer over the agent's real
DiskChunkStore (in-memory streams stand in for the overlay): the MISSING answer must reach chunkio and the repairer
as a `ports.ChunkMissing`, so the holder is forgotten and repair copies from the good one. Before 76e6096 the
client's ChunkNotFound was no ChunkMissing and the empty holder stayed recorded as good for ever (review 4)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import cast

from dataplane.objects.chunking import chunk_id
from dataplane.objects.chunkio import ChunkIO
from dataplane.objects.model import BucketRecord, Manifest, StorageNode
from dataplane.objects.peer import ChunkServer, Limits, OverlayChunkClient
from dataplane.objects.ports import ChunkMissing
from dataplane.objects.repairer import Repairer
from dataplane.s3.backend import ObjectInfo
from edge_agent.chunks import DiskChunkStore
from tests.dataplane.objects.memory_metadata import MemoryMetadata


class Pipe:
    """The writing end of an in-memory stream: what is written is fed to `reader`."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def write(self, data: bytes) -> None:
        self.reader.feed_data(data)

    async def drain(self) -> None:
        return None

    def write_eof(self) -> None:
        self.reader.feed_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False


class Streams:
    """Opens a stream to a node's ChunkServer the way the overlay does, over in-memory pipes."""

    def __init__(self, servers: dict[str, ChunkServer]) -> None:
        self.servers = servers
        self.tasks: set[asyncio.Task[None]] = set()

    async def open_stream(self, node_id: str, service: str, *, timeout_s: float = 10.0,
                          early: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        to_server, to_client = asyncio.StreamReader(), asyncio.StreamReader()
        to_server.feed_data(early)
        task = asyncio.create_task(self.servers[node_id].handle(
            "s3@test", to_server, cast(asyncio.StreamWriter, Pipe(to_client))))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return to_client, cast(asyncio.StreamWriter, Pipe(to_server))


async def test_a_copy_gone_from_its_node_is_forgotten_and_repaired_through_the_real_client(tmp_path: Path) -> None:
    stores = {n: DiskChunkStore.open(tmp_path / n, quota=1 << 30, sync=False) for n in ("a", "b", "c")}
    client = OverlayChunkClient(Streams({n: ChunkServer(s, Limits()) for n, s in stores.items()}))
    nodes = [StorageNode(n, n, quota=1 << 30) for n in stores]
    meta = MemoryMetadata()
    io = ChunkIO(meta, client, lambda: nodes, lambda: 0.0)
    data = os.urandom(1000)
    cid = chunk_id(data)
    ref = await io.store(data, 2)
    await meta.create_bucket(BucketRecord("b", 0.0))
    await meta.commit_manifest("b", Manifest(ObjectInfo("k", len(data), "etag", 0.0), (ref,), 2))
    record = (await meta.get_chunks([cid]))[cid]
    assert len(record.holders) == 2
    gone, kept = sorted(record.holders)
    assert stores[gone].delete(cid)  # the copy is gone (a wiped disk, a copy the node's scrub dropped)
    try:
        await client.get(gone, cid)
    except ChunkMissing:
        pass
    else:
        raise AssertionError("a node without the copy must answer ChunkMissing")
    assert await io.fetch(ref, record) == data
    assert (await meta.get_chunks([cid]))[cid].holders == {kept}  # the empty holder is forgotten
    report = await Repairer(meta, client, lambda: nodes).repair_once(0.0)
    assert report.copied == 1
    after = (await meta.get_chunks([cid]))[cid]
    assert len(after.good()) == 2 and all(stores[n].get(cid) == data for n in after.good())
