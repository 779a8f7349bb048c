"""A replicated chunk whose copy is gone from a holder (a wiped disk, a copy the node's own scrub deleted): the read
that finds out forgets that holder, so the repairer sees the chunk below R and copies it again; before, the record kept
listing the empty node as a good copy and nothing ever brought the chunk back to R."""

from __future__ import annotations

import os

from tests.dataplane.objects.cluster import CHUNK, Cluster


async def test_a_copy_gone_from_its_holder_is_forgotten_by_the_read_and_repaired() -> None:
    c = Cluster()
    await c.backend.create_bucket("bkt", 0.0)
    body = os.urandom(CHUNK)
    await c.put("bkt", "k", body)
    (state,) = (await c.states()).values()
    cid = state.record.id
    first = min(state.record.holders)  # equally reliable, online: a read asks them in id order
    del c.client.nodes[first].chunks[cid]
    assert await c.read("bkt", "k") == body  # from the other copy
    (state,) = (await c.states()).values()
    assert first not in state.record.holders and len(state.record.holders) == 1
    report = await c.repairer.repair_once(1.0)
    assert report.copied == 1
    (state,) = (await c.states()).values()
    assert len(c.good_online(state)) == 2
