"""Review 3, M1 and L2, as the tests that failed before the fix: with a client that verifies what it reads (as the
overlay client does) a corrupt source raised ChunkMismatch, which the repairer swallowed as "cannot read" without
recording it, so every pass picked the same source and the chunk stayed under-replicated for good; a source that no
longer holds the copy (ChunkMissing) likewise. A referenced chunk whose record is gone was not in the plan at all.
M3: a copy a failed delete left behind stayed on disk for good."""

from __future__ import annotations

import os

from dataplane.objects.chunking import chunk_id
from dataplane.objects.ports import ChunkUnavailable
from dataplane.objects.repair import GC_GRACE_S
from dataplane.objects.repairer import sweep_orphans
from tests.dataplane.objects.cluster import CHUNK, Cluster


async def _under_replicated(c: Cluster) -> tuple[str, str, str]:
    """One chunk at R = 3, one holder lost: (chunk id, the source repair picks, its target)."""
    await c.backend.create_bucket("bkt", 0.0, replicas=3)
    await c.put("bkt", "k", os.urandom(CHUNK))
    (state,) = (await c.states()).values()
    cid, holders = state.record.id, sorted(state.record.holders)
    c.lost.add(holders[2])
    c.client.nodes[holders[2]].down = True
    plan, _ = await c.repairer.plan(1.0)
    (copy,) = plan.copies
    return cid, copy.source, copy.target


async def test_a_corrupt_source_seen_by_a_verifying_client_is_recorded_and_avoided() -> None:
    c = Cluster(5)
    c.client.verifying = True
    cid, source, _target = await _under_replicated(c)
    c.client.corrupt(source, cid)
    first = await c.repairer.repair_once(2.0)
    assert first.failed == 1 and c.metadata.chunks[cid].bad == {source}
    second = await c.repairer.repair_once(3.0)
    assert second.copied >= 1 and source not in {cp.source for cp in second.plan.copies}
    assert len(c.good_online((await c.states())[cid])) == 3


async def test_a_source_without_the_copy_is_forgotten_and_another_used() -> None:
    c = Cluster(4)
    cid, source, _target = await _under_replicated(c)
    del c.client.nodes[source].chunks[cid]  # the node dropped it (found corrupt by its own check, a wiped disk)
    first = await c.repairer.repair_once(2.0)
    assert first.failed == 1 and source not in c.metadata.chunks[cid].holders
    second = await c.repairer.repair_once(3.0)
    assert second.copied >= 1 and len(c.good_online((await c.states())[cid])) == 3


async def test_a_referenced_chunk_without_a_record_is_unrecoverable() -> None:
    c = Cluster(2)
    await c.backend.create_bucket("bkt", 0.0)
    await c.put("bkt", "k", b"x" * 10)
    del c.metadata.chunks[chunk_id(b"x" * 10)]  # its record dropped while a manifest still refers to it
    plan, chunks = await c.repairer.plan(1.0)
    assert chunks == 1 and plan.unrecoverable == (chunk_id(b"x" * 10),)


async def test_a_failed_surplus_delete_leaves_no_orphan_after_the_sweep() -> None:
    """M3: the record forgets a surplus holder before deleting its copy; when that delete fails the copy was on disk
    with no record listing it, for good. Now it is noted and swept once the node answers (after the grace)."""
    c = Cluster(4)
    cid, _source, _target = await _under_replicated(c)
    await c.repairer.repair_once(2.0)  # back to R without the lost node
    lost = next(n for n in c.lost)
    c.lost.discard(lost)  # it returns with its old copy: surplus
    c.client.nodes[lost].down = False
    plan, _ = await c.repairer.plan(3.0)
    (surplus,) = plan.deletes
    real_delete = c.client.delete

    async def unreachable(node: str, chunk: str) -> None:  # ... but the delete does not get through
        raise ChunkUnavailable(node, chunk, "timed out")

    c.client.delete = unreachable  # type: ignore[method-assign,assignment]
    report = await c.repairer.repair_once(3.0)
    c.client.delete = real_delete  # type: ignore[method-assign]
    assert report.failed == 1 and surplus.node not in c.metadata.chunks[cid].holders
    assert cid in c.client.nodes[surplus.node].chunks  # the orphan: on disk, in no record
    assert await c.metadata.list_orphans() == [(surplus.node, cid, 3.0)]
    assert await sweep_orphans(c.metadata, c.client, c.nodes, 3.0 + 10) == 0  # within the grace: kept
    assert await sweep_orphans(c.metadata, c.client, c.nodes, 3.0 + GC_GRACE_S) == 1
    assert cid not in c.client.nodes[surplus.node].chunks and await c.metadata.list_orphans() == []
    assert len(c.good_online((await c.states())[cid])) == 3  # the live copies untouched


async def test_the_sweep_spares_a_noted_copy_that_is_live_or_being_written() -> None:
    c = Cluster(2)
    await c.backend.create_bucket("bkt", 0.0)
    body = os.urandom(100)
    await c.put("bkt", "k", body)
    cid = chunk_id(body)
    await c.metadata.note_orphans("n0", [cid], 0.0)  # noted, but n0 holds it in the record: a live copy
    await c.metadata.note_orphans("n1", [chunk_id(b"other")], 0.0)
    await c.metadata.update_chunk(chunk_id(b"other"), 5, touched=GC_GRACE_S)  # a writer touched it just now
    assert await sweep_orphans(c.metadata, c.client, c.nodes, GC_GRACE_S + 1) == 1
    assert cid in c.client.nodes["n0"].chunks and await c.metadata.list_orphans() == [
        ("n1", chunk_id(b"other"), 0.0)]
