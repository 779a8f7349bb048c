"""Erasure-coded chunks end to end over fake storage nodes (`ec_cluster`), written and read through `ObjectBackend`:
objects stored as RS(4,2) stripes (6 fragments on 6 distinct nodes), read back while nodes are unreachable and after
two are lost, repaired back to 6 good fragments on new nodes, the returning nodes' surplus collected; a corrupt
fragment found by its hash and rewritten (read-repair); the k + 1 write rule; garbage collection of fragments with
their chunk; chunks shared with a replicated bucket; erasure-coded buckets refused without 6 storage nodes or a
codec. `test_ec_lifecycle` runs over any `Metadata` (tests/coordinator/test_objects_erasure.py: SQLite)."""

from __future__ import annotations

import hashlib
import os

import pytest

from dataplane.objects import erasure
from dataplane.objects.chunking import ChunkRef
from dataplane.objects.chunkio import ChunkWriteFailed
from dataplane.objects.erasure import RS_4_2
from dataplane.objects.repair import GC_GRACE_S
from dataplane.s3.errors import ErrorCode
from tests.dataplane.objects.ec_cluster import CHUNK, ECCluster, lifecycle


async def test_lose_two_of_six_nodes_every_object_reads_and_repair_brings_every_stripe_back_to_six() -> None:
    await lifecycle(ECCluster(6))


async def test_an_erasure_coded_bucket_needs_six_storage_nodes() -> None:
    c = ECCluster(5)
    refused = await c.backend.create_bucket("ec", 0.0, erasure=RS_4_2)
    assert refused is not None and refused.code is ErrorCode.INVALID_ARGUMENT
    assert "at least 6 storage nodes" in refused.message and "5 known" in refused.message
    assert await c.backend.create_bucket("ec", 0.0) is None  # a replicated one is fine
    c.add_node("n5")
    assert await c.backend.create_bucket("ec2", 0.0, erasure=RS_4_2) is None
    bucket = await c.metadata.get_bucket("ec2")
    assert bucket is not None and bucket.erasure == RS_4_2 and bucket.replicas == 3


@pytest.mark.parametrize("verifying", [False, True])
async def test_a_corrupt_fragment_is_found_by_its_hash_and_rewritten_elsewhere(verifying: bool) -> None:
    c = ECCluster(7, verifying=verifying)
    await c.bucket("ec")
    body = os.urandom(CHUNK)
    await c.put("ec", "k", body)
    (stripe,) = (await c.stripes()).values()
    (victim,) = c.where(stripe)[0]  # fragment 0: a data fragment, read first
    c.client.corrupt(victim, stripe.fragments[0])
    assert await c.read("ec", "k") == body
    assert c.metadata.chunks[stripe.fragments[0]].bad == {victim}
    assert (stripe.fragments[0], victim) in c.backend.io.corrupt_found
    assert await c.good_fragments(stripe) == 6  # rewritten on the seventh node by the read
    (spare,) = c.where(stripe)[0]
    assert spare != victim and spare not in set().union(*c.where(stripe)[1:])
    report = await c.repair(1.0)
    assert report.deleted == 1 and report.plan.rebuilds == ()  # only the corrupt copy goes
    assert stripe.fragments[0] not in c.client.nodes[victim].chunks
    assert c.metadata.chunks[stripe.fragments[0]].holders == {spare}
    assert await c.read("ec", "k") == body


async def test_a_fragment_gone_from_its_node_is_forgotten_there_and_rewritten_elsewhere() -> None:
    c = ECCluster(7)
    await c.bucket("ec")
    body = os.urandom(CHUNK)
    await c.put("ec", "k", body)
    (stripe,) = (await c.stripes()).values()
    (wiped,) = c.where(stripe)[1]
    del c.client.nodes[wiped].chunks[stripe.fragments[1]]  # the node's disk lost it: it answers "no such chunk"
    assert await c.read("ec", "k") == body
    (record,) = (await c.metadata.get_chunks([stripe.fragments[1]])).values()
    (spare,) = c.where(stripe)[1]
    assert record.holders == {spare} and spare != wiped and await c.good_fragments(stripe) == 6


async def test_a_stripe_is_written_with_five_fragments_and_refused_with_four() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    c.client.nodes["n0"].down = True  # unreachable, not known lost: the writer finds out itself
    body = os.urandom(CHUNK)
    await c.put("ec", "five", body)
    (stripe,) = (await c.stripes()).values()
    assert await c.good_fragments(stripe) == 5
    c.client.nodes["n0"].down = False
    c.client.refuse_puts.add("n1")  # online and chosen, yet its write fails
    await c.put("ec", "refused", os.urandom(CHUNK))
    (refused,) = [s for s in (await c.stripes()).values() if s != stripe]
    assert await c.good_fragments(refused) == 5
    (missing,) = [fid for fid, home in zip(refused.fragments, c.where(refused), strict=True) if not home]
    assert set(c.metadata.orphans) == {("n1", missing)}  # the failed write may have landed: noted for the sweep
    c.client.refuse_puts.clear()
    report = await c.repair(1.0)
    assert report.rebuilt == 2 and await c.good_fragments(stripe) == 6  # n0 holds no fragment of it: a valid target
    assert await c.good_fragments(refused) == 6
    c.lose("n0", "n1")
    with pytest.raises(ChunkWriteFailed, match="4 of 6 fragments stored, 5 needed"):
        await c.backend.io.store(os.urandom(CHUNK), 3, RS_4_2)
    assert await c.read("ec", "five") == body


async def test_garbage_collection_takes_the_fragments_with_their_chunk_only() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    await c.put("ec", "gone", os.urandom(2 * CHUNK))
    await c.put("ec", "kept", os.urandom(CHUNK))
    kept = (await c.metadata.get_manifest("ec", "kept"))
    assert kept is not None
    kept_stripe = (await c.stripes())[kept.chunks[0].id]
    assert await c.backend.collect_garbage(GC_GRACE_S * 2) == []  # everything referenced
    await c.backend.delete_object("ec", "gone")
    collected = await c.backend.collect_garbage(GC_GRACE_S * 2)
    assert len(collected) == 2 + 2 * 6  # the two chunks' records, then their twelve fragments
    assert set(await c.stripes()) == {kept.chunks[0].id}
    stored = set().union(*(f.chunks for f in c.client.nodes.values()))
    assert stored == set(kept_stripe.fragments)
    assert await c.read("ec", "kept") is not None


async def test_a_chunk_shared_with_a_replicated_bucket_keeps_its_first_form() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    await c.bucket("rep", ec=False)
    first_replicated, first_striped = os.urandom(CHUNK), os.urandom(CHUNK)
    await c.put("rep", "a", first_replicated)
    await c.put("ec", "a", first_replicated)
    await c.put("ec", "b", first_striped)
    await c.put("rep", "b", first_striped)
    records = {r.id: r for r in c.metadata.chunks.values()}
    replicated = records[hashlib.sha256(first_replicated).hexdigest()]
    striped = records[hashlib.sha256(first_striped).hexdigest()]
    assert replicated.stripe is None and len(replicated.holders) == 2
    assert striped.stripe is not None and striped.holders == frozenset()
    for bucket in ("ec", "rep"):
        assert await c.read(bucket, "a") == first_replicated and await c.read(bucket, "b") == first_striped


async def test_without_a_codec_erasure_coded_writes_are_refused_naming_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(erasure, "BACKENDS", ("no_such_backend",))
    assert "no_such_backend" in (erasure.codec_problem() or "")
    c = ECCluster(6)
    with pytest.raises(ChunkWriteFailed, match=r"no erasure codec for RS\(4,2\).*no_such_backend"):
        await c.backend.io.store(os.urandom(100), 3, RS_4_2)
    refused = await c.backend.create_bucket("ec", 0.0, erasure=RS_4_2)
    assert refused is not None and refused.code is ErrorCode.INVALID_ARGUMENT
    assert "unavailable" in refused.message and "no_such_backend" in refused.message


async def test_reads_of_a_stripe_below_four_fragments_fail_loudly() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    await c.put("ec", "k", os.urandom(CHUNK))
    c.lose("n0", "n1", "n2")
    ref = ChunkRef(*next((cid, CHUNK) for cid in (await c.stripes())))
    with pytest.raises(Exception, match="3 of 6 had a good copy"):
        await c.backend.io.fetch(ref, c.metadata.chunks[ref.id])
    report = await c.repair(1.0)
    assert report.plan.unrecoverable == (ref.id,) and report.rebuilt == 0


async def test_a_stale_offline_verdict_does_not_stop_a_read() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    body = os.urandom(3 * CHUNK)
    await c.put("ec", "k", body)
    c.lost.update({"n0", "n1", "n2"})  # declared offline, yet still answering: their copies are tried last
    assert await c.read("ec", "k") == body
