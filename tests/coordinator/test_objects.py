"""`StoreMetadata` (coordinator/objects.py), the object store's metadata over the coordinator's store, against SQLite
and a real 3-member etcd cluster (integration); the in-memory fake the dataplane tests use runs the same contract.
Concurrency is real interleaving: the SQLite store is wrapped so every call yields to the loop first (SQLite's calls
never suspend on their own), and two `StoreMetadata` instances share one store as two coordinators would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pytest

from coordinator.objects import EnvelopeSealer, StoreMetadata
from coordinator.secrets.envelope import Keyring
from coordinator.store import Entry, Op, SqliteStore, Store, StoreError, put
from dataplane.objects.chunking import ChunkRef, chunk_id
from dataplane.objects.model import AccessKey, BucketRecord, Manifest, PartRecord
from dataplane.objects.ports import Metadata, Outcome
from dataplane.s3.backend import ObjectInfo, PartInfo, UploadInfo
from dataplane.s3.checksums import Algorithm
from dataplane.s3.multipart import multipart_etag
from tests.coordinator.secrets.builders import K1
from tests.dataplane.objects.memory_metadata import MemoryMetadata
from tests.integration.etcd_env import EtcdCluster, running_etcd_cluster

T = TypeVar("T")
SEALER = EnvelopeSealer(lambda: Keyring.of(K1))


class YieldingStore(SqliteStore):
    """The real SQLite store, yielding to the loop before every operation so concurrent callers interleave."""

    async def get(self, key: str) -> Entry | None:
        await asyncio.sleep(0)
        return await super().get(key)

    async def list(self, prefix: str) -> list[Entry]:
        await asyncio.sleep(0)
        return await super().list(prefix)

    async def txn(self, ops: Sequence[Op]) -> int:
        await asyncio.sleep(0)
        return await super().txn(ops)


@dataclass
class Pair:
    """Two metadata views of one state (two coordinators, or one for the fake) and the store under them."""

    a: Metadata
    b: Metadata
    store: Store | None


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running_etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture(params=["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.integration)])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    if request.param == "memory":
        fake = MemoryMetadata()
        yield Pair(fake, fake, None)
        return
    if request.param == "sqlite":
        store: Store = YieldingStore(":memory:")
        yield Pair(StoreMetadata(store, SEALER), StoreMetadata(store, SEALER), store)
        await store.close()
        return
    from coordinator.store.etcd import open_etcd_store

    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    root = f"/test-{uuid.uuid4().hex[:8]}"
    one, two = await open_etcd_store(cluster.url, root=root), await open_etcd_store(cluster.url, root=root)
    yield Pair(StoreMetadata(one, SEALER), StoreMetadata(two, SEALER), one)
    await one.close()
    await two.close()


def manifest(key: str, *chunks: bytes, size: int = 1) -> Manifest:
    refs = tuple(ChunkRef(chunk_id(c), len(c)) for c in chunks)
    return Manifest(ObjectInfo(key, size, "etag", 1.5, content_type="text/plain", metadata=(("a", "b"),),
                               checksum=(Algorithm.CRC32, "AAAAAA==")), refs, 3)


async def test_bucket_lifecycle(pair: Pair) -> None:
    assert await pair.a.create_bucket(BucketRecord("bkt", 1.0, 3)) is Outcome.DONE
    assert await pair.b.create_bucket(BucketRecord("bkt", 2.0)) is Outcome.EXISTS
    assert await pair.b.list_buckets() == [BucketRecord("bkt", 1.0, 3)]
    assert await pair.b.commit_manifest("bkt", manifest("k")) is Outcome.DONE
    assert await pair.a.delete_bucket("bkt") is Outcome.NOT_EMPTY
    assert await pair.a.commit_manifest("bkt", manifest("k2")) is Outcome.DONE  # a refused delete leaves it open
    for key in ("k", "k2"):
        assert await pair.a.delete_manifest("bkt", key) is Outcome.DONE
    await pair.a.create_upload(UploadInfo("up1", "bkt", "k", 1.0))
    assert await pair.b.delete_bucket("bkt") is Outcome.NOT_EMPTY  # an upload in progress keeps it
    assert await pair.b.drop_upload("up1") is Outcome.DONE
    assert await pair.b.delete_bucket("bkt") is Outcome.DONE
    assert await pair.a.get_bucket("bkt") is None and await pair.a.delete_bucket("bkt") is Outcome.NO_BUCKET
    assert await pair.a.commit_manifest("bkt", manifest("k")) is Outcome.NO_BUCKET
    assert await pair.a.list_manifests("bkt", "", "") is Outcome.NO_BUCKET
    assert await pair.a.create_bucket(BucketRecord("bkt", 3.0)) is Outcome.DONE  # a deleted name can come back
    assert await pair.b.commit_manifest("bkt", manifest("again")) is Outcome.DONE


async def test_a_commit_is_seen_by_every_later_read_through_the_other_instance(pair: Pair) -> None:
    await pair.a.create_bucket(BucketRecord("vis", 0.0))
    written = manifest("dir/é", b"one", b"two", size=6)
    assert await pair.a.commit_manifest("vis", written) is Outcome.DONE
    assert await pair.b.get_manifest("vis", "dir/é") == written
    for key in ("dir/a", "dir/z", "other", "dir/\U0001f600"):
        await pair.a.commit_manifest("vis", manifest(key))
    listed = await pair.b.list_manifests("vis", "dir/", "dir/a")
    assert not isinstance(listed, Outcome)
    assert [m.info.key for m in listed] == ["dir/z", "dir/é", "dir/\U0001f600"]  # UTF-8 byte order, after "dir/a"


async def test_of_concurrent_conditional_commits_of_one_key_exactly_one_wins(pair: Pair) -> None:
    await pair.a.create_bucket(BucketRecord("race", 0.0))
    views = [pair.a, pair.b] * 5
    outcomes = await asyncio.gather(*(v.commit_manifest("race", manifest("k", str(i).encode()), if_absent=True)
                                      for i, v in enumerate(views)))
    assert sorted(outcomes) == sorted([Outcome.DONE] + [Outcome.EXISTS] * 9)
    winner = outcomes.index(Outcome.DONE)
    stored = await pair.b.get_manifest("race", "k")
    assert stored is not None and stored.chunks[0].id == chunk_id(str(winner).encode())


async def test_concurrent_location_updates_lose_nothing(pair: Pair) -> None:
    cid = chunk_id(b"shared")
    views = [pair.a, pair.b] * 6
    await asyncio.gather(*(v.update_chunk(cid, 6, add=[f"n{i}"], touched=float(i)) for i, v in enumerate(views)))
    record = (await pair.b.get_chunks([cid]))[cid]
    assert record.holders == {f"n{i}" for i in range(12)} and record.touched == 11.0
    bad = await pair.a.update_chunk(cid, 6, bad=["n3"], remove=["n4"])
    assert bad.good() == record.holders - {"n3", "n4"}
    assert (await pair.a.update_chunk(cid, 6, remove=["n3"])).bad == frozenset()  # a removed copy is not bad either


async def _after(turns: int, work: Awaitable[T]) -> T:
    for _ in range(turns):
        await asyncio.sleep(0)
    return await work


async def test_delete_bucket_racing_commits_never_orphans_a_manifest(pair: Pair) -> None:
    for round_ in range(12):  # commits start 0..11 loop turns after the delete: before, during and after its steps
        name = f"del-{round_}"
        await pair.a.create_bucket(BucketRecord(name, 0.0))
        results = await asyncio.gather(pair.a.delete_bucket(name),
                                       *(_after(round_ + i, pair.b.commit_manifest(name, manifest(f"k{i}")))
                                         for i in range(2)))
        exists = await pair.b.get_bucket(name) is not None
        if results[0] is Outcome.DONE:
            assert not exists
            assert all(o is Outcome.NO_BUCKET for o in results[1:])  # every commit after the delete was refused
        else:
            assert results[0] is Outcome.NOT_EMPTY and exists
            listed = await pair.b.list_manifests(name, "", "")
            assert not isinstance(listed, Outcome)
            assert {m.info.key for m in listed} == {f"k{i}" for i, o in enumerate(results[1:]) if o is Outcome.DONE}
        if pair.store is not None:  # nothing left under a deleted bucket
            assert exists or await pair.store.list(f"/objects/manifests/{name}/") == []


async def test_multipart_complete_and_references(pair: Pair) -> None:
    await pair.a.create_bucket(BucketRecord("mpu", 0.0, 3))
    assert await pair.a.create_upload(UploadInfo("u1", "mpu", "big", 1.0, content_type="a/b")) is Outcome.DONE
    assert await pair.a.create_upload(UploadInfo("u2", "nope", "big", 1.0)) is Outcome.NO_BUCKET
    parts = [PartRecord(PartInfo(n, 3, f"e{n}", 2.0), (ChunkRef(chunk_id(bytes([n])), 3),)) for n in (2, 1)]
    for part in parts:
        assert await pair.b.put_part("u1", part) is Outcome.DONE
    assert await pair.a.list_parts("u1") == sorted(parts, key=lambda p: p.info.number)
    assert await pair.a.referenced_chunks() == {chunk_id(b"\x01"), chunk_id(b"\x02")}  # parts count as references
    info = ObjectInfo("big", 6, multipart_etag(["e1", "e2"]), 3.0, parts=2)
    done = Manifest(info, tuple(p.chunks[0] for p in reversed(parts)), 3)
    assert await pair.b.complete_upload("u1", info, (1, 2)) is Outcome.DONE
    assert await pair.a.get_manifest("mpu", "big") == done
    assert await pair.a.get_upload("u1") is None and await pair.a.list_parts("u1") is Outcome.NO_UPLOAD
    assert await pair.a.put_part("u1", parts[0]) is Outcome.NO_UPLOAD
    assert await pair.a.complete_upload("u1", info, (1, 2)) is Outcome.NO_UPLOAD
    assert await pair.a.referenced_chunks() == {chunk_id(b"\x01"), chunk_id(b"\x02")}


async def test_drop_chunk_spares_a_touched_chunk(pair: Pair) -> None:
    cid = chunk_id(b"old")
    await pair.a.update_chunk(cid, 3, add=["n1"], touched=10.0)
    assert not await pair.b.drop_chunk(cid, unless_touched_since=10.0)
    assert await pair.b.drop_chunk(cid, unless_touched_since=10.5)
    assert await pair.a.get_chunks([cid]) == {} and await pair.a.list_chunks() == []
    assert not await pair.b.drop_chunk(cid, unless_touched_since=99.0)


async def test_access_keys(pair: Pair) -> None:
    key = AccessKey("AKID1", "s3cret", "alice", (("photos", "write"), ("*", "read")))
    await pair.a.put_key(key)
    assert await pair.b.get_key("AKID1") == key and "s3cret" not in repr(key)
    other = AccessKey("AKID0", "x", "bob")
    await pair.b.put_key(other)
    assert await pair.a.list_keys() == [other, key]
    assert await pair.b.delete_key("AKID1") is Outcome.DONE and await pair.a.get_key("AKID1") is None


async def test_a_corrupt_entry_is_a_store_error_naming_key_and_field() -> None:
    store = SqliteStore(":memory:")
    meta = StoreMetadata(store, SEALER)
    await meta.create_bucket(BucketRecord("bkt", 0.0))
    await store.txn([put("/objects/manifests/bkt/k", b'{"info": {"key": "k"}, "chunks": [], "replicas": 2}')])
    with pytest.raises(StoreError, match=r"/objects/manifests/bkt/k\.info: field 'size'"):
        await meta.get_manifest("bkt", "k")
    await store.txn([put("/objects/chunks/x", b"not json")])
    with pytest.raises(StoreError, match="/objects/chunks/x: not a JSON document"):
        await meta.list_chunks()
    await store.close()
