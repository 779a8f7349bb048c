"""Erasure-coded chunk I/O (the rules are in `erasure`'s docstring): store a chunk as a stripe of k + m fragments on
distinct nodes, read it back from any k verified fragments with read-repair, rebuild missing fragments for the
repairer (`repair_stripes`). The adapter between the pure cores (`erasure`, `placement`, `repair`), the `Metadata`
port and the `ChunkClient` port; fragments travel as chunks (their ids are the SHA-256 of their bytes).

Metadata order on a write: each acknowledged fragment's record gets its holder (and a touch, so garbage collection
spares it) before the chunk's record gets the stripe, so a reader who finds the stripe finds its fragments. A
fragment write that failed may have landed all the same: it is noted as a possible orphan (`Metadata.note_orphans`)
for the repairer's sweep, as the replicated repairer does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from dataplane.objects.chunking import ChunkRef, chunk_id
from dataplane.objects.erasure import (
    Codec,
    CodecUnavailable,
    Layout,
    check_fragments,
    layout,
    load_codec,
    make_stripe,
    targets,
)
from dataplane.objects.model import ChunkRecord, ErasureCode, StorageNode, Stripe
from dataplane.objects.placement import Unplaceable
from dataplane.objects.ports import ChunkClient, ChunkMismatch, ChunkMissing, ChunkUnavailable, Metadata
from dataplane.objects.repair import Delete, Rebuild, StripePlan, plan_stripe_repair

log = logging.getLogger(__name__)


class StripeWriteFailed(Exception):
    def __init__(self, chunk_id: str, why: str) -> None:
        self.chunk_id, self.why = chunk_id, why
        super().__init__(f"chunk {chunk_id[:12]} could not be stored erasure-coded: {why}")


class StripeLost(Exception):
    """Fewer than k verified fragments could be read."""

    def __init__(self, chunk_id: str, why: str) -> None:
        self.chunk_id, self.why = chunk_id, why
        super().__init__(f"chunk {chunk_id[:12]}: {why}")


@dataclass(frozen=True, slots=True)
class StripeRepairReport:
    plan: StripePlan
    rebuilt: int = 0  # fragments written
    rebuilt_bytes: int = 0
    deleted: int = 0
    failed: int = 0


@dataclass
class StripeIO:
    metadata: Metadata
    client: ChunkClient
    nodes: Callable[[], Sequence[StorageNode]]
    clock: Callable[[], float]
    corrupt_found: list[tuple[str, str]] = field(default_factory=list)  # (fragment id, node) seen by reads

    async def _layout(self, stripe: Stripe, nodes: Sequence[StorageNode]) -> Layout:
        return layout(stripe, await self.metadata.get_chunks(list(stripe.fragments)), nodes)

    async def _write(self, cid: str, stripe: Stripe, fragments: Sequence[bytes], want: Sequence[int], *,
                     nodes: Sequence[StorageNode], exclude: set[str],
                     holding: Collection[str]) -> tuple[list[int], list[str]]:
        """Write fragments `want` to new nodes (none in `exclude`, which grows with every node tried; zones balanced
        against `holding`, the nodes with the stripe's good fragments), replacing failed targets; each acknowledged
        fragment's record gets its holder. (indices written, failure reasons)."""
        written: list[int] = []
        failures: list[str] = []
        left = list(want)
        holding = set(holding)
        while left:
            placed = targets(cid, stripe, left, nodes, exclude, holding=holding)
            if isinstance(placed, Unplaceable):
                failures.append(placed.explain())
                break
            exclude.update(node for _, node in placed)
            results = await asyncio.gather(*(self.client.put(node, stripe.fragments[i], fragments[i])
                                             for i, node in placed), return_exceptions=True)
            for (i, node), result in zip(placed, results, strict=True):
                if isinstance(result, ChunkUnavailable):
                    failures.append(str(result))
                    await self.metadata.note_orphans(node, [stripe.fragments[i]], self.clock())  # it may have landed
                elif isinstance(result, BaseException):
                    raise result
                else:
                    await self.metadata.update_chunk(stripe.fragments[i], stripe.fragment_size, add=[node],
                                                     touched=self.clock())
                    written.append(i)
                    left.remove(i)
                    holding.add(node)
        return written, failures

    async def store(self, data: bytes, code: ErasureCode) -> ChunkRef:
        """Store `data` as a stripe; at least k + 1 fragments acknowledged, or StripeWriteFailed (the fragments that
        were written are unreferenced: garbage collection takes them). A chunk already stored replicated with a good
        copy online, or already striped with k + 1 good fragments, is relied on as it is (dedup)."""
        cid, size = chunk_id(data), len(data)
        record = await self.metadata.update_chunk(cid, size, touched=self.clock())  # touch before relying on it
        nodes = self.nodes()
        reachable = {n.node_id for n in nodes if n.online and n.reachable}  # dedup trusts no offline holder (M4)
        if record.stripe is None and record.good() & reachable:
            return ChunkRef(cid, size)
        stripe = record.stripe
        if stripe is not None:
            lay = await self._layout(stripe, nodes)
            if len(lay.good) > stripe.k:
                return ChunkRef(cid, size)
        try:
            codec = load_codec(code if stripe is None else stripe.code, None if stripe is None else stripe.backend)
        except CodecUnavailable as exc:
            raise StripeWriteFailed(cid, str(exc)) from exc
        fragments = codec.encode(data)
        if stripe is None:
            stripe = make_stripe(codec, fragments)
            now = self.clock()  # fragments a failed earlier write left are reused: touched first, so a GC between
            for fid in dict.fromkeys(stripe.fragments):  # here and the stripe's commit spares them (review 4, M1)
                await self.metadata.update_chunk(fid, stripe.fragment_size, touched=now)
            lay = await self._layout(stripe, nodes)
        elif (problem := check_fragments(stripe, fragments)) is not None:
            raise StripeWriteFailed(cid, problem)
        written, failures = await self._write(cid, stripe, fragments, lay.missing, nodes=nodes,
                                               exclude=set(lay.occupied), holding=lay.holding)
        good = len(lay.good) + len(written)
        if good <= stripe.k:
            raise StripeWriteFailed(cid, f"{good} of {stripe.k + stripe.m} fragments stored, {stripe.k + 1} needed: "
                                    + ("; ".join(failures) or "no storage node"))
        if good < stripe.k + stripe.m:
            log.warning("chunk %s stored with %d of %d fragments: %s", cid[:12], good, stripe.k + stripe.m,
                        "; ".join(failures))
        if record.stripe is None:
            await self.metadata.update_chunk(cid, size, stripe=stripe, touched=self.clock())
        return ChunkRef(cid, size)

    async def _gather(self, cid: str, stripe: Stripe, lay: Layout) -> tuple[dict[int, bytes], set[int]]:
        """Read k verified fragments (k at a time in parallel, the next candidate for each failure). A copy found
        corrupt is recorded bad; a node that answers it has no copy (`ChunkMissing`: a wiped disk, a copy its own
        scrub deleted) is forgotten as a holder. (fragments by index, indices found corrupt or missing)."""
        got: dict[int, bytes] = {}
        corrupt: set[int] = set()
        pending = lay.read_order()
        while len(got) < stripe.k and pending:
            batch: list[tuple[int, str]] = []
            for attempt in list(pending):
                if len(batch) == stripe.k - len(got):
                    break
                if attempt[0] not in got and all(attempt[0] != i for i, _ in batch):
                    batch.append(attempt)
                    pending.remove(attempt)
            if not batch:
                break
            results = await asyncio.gather(*(self.client.get(node, stripe.fragments[i]) for i, node in batch),
                                           return_exceptions=True)
            for (i, node), result in zip(batch, results, strict=True):
                fid = stripe.fragments[i]
                if isinstance(result, bytes):
                    if len(result) == stripe.fragment_size and chunk_id(result) == fid:
                        got[i] = result
                        continue
                elif isinstance(result, ChunkMismatch):
                    pass
                elif isinstance(result, ChunkMissing):
                    log.warning("fragment %d of chunk %s is gone from %s: holder forgotten", i, cid[:12], node)
                    corrupt.add(i)
                    await self.metadata.update_chunk(fid, stripe.fragment_size, remove=[node])
                    continue
                elif isinstance(result, ChunkUnavailable):
                    log.info("read of fragment %d of %s from %s failed: %s", i, cid[:12], node, result.why)
                    continue
                elif isinstance(result, BaseException):
                    raise result
                log.warning("corrupt fragment %d of chunk %s on %s: recorded for repair", i, cid[:12], node)
                self.corrupt_found.append((fid, node))
                corrupt.add(i)
                await self.metadata.update_chunk(fid, stripe.fragment_size, bad=[node])
        return got, corrupt

    async def _decode(self, ref: ChunkRef, stripe: Stripe, lay: Layout) -> tuple[bytes, Codec, set[int]]:
        try:
            codec = load_codec(stripe.code, stripe.backend)
        except CodecUnavailable as exc:
            raise StripeLost(ref.id, str(exc)) from exc
        got, corrupt = await self._gather(ref.id, stripe, lay)
        if len(got) < stripe.k:
            raise StripeLost(ref.id, f"{len(got)} of the {stripe.k} fragments needed could be read "
                             f"({len(lay.good)} of {stripe.k + stripe.m} had a good copy on an online node)")
        try:
            data = codec.decode([got[i] for i in sorted(got)])
        except Exception as exc:  # pyeclib's ECDriverError family: verified fragments that do not fit together
            raise StripeLost(ref.id, f"the fragments do not decode: {exc}") from exc
        if len(data) != ref.size or chunk_id(data) != ref.id:
            raise StripeLost(ref.id, "the fragments decode to other bytes than the chunk's")
        return data, codec, corrupt

    async def fetch(self, ref: ChunkRef, record: ChunkRecord) -> bytes:
        """The chunk from any k good fragments; fragments found corrupt or lost are rewritten elsewhere."""
        assert record.stripe is not None, "fetch of a chunk that is not striped"
        stripe, nodes = record.stripe, self.nodes()
        lay = await self._layout(stripe, nodes)
        data, codec, corrupt = await self._decode(ref, stripe, lay)
        lost = sorted(set(lay.missing) | corrupt)
        if lost:
            await self._read_repair(ref.id, codec, data, lay, lost=lost, nodes=nodes)
        return data

    async def _read_repair(self, cid: str, codec: Codec, data: bytes, lay: Layout, *, lost: list[int],
                           nodes: Sequence[StorageNode]) -> None:
        """Re-encode fragments `lost` from the decoded chunk and write them to nodes outside the stripe (`lay`: its
        layout before the read; the copies found corrupt were already holders, so stay excluded). Best effort: a
        failure leaves the stripe degraded for the repairer, never fails the read; with no eligible node (every one
        holds a fragment) nothing is encoded."""
        stripe = lay.stripe
        if isinstance(targets(cid, stripe, lost, nodes, lay.occupied, holding=lay.holding), Unplaceable):
            return
        fragments = codec.encode(data)
        if (problem := check_fragments(stripe, fragments)) is not None:
            log.error("read-repair of %s skipped: %s", cid[:12], problem)
            return
        written, failures = await self._write(cid, stripe, fragments, lost, nodes=nodes, exclude=set(lay.occupied),
                                              holding=lay.holding)
        if written:
            log.info("read-repair of %s: rewrote fragments %s", cid[:12], written)
        if failures:
            log.info("read-repair of %s incomplete: %s", cid[:12], "; ".join(failures))

    async def rebuild(self, rebuild: Rebuild) -> tuple[int, bool]:
        """Carry out one planned rebuild: decode from any k good fragments, re-encode, write the planned targets.
        (fragments written, all of them written)."""
        stripe, nodes = rebuild.stripe, self.nodes()
        lay = await self._layout(stripe, nodes)
        try:
            data, codec, _ = await self._decode(ChunkRef(rebuild.chunk_id, rebuild.size), stripe, lay)
        except StripeLost as exc:
            log.info("repair: cannot rebuild %s: %s", rebuild.chunk_id[:12], exc.why)
            return 0, False
        fragments = codec.encode(data)
        if (problem := check_fragments(stripe, fragments)) is not None:
            log.error("repair: cannot rebuild %s: %s", rebuild.chunk_id[:12], problem)
            return 0, False
        results = await asyncio.gather(*(self.client.put(node, stripe.fragments[i], fragments[i])
                                         for i, node in rebuild.targets), return_exceptions=True)
        written = 0
        for (i, node), result in zip(rebuild.targets, results, strict=True):
            if isinstance(result, ChunkUnavailable):
                log.info("repair: cannot write fragment %d of %s to %s: %s", i, rebuild.chunk_id[:12], node,
                         result.why)
                await self.metadata.note_orphans(node, [stripe.fragments[i]], self.clock())  # it may have landed
            elif isinstance(result, BaseException):
                raise result
            else:
                await self.metadata.update_chunk(stripe.fragments[i], stripe.fragment_size, add=[node])
                written += 1
        return written, written == len(rebuild.targets)


async def repair_stripes(metadata: Metadata, client: ChunkClient, nodes: Sequence[StorageNode], now: float, *,
                         delete: Callable[[Delete], Awaitable[bool]], budget: int | None = None,
                         striped: Mapping[str, ChunkRecord] | None = None) -> StripeRepairReport:
    """One repair pass over the erasure-coded chunks that a manifest or part refers to: plan (`plan_stripe_repair`)
    from the metadata as it is now (resumable like the replicated pass), rebuild, and delete surplus and corrupt
    fragment copies with `delete` (the replicated repairer's own, `Repairer._delete`: a fragment copy is a chunk
    copy, deleted by the same rules). `striped`: the referenced chunks' records that have a stripe, when the caller
    has listed them already (the repairer: one listing per pass, and no fragment lookup at all when no referenced
    chunk is erasure-coded; review 4, M5); their fragments' records are then read by id."""
    if striped is None:
        referenced = await metadata.referenced_chunks()
        records = {r.id: r for r in await metadata.list_chunks()}
        stripes = {cid: r for cid, r in records.items() if r.stripe is not None and cid in referenced}
    else:
        stripes = {cid: r for cid, r in striped.items() if r.stripe is not None}
        wanted = sorted({f for r in stripes.values() if r.stripe is not None for f in r.stripe.fragments})
        records = await metadata.get_chunks(wanted) if wanted else {}
    plan = plan_stripe_repair(stripes, records, nodes, now, budget=budget)
    io = StripeIO(metadata, client, lambda: nodes, lambda: now)
    rebuilt = rebuilt_bytes = deleted = failed = 0
    for rebuild in plan.rebuilds:
        written, complete = await io.rebuild(rebuild)
        rebuilt, rebuilt_bytes = rebuilt + written, rebuilt_bytes + written * rebuild.stripe.fragment_size
        failed += 0 if complete else 1
    for copy in plan.deletes:
        if await delete(copy):
            deleted += 1
        else:
            failed += 1
    return StripeRepairReport(plan, rebuilt, rebuilt_bytes, deleted, failed)
