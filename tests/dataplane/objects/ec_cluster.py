"""A small erasure-coded object store for tests: `ObjectBackend` over fake storage nodes in three zones (any
`Metadata`: the in-memory fake, or the coordinator's `StoreMetadata`), 4 KiB chunks, with helpers to create buckets,
put and read objects through the Backend port, run the repairer, and see where fragments really are."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

from dataplane.objects.erasure import RS_4_2
from dataplane.objects.model import StorageNode, Stripe
from dataplane.objects.ports import ChunkUnavailable, Metadata
from dataplane.objects.repairer import Repairer
from dataplane.objects.store import ObjectBackend
from dataplane.objects.stripeio import StripeRepairReport
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import S3Error
from tests.dataplane.objects.fake_chunks import FakeChunkClient, FakeNode
from tests.dataplane.objects.memory_metadata import MemoryMetadata

CHUNK = 4096


class RefusingChunkClient(FakeChunkClient):
    """The fake nodes, where a node in `refuse_puts` is up and serves reads but refuses writes (a full or read-only
    disk): placement still picks it, the write fails."""

    def __init__(self, nodes: list[StorageNode], *, verifying: bool = False) -> None:
        super().__init__(nodes, verifying=verifying)
        self.refuse_puts: set[str] = set()

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        if node in self.refuse_puts:
            raise ChunkUnavailable(node, chunk_id, "refused: read-only disk")
        await super().put(node, chunk_id, data)


class ECCluster:
    def __init__(self, n: int = 6, *, verifying: bool = False, metadata: Metadata | None = None) -> None:
        self.client = RefusingChunkClient([StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(n)],
                                      verifying=verifying)
        self.lost: set[str] = set()
        self.metadata = metadata if metadata is not None else MemoryMetadata()
        self.now = 0.0
        self.backend = ObjectBackend(self.metadata, self.client, self.nodes, chunk_size=CHUNK, clock=lambda: self.now)

    def nodes(self) -> list[StorageNode]:
        return [replace(n, online=n.online and n.node_id not in self.lost) for n in self.client.storage_nodes()]

    def add_node(self, name: str) -> None:
        self.client.nodes[name] = FakeNode(StorageNode(name, "z9", quota=1 << 30))

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
        assert await self.backend.create_bucket(name, 0.0, erasure=RS_4_2 if ec else None) is None

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        staging = await self.backend.stage(bucket)
        assert not isinstance(staging, S3Error)
        await staging.write(body)
        info = ObjectInfo(key, len(body), hashlib.md5(body).hexdigest(), 0.0)
        assert await staging.commit_object(bucket, info) is None

    async def read(self, bucket: str, key: str, start: int = 0, end: int | None = None) -> bytes:
        info = await self.backend.head_object(bucket, key)
        assert isinstance(info, ObjectInfo)
        pieces = await self.backend.read_object(bucket, key, start, info.size - 1 if end is None else end)
        assert not isinstance(pieces, S3Error)
        return b"".join([p async for p in pieces])

    async def stripes(self) -> dict[str, Stripe]:
        return {r.id: r.stripe for r in await self.metadata.list_chunks() if r.stripe is not None}

    def where(self, stripe: Stripe) -> list[set[str]]:
        """Per fragment, the nodes that really hold a copy with the right bytes."""
        return [{n for n, f in self.client.nodes.items()
                 if f.chunks.get(fid) is not None and hashlib.sha256(f.chunks[fid]).hexdigest() == fid}
                for fid in stripe.fragments]

    async def good_fragments(self, stripe: Stripe) -> int:
        """Fragments with a real, intact copy on an online node that their record lists as good."""
        online = {n.node_id for n in self.nodes() if n.online}
        records = await self.metadata.get_chunks(list(stripe.fragments))
        return sum(1 for fid, real in zip(stripe.fragments, self.where(stripe), strict=True)
                   if fid in records and real & online & records[fid].good())


async def lifecycle(c: ECCluster) -> None:
    """On 6 nodes: objects into an EC bucket, 2 nodes unreachable then lost -> every object reads; 2 new nodes ->
    repair brings every stripe back to 6 good fragments on 6 distinct nodes; the lost nodes return -> their surplus
    copies go, one copy of each fragment stays."""
    assert len(c.client.nodes) == 6
    await c.bucket("ec")
    bodies = {f"o{i}": os.urandom(CHUNK * (i % 4) + 17 * i + 1) for i in range(24)}
    for key, body in bodies.items():
        await c.put("ec", key, body)
    stripes = (await c.stripes())
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
    assert [await c.good_fragments(s) for s in stripes.values()] == [4] * len(stripes)
    c.add_node("n6")
    c.add_node("n7")
    report = await c.repair(1.0)
    assert report.plan.degraded == len(stripes) == len(report.plan.rebuilds)
    assert report.rebuilt == 2 * len(stripes) and report.failed == 0 and not report.plan.unrecoverable
    for stripe in stripes.values():
        homes = c.where(stripe)
        assert await c.good_fragments(stripe) == 6
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
        records = await c.metadata.get_chunks(list(stripe.fragments))
        assert [records[f].holders for f in stripe.fragments] == [frozenset(h) for h in homes]
    for key, body in bodies.items():
        assert await c.read("ec", key) == body
