"""Erasure-coded chunks end to end over fake storage nodes and the in-memory metadata: objects stored as RS(4,2)
stripes (6 fragments on 6 distinct nodes), read back through `ObjectBackend.read_object` while nodes are unreachable
and after two are lost, repaired back to 6 good fragments on new nodes, the returning nodes' surplus collected; a
corrupt fragment found by its hash and rewritten (read-repair); the k + 1 write rule; garbage collection of
fragments with their chunk; chunks shared with a replicated bucket; a missing codec refused by name."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import replace

import pytest

from dataplane.objects import erasure
from dataplane.objects.chunking import Chunker, ChunkRef
from dataplane.objects.chunkio import ChunkWriteFailed
from dataplane.objects.erasure import RS_4_2
from dataplane.objects.model import BucketRecord, ChunkRecord, Manifest, StorageNode, Stripe
from dataplane.objects.repair import GC_GRACE_S
from dataplane.objects.repairer import Repairer
from dataplane.objects.store import ObjectBackend
from dataplane.objects.stripeio import StripeRepairReport
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import S3Error
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata

CHUNK = 4096


class StripeMetadata(MemoryMetadata):
    """The in-memory metadata with `update_chunk(stripe=...)` (set when the record has none)."""

    async def update_chunk(self, chunk_id: str, size: int, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                           bad: Iterable[str] = (), touched: float | None = None,
                           stripe: Stripe | None = None) -> ChunkRecord:
        record = await super().update_chunk(chunk_id, size, add=add, remove=remove, bad=bad, touched=touched)
        if record.stripe is None and stripe is not None:
            record = self.chunks[chunk_id] = replace(record, stripe=stripe)
        return record


class ECCluster:
    def __init__(self, n: int = 6, *, verifying: bool = False) -> None:
        self.client = FakeChunkClient([StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(n)],
                                      verifying=verifying)
        self.lost: set[str] = set()
        self.metadata = StripeMetadata()
        self.now = 0.0
        self.backend = ObjectBackend(self.metadata, self.client, self.nodes, chunk_size=CHUNK, clock=lambda: self.now)

    def nodes(self) -> list[StorageNode]:
        return [replace(n, online=n.online and n.node_id not in self.lost) for n in self.client.storage_nodes()]

    def add_node(self, name: str) -> None:
        self.client.nodes[name] = type(next(iter(self.client.nodes.values())))(StorageNode(name, "z9", quota=1 << 30))

    def lose(self, *names: str) -> None:
        for name in names:
            self.client.nodes[name].down = True
            self.lost.add(name)

    async def repair(self, now: float) -> StripeRepairReport:
        """One pass of the repairer (replicated chunks, then stripes); the stripes' part of its report."""
        report = await Repairer(self.metadata, self.client, self.nodes).repair_once(now)
        assert report.stripes is not None
        return report.stripes

    async def bucket(self, name: str, *, ec: bool = True) -> None:
        assert await self.metadata.create_bucket(BucketRecord(name, 0.0, 3 if ec else 2,
                                                              RS_4_2 if ec else None)) == "done"

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        """What the staging area does for a bucket: each chunk stored (striped for an EC bucket), then the manifest."""
        record = await self.metadata.get_bucket(bucket)
        assert record is not None
        chunker = Chunker(CHUNK)
        refs = [await self.backend.io.store(piece, record.replicas, record.erasure) for piece in chunker.feed(body)]
        if (last := chunker.finish()) is not None:
            refs.append(await self.backend.io.store(last, record.replicas, record.erasure))
        info = ObjectInfo(key, len(body), hashlib.md5(body).hexdigest(), 0.0)
        assert await self.metadata.commit_manifest(bucket, Manifest(info, tuple(refs), record.replicas)) == "done"

    async def read(self, bucket: str, key: str, start: int = 0, end: int | None = None) -> bytes:
        info = await self.backend.head_object(bucket, key)
        assert isinstance(info, ObjectInfo)
        pieces = await self.backend.read_object(bucket, key, start, info.size - 1 if end is None else end)
        assert not isinstance(pieces, S3Error)
        return b"".join([p async for p in pieces])

    def stripes(self) -> dict[str, Stripe]:
        return {cid: r.stripe for cid, r in self.metadata.chunks.items() if r.stripe is not None}

    def where(self, stripe: Stripe) -> list[set[str]]:
        """Per fragment, the nodes that really hold a copy with the right bytes."""
        return [{n for n, f in self.client.nodes.items()
                 if f.chunks.get(fid) is not None and hashlib.sha256(f.chunks[fid]).hexdigest() == fid}
                for fid in stripe.fragments]

    def good_fragments(self, stripe: Stripe) -> int:
        online = {n.node_id for n in self.nodes() if n.online}
        return sum(1 for fid, real in zip(stripe.fragments, self.where(stripe), strict=True)
                   if fid in self.metadata.chunks and real & online & self.metadata.chunks[fid].good())


async def test_lose_two_of_six_nodes_every_object_reads_and_repair_brings_every_stripe_back_to_six() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    bodies = {f"o{i}": os.urandom(CHUNK * (i % 4) + 17 * i + 1) for i in range(24)}
    for key, body in bodies.items():
        await c.put("ec", key, body)
    stripes = c.stripes()
    assert len(stripes) == sum(len(b) // CHUNK + (len(b) % CHUNK > 0) for b in bodies.values())
    for stripe in stripes.values():
        homes = c.where(stripe)
        assert all(len(h) == 1 for h in homes) and len(set().union(*homes)) == 6  # 6 fragments, 6 nodes
    for name in ("n1", "n4"):  # unreachable, not yet declared lost: reads fall back to parity fragments
        c.client.nodes[name].down = True
    for key, body in bodies.items():
        assert await c.read("ec", key) == body
        assert await c.read("ec", key, 5, len(body) // 2) == body[5:len(body) // 2 + 1]
    c.lose("n1", "n4")
    for key, body in bodies.items():  # read-repair has nowhere to go (every node holds a fragment): still readable
        assert await c.read("ec", key) == body
    assert all(c.good_fragments(s) == 4 for s in stripes.values())
    c.add_node("n6")
    c.add_node("n7")
    report = await c.repair(1.0)
    assert report.plan.degraded == len(stripes) == len(report.plan.rebuilds)
    assert report.rebuilt == 2 * len(stripes) and report.failed == 0 and not report.plan.unrecoverable
    for stripe in stripes.values():
        homes = c.where(stripe)
        assert c.good_fragments(stripe) == 6
        online_homes = [h - c.lost for h in homes]
        assert all(len(h) == 1 for h in online_homes) and len(set().union(*online_homes)) == 6
    assert (await c.repair(2.0)).plan.empty  # idempotent
    c.client.nodes["n1"].down = c.client.nodes["n4"].down = False  # the lost nodes return with their fragments
    c.lost.clear()
    back = await c.repair(3.0)
    assert back.deleted == 2 * len(stripes) and back.plan.rebuilds == () and back.failed == 0
    for stripe in stripes.values():
        homes = c.where(stripe)
        assert all(len(h) == 1 for h in homes) and len(set().union(*homes)) == 6  # one copy each, never none
        assert [c.metadata.chunks[f].holders for f in stripe.fragments] == [frozenset(h) for h in homes]
    for key, body in bodies.items():
        assert await c.read("ec", key) == body


@pytest.mark.parametrize("verifying", [False, True])
async def test_a_corrupt_fragment_is_found_by_its_hash_and_rewritten_elsewhere(verifying: bool) -> None:
    c = ECCluster(7, verifying=verifying)
    await c.bucket("ec")
    body = os.urandom(CHUNK)
    await c.put("ec", "k", body)
    (stripe,) = c.stripes().values()
    (victim,) = c.where(stripe)[0]  # fragment 0: a data fragment, read first
    c.client.corrupt(victim, stripe.fragments[0])
    assert await c.read("ec", "k") == body
    assert c.metadata.chunks[stripe.fragments[0]].bad == {victim}
    assert (stripe.fragments[0], victim) in c.backend.io.corrupt_found
    assert c.good_fragments(stripe) == 6  # rewritten on the seventh node by the read
    (spare,) = c.where(stripe)[0]
    assert spare != victim and spare not in set().union(*c.where(stripe)[1:])
    report = await c.repair(1.0)
    assert report.deleted == 1 and report.plan.rebuilds == ()  # only the corrupt copy goes
    assert stripe.fragments[0] not in c.client.nodes[victim].chunks
    assert c.metadata.chunks[stripe.fragments[0]].holders == {spare}
    assert await c.read("ec", "k") == body


async def test_a_stripe_is_written_with_five_fragments_and_refused_with_four() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    c.client.nodes["n0"].down = True  # unreachable, not known lost: the writer finds out itself
    body = os.urandom(CHUNK)
    await c.put("ec", "five", body)
    (stripe,) = c.stripes().values()
    assert c.good_fragments(stripe) == 5
    c.client.nodes["n0"].down = False
    report = await c.repair(1.0)
    assert report.rebuilt == 1 and c.good_fragments(stripe) == 6  # n0 holds no fragment of it: a valid target
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
    kept_stripe = c.stripes()[kept.chunks[0].id]
    assert await c.backend.collect_garbage(GC_GRACE_S * 2) == []  # everything referenced
    await c.backend.delete_object("ec", "gone")
    collected = await c.backend.collect_garbage(GC_GRACE_S * 2)
    assert len(collected) == 2 + 2 * 6  # the two chunks' records, then their twelve fragments
    assert set(c.stripes()) == {kept.chunks[0].id}
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
    why = erasure.bucket_refusal(RS_4_2, c.nodes(), erasure.codec_problem())
    assert why is not None and "unavailable" in why and "no_such_backend" in why


async def test_reads_of_a_stripe_below_four_fragments_fail_loudly() -> None:
    c = ECCluster(6)
    await c.bucket("ec")
    await c.put("ec", "k", os.urandom(CHUNK))
    c.lose("n0", "n1", "n2")
    ref = ChunkRef(*next((cid, CHUNK) for cid in c.stripes()))
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
