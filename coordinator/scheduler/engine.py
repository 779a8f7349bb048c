"""The scheduling engine: `schedule` and `schedule_many` over one snapshot, deterministic for a snapshot and seed.

Theory of operation. A `SchedulingPass` owns a working copy of the snapshot's nodes; every placement adds its
requests to the chosen node (allocated CPU/memory, replica and workload counts, host ports) before the next
decision, so one pass can never double-book. The answer is always the exact arg-max over all feasible nodes
of the weighted score, ties broken by `tiebreak(seed, workload, node_id)`; the engine only avoids recomputing
what cannot have changed:

- Replicas of one workload ask the same question, so per *group* (a request minus its replica id) the engine
  runs the static filters once (each static filter once per node per distinct key, shared between groups),
  sums the static scores once, and keeps a max-heap of the feasible nodes keyed by their total score.
- Lazy re-evaluation: within a pass a node's score can only go down, except under binpack where a placement
  raises the chosen node's fullness. Invariant: every still-feasible node has a heap entry whose key is >= its
  current score. So the engine pops the top entry, re-checks the dynamic filters and recomputes the score;
  if the key is still exact that node is the arg-max, otherwise it re-pushes it with the fresh key. Nodes
  whose score may have risen (those placed on since the group last ran, for groups with `may_increase`)
  are re-pushed with fresh keys before the group decides again.
- A node a dynamic filter rejects is dropped from the group for the rest of the pass: capacity only shrinks
  and replica counts only grow during a pass, so such a rejection cannot be undone.
- An unschedulable answer gives every node's reason, exactly as a fresh check would: static reasons are
  computed once per group; a dynamic one is recorded when the node is dropped and re-checked only if the
  node was placed on since, or if the filter that rejected it reads zone-wide state.

Static work is O(nodes) per distinct group, a decision is O(log nodes) amortised plus the stale entries it
pops. Groups beyond `max_cached_groups` are evicted least-recently-used and rebuilt (from current state) if
needed again. `schedule_many` therefore places workload by workload; `SchedulingPass.place` accepts any order,
but interleaving many workloads makes decisions approach O(nodes) each (stale entries, binpack catch-up).

Filters and scorers never read `replica_id` (that is what makes a group's work reusable); the oracle tests
check the engine against a brute-force evaluation of every filter and scorer on every node.
Pure: no I/O, no clocks, no unseeded randomness; the working copy is the only mutable state.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections import Counter
from collections.abc import Generator, Hashable, Iterable, Iterator, Sequence
from heapq import heapify, heappop, heappush, heapreplace
from itertools import compress
from typing import Final

from coordinator.errors import SchedulerInvariantError, SnapshotError
from coordinator.scheduler.context import Context
from coordinator.scheduler.filters import DEFAULT_FILTERS, Filter
from coordinator.scheduler.model import (
    DEFAULT_CONFIG,
    NodeView,
    Placement,
    PlacementRequest,
    Reject,
    SchedulerConfig,
    Snapshot,
    Unschedulable,
)
from coordinator.scheduler.scorers import DEFAULT_SCORERS, FULL, BulkScorer, Scorer

Result = Placement | Unschedulable

_CONST: Final = 0  # dynamic term: scorer not applicable, contributes weight * 100
_ARRAY: Final = 1  # local dynamic scorer: value from the pass-wide per-node cache
_CALL: Final = 2  # non-local dynamic scorer: computed on demand
CHECKS_PER_STEP: Final = 10_000  # static filter checks per stage of `prepare_steps` (~2.5 ms of CPU)
SCORES_PER_STEP: Final = 2_500  # nodes one scorer scores per stage of `prepare_steps` (~1-5 ms of CPU)

_Term = tuple[int, float, object]


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# A node id's hash, kept between passes: every pass hashes every node (5,000 took ~5 ms of CPU in the step that sets
# the pass up), and the ids are the same from one pass to the next.
_node_id_hash = functools.lru_cache(maxsize=1 << 16)(_hash64)


def tiebreak(seed: int, workload: str, node_id: str) -> int:
    """Among equal scores the node with the smallest value wins. Stable across processes and node order;
    varies by workload so equal-scoring workloads do not all pile onto the same node."""
    return _hash64(f"{seed}\x00{workload}") ^ _hash64(node_id)


def _group_key(r: PlacementRequest) -> Hashable:
    return (
        r.workload,
        r.cpu_millis,
        r.memory_bytes,
        r.archs,
        r.oses,
        r.node_selector,
        r.zones,
        r.regions,
        r.required,
        r.preferred,
        r.anti_affinity,
        r.anti_affinity_scope,
        r.tolerations,
        r.spread,
        r.strategy,
        r.host_ports,
        r.abilities,
        r.refused_by,
    )


class _LocalScores:
    """Per-node values of one local dynamic scorer for one key, refreshed where a placement lands."""

    __slots__ = ("request", "scorer", "values")

    def __init__(self, scorer: Scorer, request: PlacementRequest, values: list[float]) -> None:
        self.scorer, self.request, self.values = scorer, request, values


class _Group:
    """Everything one group of identical requests reuses between decisions."""

    __slots__ = (
        "alive",
        "cursor",
        "dead",
        "grows",
        "heap",
        "rejects",
        "request",
        "salt",
        "static",
        "static_counts",
        "static_reasons",
        "terms",
        "verdict",
        "verdict_at",
    )

    def __init__(self, request: PlacementRequest, rejects: dict[int, Reject], alive: bytearray) -> None:
        self.request = request
        self.rejects = rejects  # static rejections by node index
        self.alive = alive  # 1 = statically feasible and not (yet) rejected by a dynamic filter
        # node index -> (dynamic rejection, log length when recorded, whether the rejecting filter is local)
        self.dead: dict[int, tuple[Reject, int, bool]] = {}
        self.static_reasons: dict[str, Reject] | None = None
        self.static_counts: Counter[str] = Counter()
        self.verdict: Unschedulable | None = None
        self.verdict_at = -1
        self.static: list[float] = []
        self.terms: list[_Term] = []
        self.heap: list[tuple[float, int, int]] = []
        self.salt = 0
        self.cursor = 0  # position in the pass's placement log this group has caught up with
        self.grows = False


class SchedulingPass:
    """Places requests one at a time against a working copy of `snapshot` (see the module docstring)."""

    def __init__(
        self,
        snapshot: Snapshot,
        config: SchedulerConfig = DEFAULT_CONFIG,
        *,
        seed: int = 0,
        filters: Sequence[Filter] = DEFAULT_FILTERS,
        scorers: Sequence[Scorer] = DEFAULT_SCORERS,
    ) -> None:
        self._nodes = list(snapshot.nodes)
        seen: set[str] = set()
        for node in self._nodes:
            if node.node_id in seen:
                raise SnapshotError(f"duplicate node id {node.node_id!r} in snapshot", node_id=node.node_id)
            seen.add(node.node_id)
        self.revision = snapshot.revision
        self._config = config
        self._seed = seed
        self._ctx = Context(self._nodes, config)
        self._static_filters = [f for f in filters if f.static]
        self._dynamic_filters = [f for f in filters if not f.static]
        self._scorers = [(s, w) for s in scorers if (w := s.weight(config)) > 0]
        self._static_scorers = [(s, w) for s, w in self._scorers if not s.dynamic]
        self._dynamic_scorers = [(s, w) for s, w in self._scorers if s.dynamic]
        self._weight_total = sum(w for _, w in self._scorers) or 1.0
        self._node_hash = [_node_id_hash(n.node_id) for n in self._nodes]
        self._rejects: dict[tuple[Filter, Hashable], dict[int, Reject]] = {}
        self._scores: dict[tuple[Scorer, Hashable], list[float]] = {}
        self._totals: dict[Hashable, list[float]] = {}
        self._local: dict[tuple[Scorer, Hashable], _LocalScores] = {}
        self._groups: dict[Hashable, _Group] = {}
        self._log: list[int] = []  # node index of every placement, in order
        self._placed_at = [-1] * len(self._nodes)  # log position of the last placement on each node

    @property
    def nodes(self) -> tuple[NodeView, ...]:
        """The working copy: the snapshot's nodes with this pass's placements added."""
        return tuple(self._nodes)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.nodes, self.revision)

    def place(self, request: PlacementRequest) -> Result:
        """Choose a node for one replica and reserve its requests there, or explain why none fits."""
        group = self._group(request)
        if group.grows and group.cursor < len(self._log):
            self._catch_up(group)
        heap, alive, nodes, static = group.heap, group.alive, self._nodes, group.static
        ctx, dynamic_filters = self._ctx, self._dynamic_filters
        while heap:
            negated, rank, i = heap[0]
            if not alive[i]:
                heappop(heap)
                continue
            node = nodes[i]
            reject: Reject | None = None
            for f in dynamic_filters:
                reject = f.check(node, request, ctx)
                if reject is not None:
                    alive[i] = 0
                    group.dead[i] = (reject, len(self._log), f.local)
                    heappop(heap)
                    break
            if reject is not None:
                continue
            key = static[i] + self._dynamic(group, i, node, request)
            if key == -negated:
                return self._commit(group, i, request, key)
            heapreplace(heap, (-key, rank, i))
        return self._unschedulable(group, request)

    def place_all(self, requests: Iterable[PlacementRequest]) -> list[Result]:
        return [self.place(r) for r in requests]

    def prepared(self, request: PlacementRequest) -> bool:
        """The ranking for requests like this one is built (the next `place` of one is cheap)."""
        return _group_key(request) in self._groups

    def prepare(self, request: PlacementRequest) -> None:
        """Build the ranking for requests like this one now (O(nodes)); `place` changes nothing by it."""
        self._group(request)

    def prepare_steps(self, request: PlacementRequest) -> Iterator[None]:
        """`prepare` in stages, each a bounded part of the O(nodes) whole, yielding between them: the static
        filters (CHECKS_PER_STEP checks a stage), each static and each local dynamic scorer's column
        (SCORES_PER_STEP nodes a stage), then the ranking itself. Each stage fills the
        pass's caches the next reuses, so the result is exactly `prepare`'s; nothing happens if already prepared."""
        if self.prepared(request):
            return
        yield from self._static_rejects_steps(request)
        yield
        for s, _ in self._static_scorers:  # each static scorer's column, in stages of its own
            key = s.key(request)
            if key is not None and (s, key) not in self._scores:
                column = yield from self._column_steps(s, request)
                self._scores.setdefault((s, key), column)  # one built meanwhile (a place between stages) stays
        self._static_total(request)
        yield
        for s, _ in self._dynamic_scorers:  # each local dynamic scorer's column, likewise
            key = s.key(request)
            if key is not None and s.local and (s, key) not in self._local:
                values = yield from self._column_steps(s, request)
                # a place between the stages may have built this column for another group meanwhile; that group's
                # terms hold it and placements keep it current: keep it, never replace it (review 5, L1)
                self._local.setdefault((s, key), _LocalScores(s, request, values))
        self._terms(request)
        yield
        self._group(request)

    def _column_steps(self, s: Scorer, request: PlacementRequest) -> Generator[None, None, list[float]]:
        """`s.score` of every node, as `_static_scores` and `_terms` compute it, in stages of SCORES_PER_STEP
        nodes (at 5,000 nodes the utilization scorer's column alone took ~10 ms of CPU, all static ones ~12 ms)."""
        ctx, nodes, per, mark = self._ctx, self._nodes, SCORES_PER_STEP, len(self._log)
        values: list[float] = []
        for start in range(0, len(nodes), per):
            values.extend([s.score(node, request, ctx) for node in nodes[start:start + per]])
            yield
        for i in self._log[mark:]:  # a caller that placed between the stages: those nodes as they are now
            values[i] = s.score(nodes[i], request, ctx)
        return values

    # ---- groups ------------------------------------------------------------------------------------------

    def _group(self, request: PlacementRequest) -> _Group:
        key = _group_key(request)
        group = self._groups.pop(key, None)
        if group is None:
            group = self._build(request)
            if len(self._groups) >= self._config.max_cached_groups:
                del self._groups[next(iter(self._groups))]
        self._groups[key] = group  # (re)insert last: the dict's order is the LRU order
        return group

    def _build(self, request: PlacementRequest) -> _Group:
        n = len(self._nodes)
        rejects: dict[int, Reject] = {}
        for f in self._static_filters:
            for i, reject in self._static_rejects(f, request).items():
                rejects.setdefault(i, reject)
        alive = bytearray(b"\x01") * n
        for i in rejects:
            alive[i] = 0
        group = _Group(request, rejects, alive)
        group.static = self._static_total(request)
        group.terms = self._terms(request)
        group.grows = any(s.may_increase(request) for s, _ in self._dynamic_scorers if s.key(request) is not None)
        group.salt = _hash64(f"{self._seed}\x00{request.workload}")
        group.cursor = len(self._log)
        static, salt, hashes = group.static, group.salt, self._node_hash
        dynamic = self._dynamic_column(group, request)
        group.heap = [(-(static[i] + dynamic[i]), salt ^ hashes[i], i) for i in compress(range(n), alive)]
        heapify(group.heap)
        return group

    def _static_rejects(self, f: Filter, request: PlacementRequest) -> dict[int, Reject]:
        key = (f, f.key(request))
        cached = self._rejects.get(key)
        if cached is None:
            ctx = self._ctx
            cached = {i: r for i, node in enumerate(self._nodes) if (r := f.check(node, request, ctx)) is not None}
            self._rejects[key] = cached
        return cached

    def _static_rejects_steps(self, request: PlacementRequest) -> Iterator[None]:
        """Every static filter's rejections for `request`, cached as `_static_rejects` caches them, in stages of
        about CHECKS_PER_STEP filter checks (at 5,000 nodes all nine filters in one step took 11-25 ms of CPU). A
        filter's rejections are cached only once complete: a stage left unfinished leaves nothing half-built."""
        ctx, nodes, count, budget = self._ctx, self._nodes, len(self._nodes), CHECKS_PER_STEP
        for f in self._static_filters:
            key = (f, f.key(request))
            if key in self._rejects:
                continue
            found: dict[int, Reject] = {}
            start = 0
            while start < count:
                end = min(count, start + budget)
                for i in range(start, end):
                    if (r := f.check(nodes[i], request, ctx)) is not None:
                        found[i] = r
                budget -= end - start
                start = end
                if budget <= 0:
                    yield
                    budget = CHECKS_PER_STEP
            self._rejects[key] = found

    def _static_scores(self, s: Scorer, key: Hashable, request: PlacementRequest) -> list[float]:
        cached = self._scores.get((s, key))
        if cached is None:
            ctx = self._ctx
            cached = self._scores[(s, key)] = [s.score(node, request, ctx) for node in self._nodes]
        return cached

    def _static_total(self, request: PlacementRequest) -> list[float]:
        """Weighted sum of the static scores per node, added in scorer order (the oracle adds the same way)."""
        keys = tuple((s, s.key(request)) for s, _ in self._static_scorers)
        cached = self._totals.get(keys)
        if cached is None:
            columns = [
                (w, self._static_scores(s, k, request) if k is not None else None)
                for (s, w), (_, k) in zip(self._static_scorers, keys, strict=True)
            ]
            cached = [0.0] * len(self._nodes)
            for w, values in columns:  # column by column: the same additions in the same order, but faster
                if values is None:
                    constant = w * FULL
                    cached = [t + constant for t in cached]
                else:
                    cached = [t + w * v for t, v in zip(cached, values, strict=True)]
            self._totals[keys] = cached
        return cached

    def _terms(self, request: PlacementRequest) -> list[_Term]:
        terms: list[_Term] = []
        for s, w in self._dynamic_scorers:
            key = s.key(request)
            if key is None:
                terms.append((_CONST, w * FULL, None))
            elif s.local:
                local = self._local.get((s, key))
                if local is None:
                    values = [s.score(node, request, self._ctx) for node in self._nodes]
                    local = self._local[(s, key)] = _LocalScores(s, request, values)
                terms.append((_ARRAY, w, local.values))
            else:
                terms.append((_CALL, w, s))
        return terms

    def _dynamic_column(self, group: _Group, request: PlacementRequest) -> list[float]:
        """`_dynamic` for every statically feasible node at once (0.0 elsewhere), summed in the same order."""
        column = [0.0] * len(self._nodes)
        for kind, w, payload in group.terms:
            if kind == _CONST:
                column = [t + w for t in column]
            elif kind == _ARRAY:
                column = [t + w * v for t, v in zip(column, payload, strict=True)]  # type: ignore[call-overload]
            else:
                scorer: Scorer = payload  # type: ignore[assignment]
                nodes, alive, ctx = self._nodes, group.alive, self._ctx
                if isinstance(scorer, BulkScorer):  # one call for every node (dead ones too: cheaper than picking)
                    values = scorer.score_all(nodes, request, ctx)
                    column = [t + w * v if a else t for t, v, a in zip(column, values, alive, strict=True)]
                else:
                    column = [t + w * scorer.score(nodes[i], request, ctx) if alive[i] else t
                              for i, t in enumerate(column)]
        return column

    def _dynamic(self, group: _Group, i: int, node: NodeView, request: PlacementRequest) -> float:
        total = 0.0
        for kind, w, payload in group.terms:
            if kind == _CONST:
                total += w
            elif kind == _ARRAY:
                total += w * payload[i]  # type: ignore[index]
            else:
                total += w * payload.score(node, request, self._ctx)  # type: ignore[attr-defined]
        return total

    def _catch_up(self, group: _Group) -> None:
        """Re-push, with fresh keys, nodes placed on since this group last ran (their score may have risen)."""
        heap, alive, nodes, static = group.heap, group.alive, self._nodes, group.static
        for i in dict.fromkeys(self._log[group.cursor :]):
            if alive[i]:
                key = static[i] + self._dynamic(group, i, nodes[i], group.request)
                heappush(heap, (-key, group.salt ^ self._node_hash[i], i))
        group.cursor = len(self._log)

    # ---- outcomes ----------------------------------------------------------------------------------------

    def _commit(self, group: _Group, i: int, request: PlacementRequest, key: float) -> Placement:
        node = self._nodes[i]
        breakdown = self._breakdown(i, node, request)
        workloads = dict(node.workloads)
        workloads[request.workload] = workloads.get(request.workload, 0) + 1
        placed = dataclasses.replace(
            node,
            allocated_cpu_millis=node.allocated_cpu_millis + request.cpu_millis,
            allocated_memory_bytes=node.allocated_memory_bytes + request.memory_bytes,
            replicas=node.replicas + 1,
            desired_bytes=node.desired_bytes + request.wire_bytes,
            workloads=workloads,
            host_ports=node.host_ports.union(request.host_ports) if request.host_ports else node.host_ports,
        )
        self._nodes[i] = placed
        self._ctx.record(placed, request.workload)
        for local in self._local.values():
            local.values[i] = local.scorer.score(placed, local.request, self._ctx)
        self._placed_at[i] = len(self._log)
        self._log.append(i)
        return Placement(node.node_id, key / self._weight_total, breakdown)

    def _breakdown(self, i: int, node: NodeView, request: PlacementRequest) -> dict[str, float]:
        out: dict[str, float] = {}
        for s, _ in self._scorers:
            key = s.key(request)
            if key is None:
                out[s.name] = FULL
            elif s.dynamic:
                out[s.name] = s.score(node, request, self._ctx)
            else:
                out[s.name] = self._static_scores(s, key, request)[i]
        return out

    def _unschedulable(self, group: _Group, request: PlacementRequest) -> Unschedulable:
        """Every node's reason: static ones computed once per group, dynamic ones recorded when the node was
        dropped and re-checked only if it could have changed since (a placement on it, or a non-local filter)."""
        if group.verdict is not None and group.verdict_at == len(self._log):
            return group.verdict  # nothing was placed since: the same answer
        nodes = self._nodes
        if group.static_reasons is None:
            group.static_reasons = {nodes[i].node_id: r for i, r in sorted(group.rejects.items())}
            group.static_counts = Counter(r.category for r in group.static_reasons.values())
        reasons = dict(group.static_reasons)
        counts = group.static_counts.copy()
        now = len(self._log)
        for i in compress(range(len(nodes)), group.alive):  # cannot happen: the heap held every such node
            raise SchedulerInvariantError(f"node {nodes[i].node_id!r} passes every filter but was not ranked")
        for i, (recorded, at, local) in group.dead.items():
            reject = recorded
            if not local or self._placed_at[i] >= at:
                fresh = self._first_dynamic_reject(nodes[i], request)
                if fresh is None:
                    raise SchedulerInvariantError(f"node {nodes[i].node_id!r} was dropped but now fits")
                reject = fresh
                group.dead[i] = (reject, now, local)
            reasons[nodes[i].node_id] = reject
            counts[reject.category] += 1
        group.verdict = Unschedulable.explain(reasons, counts)
        group.verdict_at = now
        return group.verdict

    def _first_dynamic_reject(self, node: NodeView, request: PlacementRequest) -> Reject | None:
        ctx = self._ctx
        return next((r for f in self._dynamic_filters if (r := f.check(node, request, ctx)) is not None), None)


def schedule(
    snapshot: Snapshot, request: PlacementRequest, config: SchedulerConfig = DEFAULT_CONFIG, seed: int = 0
) -> Result:
    """Place one replica: the best feasible node, or the reason every node was rejected."""
    return SchedulingPass(snapshot, config, seed=seed).place(request)


def schedule_many(
    snapshot: Snapshot,
    requests: Iterable[PlacementRequest],
    config: SchedulerConfig = DEFAULT_CONFIG,
    seed: int = 0,
) -> list[Result]:
    """Place replicas in one pass, each seeing the ones placed before it; one result per request, in request order.

    Replicas are placed workload by workload (workloads in order of first appearance, replicas in request
    order): the engine reuses a workload's ranking between its replicas, so interleaving workloads would
    make every decision O(nodes). Use `SchedulingPass.place` to impose a different order.
    """
    requests = list(requests)
    results: dict[int, Result] = {}
    for part in schedule_slices(snapshot, requests, config, seed):
        results.update(part)
    return [results[i] for i in range(len(requests))]


def schedule_slices(
    snapshot: Snapshot,
    requests: Sequence[PlacementRequest],
    config: SchedulerConfig = DEFAULT_CONFIG,
    seed: int = 0,
    *,
    size: int = 0,
) -> Iterator[list[tuple[int, Result]]]:
    """`schedule_many` in slices of at most `size` decisions (0: one slice), each a list of (request index,
    result), in the order decided; together exactly `schedule_many`'s results. For an asyncio caller that must
    not hold its loop through thousands of decisions (issue 17): yield to the loop between slices. The pass lives
    in the generator, so the snapshot is the one given, whatever changes meanwhile.

    With a `size`, the O(nodes) work comes in slices of its own, empty ones: setting up the pass, then each
    workload's ranking in stages before its first decision (at 5,000 nodes ~10 ms, and ~20 ms for a ranking in
    four stages; a decision after that ~30 us)."""
    first: dict[str, int] = {}
    for i, r in enumerate(requests):
        first.setdefault(r.workload, i)
    order = sorted(range(len(requests)), key=lambda i: first[requests[i].workload])
    sched = SchedulingPass(snapshot, config, seed=seed)
    if size <= 0:
        yield [(i, sched.place(requests[i])) for i in order]
        return
    yield []  # the pass's set-up was this step
    part: list[tuple[int, Result]] = []
    for i in order:
        request = requests[i]
        if not sched.prepared(request):
            if part:
                yield part
                part = []
            for _ in sched.prepare_steps(request):
                yield []  # a stage of the ranking was this step
            yield []  # ... and its last one
        part.append((i, sched.place(request)))
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part
