"""What it takes to bring every chunk back to R good copies: `plan_repair(chunks, nodes, now)` -> `RepairPlan`. Pure.

A copy is *good* when its holder is online (not declared lost) and the copy is not known corrupt. The plan is derived
from the state every time (resumable: a crashed or interrupted repair simply plans again from what the metadata says
now; copies already made show up as holders and are not made twice) and is bounded by a byte budget (rate-limited:
the caller runs one plan per tick with the budget its rate allows; what did not fit is `deferred`).

Per chunk:
- fewer than R good copies and at least one: copy from the most reliable good holder to targets chosen by
  `placement.place`, excluding every node that holds (or held, corrupt) a copy;
- no good copy: `unrecoverable` (an offline holder may still come back; nothing is deleted);
- more than R good copies: delete the surplus from the least reliable / fullest holders, only while R good copies
  remain elsewhere — never the last good copy;
- corrupt copies on online nodes are deleted (they are not good copies; deleting them loses nothing).

Erasure-coded chunks (a record with a `stripe`) are left out of that plan and planned by `plan_stripe_repair`: a
stripe needs repair when fewer than k + m of its fragments have a good copy on an online node; with at least k good
ones the missing fragments are rebuilt (the executor decodes the chunk from any k and re-encodes the missing ones)
onto nodes that hold or held no fragment of the stripe (`erasure.targets`); fewer than k good is `unrecoverable`. A
fragment with more than one good copy (its node came back after the rebuild) loses the surplus copies, never the
last; corrupt fragment copies on online nodes are deleted.

`unreferenced` is the garbage-collection rule for dedup'd chunks: a chunk no manifest or part references, untouched
for the grace period, goes (the grace covers a writer between deduplicating onto a chunk and committing its
manifest)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dataplane.objects.erasure import layout, targets
from dataplane.objects.model import ChunkRecord, StorageNode, Stripe
from dataplane.objects.placement import Unplaceable, place

GC_GRACE_S = 3600.0


@dataclass(frozen=True, slots=True)
class ChunkState:
    record: ChunkRecord
    replicas: int  # R: the highest any referencing manifest asks for


@dataclass(frozen=True, slots=True)
class Copy:
    chunk_id: str
    size: int
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class Delete:
    """`keep`: a surplus delete goes ahead only while at least this many other good copies on online nodes remain
    when it is carried out (R, or 1 for a fragment): the plan may be minutes old by then (review 4, L1)."""

    chunk_id: str
    node: str
    corrupt: bool = False
    keep: int = 0


@dataclass(frozen=True, slots=True)
class RepairPlan:
    copies: tuple[Copy, ...] = ()
    deletes: tuple[Delete, ...] = ()
    unrecoverable: tuple[str, ...] = ()
    unplaceable: tuple[tuple[str, Unplaceable], ...] = ()  # under-replicated, no target with room
    deferred: tuple[str, ...] = ()  # did not fit this plan's byte budget
    under_replicated: int = 0  # chunks below R at the time of planning

    @property
    def empty(self) -> bool:
        return not (self.copies or self.deletes)


@dataclass
class _Builder:
    nodes: dict[str, StorageNode]
    budget: int | None
    copies: list[Copy] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)
    unplaceable: list[tuple[str, Unplaceable]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    under: int = 0

    def spend(self, size: int) -> bool:
        if self.budget is None:
            return True
        if size > self.budget:
            return False
        self.budget -= size
        return True

    def reserve(self, node_id: str, size: int) -> None:
        node = self.nodes[node_id]
        self.nodes[node_id] = replace(node, used=node.used + size)


def _preference(node: StorageNode | None) -> tuple[float, float]:
    """Sort key, best first: reliable, then least full."""
    if node is None:
        return (1.0, 1.0)
    return (-node.reliability, node.used / node.quota if node.quota > 0 else 1.0)


def plan_repair(chunks: Mapping[str, ChunkState], nodes: Sequence[StorageNode], now: float, *,
                budget: int | None = None) -> RepairPlan:
    """`now` is taken for symmetry with the other cores and future time-based rules (none depend on it yet)."""
    del now
    b = _Builder({n.node_id: n for n in nodes}, budget)
    for chunk_id in sorted(chunks):
        _plan_chunk(b, chunks[chunk_id])
    return RepairPlan(tuple(b.copies), tuple(b.deletes), tuple(b.unrecoverable), tuple(b.unplaceable),
                      tuple(b.deferred), b.under)


def _online(b: _Builder, node_id: str) -> bool:
    node = b.nodes.get(node_id)
    return node is not None and node.online


def _plan_chunk(b: _Builder, state: ChunkState) -> None:
    record, r = state.record, state.replicas
    if record.stripe is not None:  # erasure-coded: plan_stripe_repair's
        return
    good = sorted((n for n in record.good() if _online(b, n)), key=lambda n: (_preference(b.nodes.get(n)), n))
    b.deletes.extend(Delete(record.id, n, corrupt=True) for n in sorted(record.bad & record.holders)
                     if _online(b, n))
    if not good:
        b.unrecoverable.append(record.id)
        return
    if len(good) > r:  # surplus: drop the least preferred while R good copies remain
        b.deletes.extend(Delete(record.id, n, keep=r) for n in good[r:])
        return
    if len(good) == r:
        return
    b.under += 1
    placed = place(record.id, record.size, list(b.nodes.values()), r - len(good), exclude=record.holders,
                   minimum=1)
    if isinstance(placed, Unplaceable):
        b.unplaceable.append((record.id, placed))
        return
    for target in placed.nodes:
        if not b.spend(record.size):
            b.deferred.append(record.id)
            return
        b.copies.append(Copy(record.id, record.size, good[0], target))
        b.reserve(target, record.size)


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Re-create fragments `targets` ((fragment index, new node), ...) of the stripe of chunk `chunk_id`."""

    chunk_id: str
    size: int
    stripe: Stripe
    targets: tuple[tuple[int, str], ...]

    @property
    def bytes(self) -> int:
        return self.stripe.fragment_size * len(self.targets)


@dataclass(frozen=True, slots=True)
class StripePlan:
    rebuilds: tuple[Rebuild, ...] = ()
    deletes: tuple[Delete, ...] = ()  # chunk_id: a fragment id
    unrecoverable: tuple[str, ...] = ()  # chunk ids with fewer than k good fragments
    unplaceable: tuple[tuple[str, Unplaceable], ...] = ()
    deferred: tuple[str, ...] = ()
    degraded: int = 0  # stripes below k + m good fragments at the time of planning

    @property
    def empty(self) -> bool:
        return not (self.rebuilds or self.deletes)


def plan_stripe_repair(stripes: Mapping[str, ChunkRecord], fragments: Mapping[str, ChunkRecord],
                       nodes: Sequence[StorageNode], now: float, *, budget: int | None = None) -> StripePlan:
    """`stripes`: the records (with a stripe) of the erasure-coded chunks to keep; `fragments`: records by fragment id
    (a fragment without one has no copy). `budget`: bytes to write in this plan (a rebuild's fragments, all or none).
    `now` as in `plan_repair`."""
    del now
    b = _Builder({n.node_id: n for n in nodes}, budget)
    rebuilds: list[Rebuild] = []
    for cid in sorted(stripes):
        record = stripes[cid]
        if record.stripe is None:
            continue
        stripe = record.stripe
        lay = layout(stripe, fragments, list(b.nodes.values()))
        for fid in stripe.fragments:
            frag = fragments.get(fid)
            if frag is not None:
                b.deletes.extend(Delete(fid, n, corrupt=True) for n in sorted(frag.bad & frag.holders)
                                 if _online(b, n))
        for i, holders in enumerate(lay.holders):  # surplus copies of a fragment: keep the best one
            b.deletes.extend(Delete(stripe.fragments[i], n, keep=1) for n in holders[1:])
        if not lay.missing:
            continue
        b.under += 1
        if not lay.readable:
            b.unrecoverable.append(cid)
            continue
        placed = targets(cid, stripe, lay.missing, list(b.nodes.values()), lay.occupied, holding=lay.holding)
        if isinstance(placed, Unplaceable):
            b.unplaceable.append((cid, placed))
            continue
        rebuild = Rebuild(cid, record.size, stripe, tuple(placed))
        if not b.spend(rebuild.bytes):
            b.deferred.append(cid)
            continue
        rebuilds.append(rebuild)
        for _, node in placed:
            b.reserve(node, stripe.fragment_size)
    return StripePlan(tuple(rebuilds), tuple(b.deletes), tuple(b.unrecoverable), tuple(b.unplaceable),
                      tuple(b.deferred), b.under)


def unreferenced(records: Iterable[ChunkRecord], referenced: Collection[str], now: float,
                 grace: float = GC_GRACE_S) -> list[str]:
    """Chunks no manifest or part refers to and no writer touched within `grace` seconds: safe to collect."""
    return sorted(r.id for r in records if r.id not in referenced and now - r.touched >= grace)
