"""Review 3, M1 and L2, as the tests that failed before the fix: with a client that verifies what it reads (as the
overlay client does) a corrupt source raised ChunkMismatch, which the repairer swallowed as "cannot read" without
recording it, so every pass picked the same source and the chunk stayed under-replicated for good; a source that no
longer holds the copy (ChunkMissing) likewise. A referenced chunk whose record is gone was not in the plan at all."""

from __future__ import annotations

import os

from dataplane.objects.chunking import chunk_id
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
