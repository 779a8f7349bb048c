"""Review 4 findings as tests that failed before their fixes, over both metadata implementations (in-memory and the
real StoreMetadata on SQLite) and fake storage nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

import pytest

from coordinator.objects import EnvelopeSealer, StoreMetadata
from coordinator.secrets.envelope import Keyring
from coordinator.store import SqliteStore, StoreError
from dataplane.objects.chunking import ChunkRef, chunk_id
from dataplane.objects.model import BucketRecord, ChunkRecord, Manifest, StorageNode, Stripe
from dataplane.objects.ports import Metadata
from dataplane.objects.repair import GC_GRACE_S
from dataplane.objects.repairer import Repairer
from dataplane.objects.store import ObjectBackend
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import ErrorCode, S3Error
from tests.coordinator.secrets.builders import K1
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata

SEALER = EnvelopeSealer(lambda: Keyring.of(K1))
CHUNK = 1024


@pytest.fixture(params=["memory", "sqlite"])
async def metadata(request: pytest.FixtureRequest) -> Metadata:
    return MemoryMetadata() if request.param == "memory" else StoreMetadata(SqliteStore(":memory:"), SEALER)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _backend(metadata: Metadata, clock: Clock) -> tuple[ObjectBackend, FakeChunkClient]:
    client = FakeChunkClient([StorageNode(f"n{i}", f"z{i}", quota=1 << 30) for i in range(3)])
    return ObjectBackend(metadata, client, client.storage_nodes, chunk_size=CHUNK, parallel=1, clock=clock), client


async def test_an_upload_slower_than_the_gc_grace_does_not_commit_collected_chunks(metadata: Metadata) -> None:
    """H2: the first chunk is stored, the upload stalls past the grace, GC collects that chunk (unreferenced and
    untouched), then the upload finishes: the PUT must fail (503, retry), not return 200 for bytes that are gone."""
    clock = Clock()
    backend, client = _backend(metadata, clock)
    await metadata.create_bucket(BucketRecord("b", 0.0))
    first, second = b"1" * CHUNK, b"2" * 100
    staging = await backend.stage("b")
    assert not isinstance(staging, S3Error)
    await staging.write(first)
    await staging.write(b"")  # the first chunk is cut and stored once the next byte arrives
    await staging.write(second)
    clock.now += GC_GRACE_S + 60
    assert chunk_id(first) in await backend.collect_garbage()
    assert client.holders(chunk_id(first)) == set()
    refused = await staging.commit_object("b", ObjectInfo("k", CHUNK + 100, "etag", clock.now))
    assert isinstance(refused, S3Error) and refused.code is ErrorCode.SERVICE_UNAVAILABLE
    assert await metadata.get_manifest("b", "k") is None


async def test_a_slow_upload_whose_chunks_survived_commits_and_keeps_them(metadata: Metadata) -> None:
    """H2, the other side: a slow upload re-touches its chunks at the commit, so a GC right after spares them."""
    clock = Clock()
    backend, _client = _backend(metadata, clock)
    await metadata.create_bucket(BucketRecord("b", 0.0))
    staging = await backend.stage("b")
    assert not isinstance(staging, S3Error)
    await staging.write(b"x" * (CHUNK + 5))
    clock.now += GC_GRACE_S * 0.9  # slower than half the grace, GC not yet due
    assert await staging.commit_object("b", ObjectInfo("k", CHUNK + 5, "etag", clock.now)) is None
    record = (await metadata.get_chunks([chunk_id(b"x" * CHUNK)]))[chunk_id(b"x" * CHUNK)]
    assert record is not None and record.touched == clock.now


async def _turns_during(work: Awaitable[object]) -> int:
    """How many times another task ran on the loop while `work` ran (0: it held the loop throughout)."""
    turns = 0
    done = False

    async def ticker() -> None:
        nonlocal turns
        while not done:
            await asyncio.sleep(0)
            turns += 1

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is waiting for its first turn
    started = turns
    await work
    done = True
    await tick
    return turns - started


async def test_whole_listings_yield_to_the_event_loop_while_decoding() -> None:
    """M5: listing 1000 chunk records and manifests from the real StoreMetadata on SQLite (whose store answers without
    suspending) decodes them in slices, letting the loop serve S3 and MQTT in between; it held the loop before."""
    meta = StoreMetadata(SqliteStore(":memory:"), SEALER)
    await meta.create_bucket(BucketRecord("b", 0.0))
    ids = [chunk_id(str(i).encode()) for i in range(1000)]
    for cid in ids:
        await meta.update_chunk(cid, 10, add=["n0"], touched=1.0)
    for i in range(600):
        info = ObjectInfo(f"k{i}", 10, "etag", 1.0)
        await meta.commit_manifest("b", Manifest(info, (ChunkRef(ids[i], 10),), 2))
    assert await _turns_during(meta.list_chunks()) >= 3
    assert await _turns_during(meta.referenced_chunks()) >= 2
    assert await _turns_during(meta.list_manifests("b", "", "")) >= 2
    assert len(await meta.list_chunks()) == 1000 and len(await meta.referenced_chunks()) == 600


class CountingMetadata(MemoryMetadata):
    listed = 0

    async def list_chunks(self) -> list[ChunkRecord]:
        self.listed += 1
        return await super().list_chunks()


async def test_a_repair_pass_without_erasure_coded_chunks_lists_no_chunk_records() -> None:
    """M5: the stripe pass listed every chunk record (and every reference again) each pass, even with no erasure-coded
    bucket; it now works from the pass's own listing of the referenced chunks."""
    meta = CountingMetadata()
    clock = Clock()
    backend, client = _backend(meta, clock)
    await meta.create_bucket(BucketRecord("b", 0.0))
    staging = await backend.stage("b")
    assert not isinstance(staging, S3Error)
    await staging.write(b"y" * (3 * CHUNK))
    assert await staging.commit_object("b", ObjectInfo("k", 3 * CHUNK, "etag", clock.now)) is None
    report = await Repairer(meta, client, client.storage_nodes).repair_once(clock.now)
    assert meta.listed == 0
    assert report.stripes is not None and report.stripes.rebuilt == 0 and report.chunks == 1


class HangingClient(FakeChunkClient):
    """Puts of any chunk but `quick` wait until cancelled; the cancellations are counted."""

    def __init__(self, nodes: list[StorageNode], quick: str) -> None:
        super().__init__(nodes)
        self.quick, self.cancelled = quick, 0

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        if chunk_id != self.quick:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        await super().put(node, chunk_id, data)


class FailingMetadata(MemoryMetadata):
    """Recording a holder fails with a metadata error (etcd unreachable, say)."""

    async def update_chunk(self, chunk_id: str, size: int, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                           bad: Iterable[str] = (), touched: float | None = None,
                           stripe: Stripe | None = None) -> ChunkRecord:
        if tuple(add):
            raise StoreError("metadata store unreachable")
        return await super().update_chunk(chunk_id, size, add=add, remove=remove, bad=bad, touched=touched,
                                          stripe=stripe)


async def test_a_metadata_error_during_an_upload_cancels_the_other_chunk_writes() -> None:
    """L6: a metadata error while storing the first chunk propagates out of write(); the other chunks' writes, still
    in flight, are cancelled with it instead of running on with nobody waiting for them."""
    first = b"a" * CHUNK
    client = HangingClient([StorageNode(f"n{i}", f"z{i}", quota=1 << 30) for i in range(3)], chunk_id(first))
    meta = FailingMetadata()
    backend = ObjectBackend(meta, client, client.storage_nodes, chunk_size=CHUNK, parallel=3, clock=Clock())
    await meta.create_bucket(BucketRecord("b", 0.0))
    staging = await backend.stage("b")
    assert not isinstance(staging, S3Error)
    with pytest.raises(StoreError):
        await staging.write(first + b"b" * CHUNK + b"c" * CHUNK + b"d" * CHUNK + b"e")
    await asyncio.sleep(0)
    assert client.cancelled == 2 * 2  # chunks b and c, R = 2 puts each
