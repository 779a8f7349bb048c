"""Review 3's findings on the object store's metadata, each as the test that failed before its fix:
H2 (GC lists manifests and parts at two moments and misses a multipart completion between them), M5
(CompleteMultipartUpload checked on one part list and built from another), M9 (access-key secrets in plaintext),
L9 (deleting a missing key said EXISTS)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

import pytest

from coordinator.objects import EnvelopeSealer, StoreMetadata
from coordinator.secrets.envelope import Keyring
from coordinator.store import Entry, SqliteStore, StoreError, put
from dataplane.objects.chunking import ChunkRef, chunk_id
from dataplane.objects.model import AccessKey, BucketRecord, PartRecord
from dataplane.objects.ports import Metadata, Outcome
from dataplane.objects.store import ObjectBackend
from dataplane.s3.backend import ObjectInfo, PartInfo, UploadInfo
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.multipart import multipart_etag
from tests.coordinator.secrets.builders import K1, K2
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata

SEALER = EnvelopeSealer(lambda: Keyring.of(K1))


class HookedStore(SqliteStore):
    """SQLite, with a hook run once right after the first `list` returns (another writer acting in between)."""

    hook: Callable[[], Awaitable[None]] | None = None

    async def list(self, prefix: str) -> list[Entry]:
        found = await super().list(prefix)
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        return found


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _part(n: int, data: bytes) -> PartRecord:
    return PartRecord(PartInfo(n, len(data), _md5(data), 2.0), (ChunkRef(chunk_id(data), len(data)),))


async def test_gc_references_survive_a_completion_between_the_two_lists() -> None:
    """H2: the collector reads parts, then manifests; a completion in between moves the references from the first
    to the second, so every chunk stays referenced (manifests first, then parts, lost them)."""
    store = HookedStore(":memory:")
    meta = StoreMetadata(store, SEALER)
    await meta.create_bucket(BucketRecord("b", 0.0))
    await meta.create_upload(UploadInfo("u", "b", "k", 1.0))
    await meta.put_part("u", _part(1, b"one"))
    info = ObjectInfo("k", 3, multipart_etag([_md5(b"one")]), 3.0, parts=1)
    other = StoreMetadata(store, SEALER)

    async def complete() -> None:
        assert await other.complete_upload("u", info, (1,)) is Outcome.DONE

    store.hook = complete
    assert await meta.referenced_chunks() == {chunk_id(b"one")}
    assert await meta.get_manifest("b", "k") is not None and await meta.list_parts("u") is Outcome.NO_UPLOAD
    await store.close()


@pytest.fixture(params=["memory", "sqlite"])
async def metadata(request: pytest.FixtureRequest) -> Metadata:
    return MemoryMetadata() if request.param == "memory" else StoreMetadata(SqliteStore(":memory:"), SEALER)


async def test_complete_refuses_a_part_uploaded_again_after_the_check(metadata: Metadata) -> None:
    """M5: the handler checked parts 1 (e1, 3 bytes) and 2; part 1 is uploaded again before the completion. The
    object must not be built from the new part under the old size and ETag: InvalidPart, and nothing committed."""
    client = FakeChunkClient([])
    backend = ObjectBackend(metadata, client, client.storage_nodes)
    await metadata.create_bucket(BucketRecord("b", 0.0))
    await metadata.create_upload(UploadInfo("u", "b", "k", 1.0))
    for part in (_part(1, b"one"), _part(2, b"two")):
        await metadata.put_part("u", part)
    checked = ObjectInfo("k", 6, multipart_etag([_md5(b"one"), _md5(b"two")]), 3.0, parts=2)  # the handler's
    await metadata.put_part("u", _part(1, b"longer one"))  # re-uploaded meanwhile
    refused = await backend.complete_upload("u", checked, (1, 2))
    assert isinstance(refused, S3Error) and refused.code is ErrorCode.INVALID_PART
    assert await metadata.get_manifest("b", "k") is None
    missing = await backend.complete_upload("u", checked, (1, 3))  # a part that does not exist: a value, no KeyError
    assert isinstance(missing, S3Error) and missing.code is ErrorCode.INVALID_PART
    fresh = ObjectInfo("k", 13, multipart_etag([_md5(b"longer one"), _md5(b"two")]), 3.0, parts=2)
    assert await backend.complete_upload("u", fresh, (1, 2)) is None
    manifest = await metadata.get_manifest("b", "k")
    assert manifest is not None and sum(c.size for c in manifest.chunks) == manifest.info.size == 13


async def test_access_key_secrets_are_sealed_at_rest() -> None:
    """M9: the store holds no plaintext secret; the key opens with the right master key only."""
    store = SqliteStore(":memory:")
    meta = StoreMetadata(store, SEALER)
    key = AccessKey("AKIDSEALED0000000000", "a-very-secret-secret-value", "alice", (("*", "read"),))
    await meta.put_key(key)
    raw = (await store.get("/objects/keys/AKIDSEALED0000000000"))
    assert raw is not None and b"a-very-secret-secret-value" not in raw.value
    assert "secret" not in json.loads(raw.value) and "sealed" in json.loads(raw.value)
    assert await meta.get_key(key.access_key) == key and await meta.list_keys() == [key]
    stranger = StoreMetadata(store, EnvelopeSealer(lambda: Keyring.of(K2)))
    assert await stranger.list_keys() == []  # left out (logged), not a crash of the whole keyring
    await store.close()


async def test_a_sealed_secret_cannot_be_moved_to_another_key() -> None:
    """The envelope is bound to the access key id: copying one key's sealed secret under another id does not open."""
    store = SqliteStore(":memory:")
    meta = StoreMetadata(store, SEALER)
    await meta.put_key(AccessKey("AKIDONE0000000000000", "first-secret-value-123", "a"))
    raw = await store.get("/objects/keys/AKIDONE0000000000000")
    assert raw is not None
    doc = json.loads(raw.value)
    doc["access_key"] = "AKIDTWO0000000000000"
    await store.txn([put("/objects/keys/AKIDTWO0000000000000", json.dumps(doc).encode())])
    assert [k.access_key for k in await meta.list_keys()] == ["AKIDONE0000000000000"]
    await store.close()


async def test_keys_need_a_sealer() -> None:
    meta = StoreMetadata(SqliteStore(":memory:"))
    with pytest.raises(StoreError, match="sealer"):
        await meta.put_key(AccessKey("AKIDNOSEALER00000000", "secret-secret-secret-1", "a"))


async def test_delete_missing_key_is_no_key(metadata: Metadata) -> None:
    """L9: it said EXISTS."""
    assert await metadata.delete_key("AKIDNOTHERE000000000") is Outcome.NO_KEY


async def test_orphan_notes_keep_the_earliest_time_and_go_when_forgotten(metadata: Metadata) -> None:
    a, b = chunk_id(b"a"), chunk_id(b"b")
    await metadata.note_orphans("n1", [a, b], 5.0)
    await metadata.note_orphans("n1", [a], 9.0)  # noted again: the earlier time stays
    await metadata.note_orphans("n2", [a], 7.0)
    assert set(await metadata.list_orphans()) == {("n1", a, 5.0), ("n1", b, 5.0), ("n2", a, 7.0)}
    await metadata.forget_orphan("n1", a)
    assert set(await metadata.list_orphans()) == {("n1", b, 5.0), ("n2", a, 7.0)}


async def test_a_marker_left_by_a_crashed_delete_bucket_stops_blocking_commits() -> None:
    """L3: a DeleteBucket that crashed between setting its marker and deciding left every commit into the bucket
    retrying for 10 s and failing with MetadataContended, for good. A marker older than MARKER_STALE_S is cleared."""
    from coordinator.objects import MARKER_STALE_S
    from dataplane.objects.model import Manifest

    now = [1000.0]
    store = SqliteStore(":memory:")
    meta = StoreMetadata(store, SEALER, clock=lambda: now[0])
    await meta.create_bucket(BucketRecord("b", 0.0))
    await store.txn([put("/objects/closed/b", json.dumps({"at": now[0]}).encode())])  # the crash left it
    manifest = Manifest(ObjectInfo("k", 0, _md5(b""), 1.0))
    now[0] += MARKER_STALE_S
    assert await meta.commit_manifest("b", manifest) is Outcome.DONE
    assert await store.get("/objects/closed/b") is None and await meta.get_manifest("b", "k") == manifest
    assert await meta.delete_bucket("b") is Outcome.NOT_EMPTY  # and DeleteBucket still decides as before
    assert await meta.delete_manifest("b", "k") is Outcome.DONE and await meta.delete_bucket("b") is Outcome.DONE
    await store.close()
