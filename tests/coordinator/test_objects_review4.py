"""Review 4 findings as tests that failed before their fixes, over both metadata implementations (in-memory and the
real StoreMetadata on SQLite) and fake storage nodes."""

from __future__ import annotations

import pytest

from coordinator.objects import EnvelopeSealer, StoreMetadata
from coordinator.secrets.envelope import Keyring
from coordinator.store import SqliteStore
from dataplane.objects.chunking import chunk_id
from dataplane.objects.model import BucketRecord, StorageNode
from dataplane.objects.ports import Metadata
from dataplane.objects.repair import GC_GRACE_S
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
