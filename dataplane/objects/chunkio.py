"""Chunk transfer for the object store: write a chunk to R nodes chosen by `placement.place` (retrying on other nodes
when one fails), read one from any holder verifying its SHA-256 (a corrupt copy is recorded as bad for repair, a
holder that answers it has no copy is forgotten as one, and the next holder tried), and garbage-collect chunks no
object refers to any more. The adapter between the pure cores, the `Metadata` port and the `ChunkClient` port; it
decides nothing itself.

Write rule (decided here, documented in docs/storage.md): a chunk counts as written when at least one copy is
acknowledged; the writer tries to reach R copies, replacing failed targets with the next-best nodes, and a chunk
left below R is simply under-replicated: its record shows fewer than R holders and the repair planner brings it up.
Requiring R acknowledgements would make a PUT fail whenever fewer than R storage nodes are online.

Dedup and garbage collection (decided here): no reference counts. A writer *touches* a chunk's record (timestamp)
before relying on an existing copy; a chunk is collected when no manifest or uploaded part refers to it and nobody
touched it for the grace period (`repair.unreferenced`), and its record is dropped atomically only if still untouched
(`Metadata.drop_chunk`). Reference counts would have to be updated in the manifest's transaction, one key per chunk,
past etcd's 128 operations per transaction for a 128 MiB object. Known gap: a collector's copy deletion racing a
writer that re-creates the same chunk within that instant can remove the new copy; the repair planner then reports
the chunk unrecoverable (a node-side tombstone epoch on delete would close it).

Erasure-coded chunks (a bucket with `erasure`): `store(..., erasure=code)` and `fetch` of a record with a stripe go to
`stripeio.StripeIO` (rules in `erasure`); garbage collection keeps a fragment while a chunk record whose stripe lists
it is kept, and collects it with the last such record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dataplane.objects.chunking import ChunkRef, chunk_id
from dataplane.objects.erasure import fragment_owners
from dataplane.objects.model import ChunkRecord, ErasureCode, StorageNode
from dataplane.objects.placement import Unplaceable, place
from dataplane.objects.ports import ChunkClient, ChunkMismatch, ChunkMissing, ChunkUnavailable, Metadata
from dataplane.objects.repair import GC_GRACE_S, unreferenced
from dataplane.objects.stripeio import StripeIO, StripeLost, StripeWriteFailed

log = logging.getLogger(__name__)
NodeSource = Callable[[], Sequence[StorageNode]]


class ChunkWriteFailed(Exception):
    def __init__(self, chunk_id: str, why: str) -> None:
        self.chunk_id, self.why = chunk_id, why
        super().__init__(f"chunk {chunk_id[:12]} could not be stored: {why}")


class ChunkLost(Exception):
    """No holder returned a verified copy of the chunk."""

    def __init__(self, chunk_id: str, tried: Sequence[str], why: str = "") -> None:
        self.chunk_id, self.tried = chunk_id, tuple(tried)
        super().__init__(f"chunk {chunk_id[:12]}: " + (why or f"no good copy on {', '.join(tried) or 'any node'}"))


@dataclass
class ChunkIO:
    metadata: Metadata
    client: ChunkClient
    nodes: NodeSource
    clock: Callable[[], float]
    corrupt_found: list[tuple[str, str]] = field(default_factory=list)  # (chunk id, node) seen by reads

    def __post_init__(self) -> None:
        self.stripes = StripeIO(self.metadata, self.client, self.nodes, self.clock, self.corrupt_found)

    async def store(self, data: bytes, replicas: int, erasure: ErasureCode | None = None) -> ChunkRef:
        """R copies (`replicas`), or a stripe when the bucket has an `erasure` code."""
        if erasure is not None:
            try:
                return await self.stripes.store(data, erasure)
            except StripeWriteFailed as exc:
                raise ChunkWriteFailed(exc.chunk_id, exc.why) from exc
        cid, size = chunk_id(data), len(data)
        record = await self.metadata.update_chunk(cid, size, touched=self.clock())  # touch before relying on it
        if record.stripe is not None:  # stored erasure-coded by an earlier writer: rely on (and complete) its stripe
            try:
                return await self.stripes.store(data, record.stripe.code)
            except StripeWriteFailed as exc:
                raise ChunkWriteFailed(exc.chunk_id, exc.why) from exc
        nodes = self.nodes()
        reachable = {n.node_id for n in nodes if n.online and n.reachable}  # dedup trusts no offline holder (M4)
        have = set(record.good() & reachable)
        tried = set(record.holders)
        failures: list[str] = []
        while len(have) < replicas:
            placed = place(cid, size, nodes, replicas - len(have), exclude=tried, minimum=1)
            if isinstance(placed, Unplaceable):
                failures.append(placed.explain())
                break
            tried.update(placed.nodes)
            results = await asyncio.gather(*(self.client.put(n, cid, data) for n in placed.nodes),
                                           return_exceptions=True)
            acked = [n for n, r in zip(placed.nodes, results, strict=True) if r is None]
            for r in results:
                if isinstance(r, ChunkUnavailable):
                    failures.append(str(r))
                elif isinstance(r, BaseException):
                    raise r
            if acked:
                await self.metadata.update_chunk(cid, size, add=acked, touched=self.clock())
                have.update(acked)
        if not have:
            raise ChunkWriteFailed(cid, "; ".join(failures) or "no storage node")
        if len(have) < replicas:
            log.warning("chunk %s stored with %d of %d copies: %s", cid[:12], len(have), replicas,
                        "; ".join(failures))
        return ChunkRef(cid, size)

    def _order(self, record: ChunkRecord) -> list[str]:
        """Holders to read from, best first: online good copies by reliability, then the rest (an offline verdict
        may be stale; a failed attempt costs one timeout)."""
        info = {n.node_id: n for n in self.nodes()}

        def key(node_id: str) -> tuple[bool, float, str]:
            n = info.get(node_id)
            return (n is None or not n.online, -(n.reliability if n else 0.0), node_id)

        return sorted(record.good(), key=key)

    async def fetch(self, ref: ChunkRef, record: ChunkRecord | None) -> bytes:
        if record is not None and record.stripe is not None:
            try:
                return await self.stripes.fetch(ref, record)
            except StripeLost as exc:
                if not record.good():  # no replicated copy to fall back on (a writer racing in the other form)
                    raise ChunkLost(ref.id, (), exc.why) from exc
        tried: list[str] = []
        for node in self._order(record) if record is not None else []:
            tried.append(node)
            data: bytes | None
            try:
                data = await self.client.get(node, ref.id)
            except ChunkMismatch:  # the client checked the bytes itself (the overlay client does): a bad copy
                data = None
            except ChunkMissing:  # gone (a wiped disk, a copy the node's scrub deleted): that holder is forgotten
                log.warning("chunk %s is gone from %s: holder forgotten for repair", ref.id[:12], node)
                await self.metadata.update_chunk(ref.id, ref.size, remove=[node])
                continue
            except ChunkUnavailable as exc:
                log.info("read of %s from %s failed: %s", ref.id[:12], node, exc.why)
                continue
            if data is not None and len(data) == ref.size and chunk_id(data) == ref.id:
                return data
            log.warning("corrupt copy of chunk %s on %s: recorded for repair", ref.id[:12], node)
            self.corrupt_found.append((ref.id, node))
            await self.metadata.update_chunk(ref.id, ref.size, bad=[node])
        raise ChunkLost(ref.id, tried)

    async def collect_garbage(self, now: float, grace: float = GC_GRACE_S) -> list[str]:
        """Drop chunks no object refers to and no writer touched within `grace`; delete their copies. Then the
        fragments of erasure-coded chunks dropped now (or before) that no remaining stripe lists. The ids collected."""
        referenced = await self.metadata.referenced_chunks()
        records = {r.id: r for r in await self.metadata.list_chunks()}
        owners = fragment_owners(records.values())
        collected = [cid for cid in unreferenced(records.values(), referenced | owners.keys(), now, grace)
                     if await self._drop(records[cid], now, grace)]
        gone = set(collected)
        orphans = [records[f] for f, owner in owners.items() if f in records and owner <= gone]
        for fid in unreferenced(orphans, referenced, now, grace):
            if await self.metadata.get_chunks(sorted(owners[fid])):
                continue  # an owner was re-created by a writer since: its stripe needs the fragment
            if await self._drop(records[fid], now, grace):
                collected.append(fid)
        return collected

    async def _drop(self, record: ChunkRecord, now: float, grace: float) -> bool:
        cid = record.id
        if not await self.metadata.drop_chunk(cid, unless_touched_since=now - grace):
            return False
        if (await self.metadata.get_chunks([cid])).get(cid) is not None:
            return True  # re-created by a writer since: its copies are in use again
        for node in sorted(record.holders):
            try:
                await self.client.delete(node, cid)
            except ChunkUnavailable as exc:  # an offline node's orphan copy: its scrub/rescan can drop it
                log.info("could not delete collected chunk %s on %s: %s", cid[:12], node, exc.why)
        return True
