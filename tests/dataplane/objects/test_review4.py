"""Review 4 findings in the data plane, as tests that failed before their fixes (fake storage nodes, the real
chunk IO, stripe IO and repairer)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace

import pytest

from dataplane.objects.chunking import ChunkRef, chunk_id
from dataplane.objects.chunkio import ChunkIO, ChunkWriteFailed
from dataplane.objects.erasure import RS_4_2
from dataplane.objects.model import BucketRecord, ChunkRecord, Manifest, StorageNode, Stripe
from dataplane.objects.repair import GC_GRACE_S
from dataplane.objects.repairer import Repairer, chunk_states, sweep_orphans
from dataplane.objects.store import ObjectBackend
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import S3Error
from tests.dataplane.objects.ec_cluster import CHUNK, ECCluster
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata


class HookedMetadata(MemoryMetadata):
    """In-memory metadata that runs `hook` once, at the first update that adds a holder (a GC pass landing in the
    middle of a write)."""

    hook: Callable[[], Awaitable[object]] | None = None

    async def update_chunk(self, chunk_id: str, size: int, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                           bad: Iterable[str] = (), touched: float | None = None,
                           stripe: Stripe | None = None) -> ChunkRecord:
        added = tuple(add)
        if added and self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return await super().update_chunk(chunk_id, size, add=added, remove=remove, bad=bad, touched=touched,
                                          stripe=stripe)


async def test_reused_fragments_of_a_failed_write_are_touched_before_being_relied_on() -> None:
    """M1: a write fails with 4 of 6 fragments stored; hours later the client retries. The retry reuses those 4
    fragments; a GC pass between its layout and its stripe commit must not collect them (they are older than the
    grace and no stripe owns them yet), or the stripe is committed with 2 fragments and the PUT succeeds."""
    meta = HookedMetadata()
    c = ECCluster(6, metadata=meta)
    await c.bucket("ec")
    body = os.urandom(CHUNK)
    c.client.refuse_puts.update({"n0", "n1"})
    with pytest.raises(ChunkWriteFailed, match="4 of 6 fragments stored"):
        await c.backend.io.store(body, 3, RS_4_2)
    c.client.refuse_puts.clear()
    c.now = 3 * GC_GRACE_S
    meta.hook = lambda: c.backend.collect_garbage(c.now)
    await c.put("ec", "k", body)
    (stripe,) = (await c.stripes()).values()
    assert await c.good_fragments(stripe) == 6
    assert await c.read("ec", "k") == body


async def test_dedup_writes_a_fresh_copy_when_no_holder_is_reachable() -> None:
    """M4: the chunk's copies are on nodes that are offline (not yet declared lost): a PUT of the same bytes must not
    return after writing nothing; the gateway has the bytes, so it writes fresh copies on reachable nodes."""
    nodes = [StorageNode(f"n{i}", f"z{i}", quota=1 << 30) for i in range(4)]
    client = FakeChunkClient(nodes)
    unreachable: set[str] = set()

    def view() -> list[StorageNode]:
        return [replace(n, reachable=n.node_id not in unreachable) for n in nodes]

    io = ChunkIO(MemoryMetadata(), client, view, lambda: 1.0)
    data = os.urandom(100)
    ref = await io.store(data, 2)
    first = client.holders(ref.id)
    assert len(first) == 2
    assert await io.store(data, 2) == ref and client.holders(ref.id) == first  # reachable holders: dedup
    unreachable.update(first)
    await io.store(data, 2)
    fresh = client.holders(ref.id) - first
    assert len(fresh) == 2 and not fresh & unreachable


@pytest.mark.parametrize("replicas", [1, 3])
async def test_the_repairer_honours_the_bucket_replicas(replicas: int) -> None:
    """M3: the chunks of an R = 1 bucket want one copy (they were counted under-replicated and copied twice), those
    of an R = 3 bucket three."""
    meta = MemoryMetadata()
    client = FakeChunkClient([StorageNode(f"n{i}", f"z{i}", quota=1 << 30) for i in range(4)])
    backend = ObjectBackend(meta, client, client.storage_nodes, chunk_size=CHUNK, clock=lambda: 1.0)
    assert await backend.create_bucket("b", 0.0, replicas=replicas) is None
    staging = await backend.stage("b")
    assert not isinstance(staging, S3Error)
    await staging.write(os.urandom(CHUNK + 1))
    assert await staging.commit_object("b", ObjectInfo("k", CHUNK + 1, "etag", 1.0)) is None
    states = await chunk_states(meta)
    assert len(states) == 2 and {s.replicas for s in states.values()} == {replicas}
    report = await Repairer(meta, client, client.storage_nodes).repair_once(2.0)
    assert report.plan.under_replicated == 0 and report.copied == 0
    assert all(len(client.holders(cid)) == replicas for cid in states)


class PutHookClient(FakeChunkClient):
    """Runs `hook` once, before the next put (something that happens while the repair pass copies)."""

    hook: Callable[[], Awaitable[None]] | None = None

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        await super().put(node, chunk_id, data)


async def test_a_surplus_delete_rechecks_the_record_before_deleting() -> None:
    """L1: chunk X (R = 1) has a surplus copy on b; the pass first copies chunk Y, and meanwhile a read finds X's
    kept copy on a corrupt. The planned delete of b's copy must not go ahead: it is now X's only good copy."""
    nodes = [StorageNode(n, n, quota=1 << 30) for n in ("a", "b", "c")]
    client, meta = PutHookClient(nodes), MemoryMetadata()
    x, y = os.urandom(100), os.urandom(100)
    xid, yid = chunk_id(x), chunk_id(y)
    for n in ("a", "b"):
        await client.put(n, xid, x)
    await client.put("a", yid, y)
    await meta.update_chunk(xid, 100, add=["a", "b"], touched=0.0)
    await meta.update_chunk(yid, 100, add=["a"], touched=0.0)
    for name, r, cid in (("r1", 1, xid), ("r2", 2, yid)):
        await meta.create_bucket(BucketRecord(name, 0.0, r))
        await meta.commit_manifest(name, Manifest(ObjectInfo("k", 100, "e", 0.0), (ChunkRef(cid, 100),), r))

    async def a_read_finds_the_kept_copy_corrupt() -> None:
        client.corrupt("a", xid)
        await meta.update_chunk(xid, 100, bad=["a"])

    client.hook = a_read_finds_the_kept_copy_corrupt
    report = await Repairer(meta, client, lambda: nodes).repair_once(0.0)
    assert [d.node for d in report.plan.deletes if d.chunk_id == xid] == ["b"]  # planned before the read
    record = (await meta.get_chunks([xid]))[xid]
    assert record.good() == {"b"} and xid in client.nodes["b"].chunks  # b's copy stays: X's only good one


class DeleteHookClient(FakeChunkClient):
    """Runs `hook` once, just before the next delete reaches the node."""

    hook: Callable[[], Awaitable[None]] | None = None

    async def delete(self, node: str, chunk_id: str) -> None:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        await super().delete(node, chunk_id)


async def test_the_orphan_sweep_does_not_leave_a_holder_listed_for_the_copy_it_deleted() -> None:
    """L2: the sweep checks the record (untouched, the node no holder), then a writer touches the chunk, puts it on
    that node (the file is there already: OK) and records the holder; the sweep's delete then removes the file. The
    record must not go on listing that node as a holder of a copy that is gone."""
    nodes = [StorageNode(n, n, quota=1 << 30) for n in ("a", "b")]
    client, meta = DeleteHookClient(nodes), MemoryMetadata()
    data = os.urandom(100)
    cid = chunk_id(data)
    await client.put("a", cid, data)
    await meta.note_orphans("a", [cid], 0.0)
    now = 2 * GC_GRACE_S

    async def a_writer_relies_on_that_copy() -> None:
        await meta.update_chunk(cid, 100, touched=now)
        await client.put("a", cid, data)
        await meta.update_chunk(cid, 100, add=["a"], touched=now)

    client.hook = a_writer_relies_on_that_copy
    assert await sweep_orphans(meta, client, lambda: nodes, now) == 1
    record = (await meta.get_chunks([cid]))[cid]
    assert "a" not in client.holders(cid) and "a" not in record.holders  # repair sees the chunk has no copy
