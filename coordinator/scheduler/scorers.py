"""Scorers: each rates a feasible node 0..100 for a replica (higher is better); the engine takes the weighted sum.

Contract the engine relies on (and the oracle tests check):
- `key(request)` names the part of the request the score depends on; `None` means the scorer does not apply
  to this request and `score` returns exactly 100.0 for every node. The score never depends on `replica_id`.
- A static scorer (`dynamic = False`) reads only facts that do not change during a pass: the engine computes
  it once per node per key.
- A dynamic scorer reads the pass's working state. `local = True`: only the node's own NodeView (the engine
  keeps a per-node cache and refreshes the one entry a placement touches). `may_increase(request)`: whether a
  placement on a node can *raise* that node's score; placements never raise any other node's score.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar, Final, Protocol, runtime_checkable

from coordinator.scheduler.context import Context
from coordinator.scheduler.model import NodeView, PlacementRequest, SchedulerConfig, matches
from coordinator.spec import Scope, Spread, Strategy, TaintEffect

FULL: Final = 100.0


class Scorer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def dynamic(self) -> bool: ...

    @property
    def local(self) -> bool: ...

    def weight(self, config: SchedulerConfig) -> float: ...

    def key(self, request: PlacementRequest) -> Hashable | None: ...

    def may_increase(self, request: PlacementRequest) -> bool: ...

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float: ...


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class _Static:
    """Defaults for scorers whose answer is fixed for a pass."""

    __slots__ = ()
    dynamic: ClassVar[bool] = False
    local: ClassVar[bool] = True

    def may_increase(self, request: PlacementRequest) -> bool:
        return False


class Locality(_Static):
    """Share of the preferred affinity terms' weight that the node matches (zone preference is a preferred
    term on `cloudless.io/zone`)."""

    name: ClassVar[str] = "locality"

    def weight(self, config: SchedulerConfig) -> float:
        return config.locality_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return request.preferred or None

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        if not request.preferred:
            return FULL
        total = sum(t.weight for t in request.preferred)
        return FULL * sum(t.weight for t in request.preferred if matches(t, node)) / total


class Reliability(_Static):
    name: ClassVar[str] = "reliability"

    def weight(self, config: SchedulerConfig) -> float:
        return config.reliability_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return ()

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        return FULL * _clamp(node.reliability)


class Cost(_Static):
    """Cheapest node of the snapshot 100, dearest 0, linear between (all equal: 100)."""

    name: ClassVar[str] = "cost"

    def weight(self, config: SchedulerConfig) -> float:
        return config.cost_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return ()

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        span = ctx.cost_max - ctx.cost_min
        return FULL if span <= 0 else FULL * _clamp((ctx.cost_max - node.cost) / span)


class NetworkPenalty(_Static):
    """100 for a good link; the worse of the node's penalty and its latency (relative to the ceiling) lowers it."""

    name: ClassVar[str] = "network"

    def weight(self, config: SchedulerConfig) -> float:
        return config.network_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return ()

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        penalty = _clamp(node.network_penalty)
        if node.latency_ms is not None:
            penalty = max(penalty, _clamp(node.latency_ms / ctx.config.latency_ceiling_ms))
        return FULL * (1.0 - penalty)


class PreferNoScheduleTaints(_Static):
    """100 without untolerated PreferNoSchedule taints; each one halves, then thirds ... the score."""

    name: ClassVar[str] = "taints"

    def weight(self, config: SchedulerConfig) -> float:
        return config.taint_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return request.tolerations

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        untolerated = sum(
            1
            for taint in node.taints
            if taint.effect is TaintEffect.PREFER_NO_SCHEDULE
            and not any(taint.tolerated_by(t) for t in request.tolerations)
        )
        return FULL / (1 + untolerated)


def fullness(node: NodeView) -> float:
    """How full a node is, 0..1: the mean of its reserved CPU and memory shares, or its live utilization if
    that is higher (an owner using 90% of the CPU makes the node full whatever we reserved)."""
    cpu_total, mem_total = node.allocatable_cpu_millis, node.allocatable_memory_bytes
    cpu = node.allocated_cpu_millis / cpu_total if cpu_total > 0 else 1.0
    mem = node.allocated_memory_bytes / mem_total if mem_total > 0 else 1.0
    share = _clamp((cpu + mem) / 2.0)
    return share if node.utilization is None else max(share, _clamp(node.utilization))


class UtilizationBalance:
    """binpack: fuller nodes score higher (keep others idle and cool); spread: emptier nodes score higher."""

    name: ClassVar[str] = "utilization"
    dynamic: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def weight(self, config: SchedulerConfig) -> float:
        return config.utilization_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return request.strategy

    def may_increase(self, request: PlacementRequest) -> bool:
        return request.strategy is Strategy.BINPACK

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        full = fullness(node)
        return FULL * (full if request.strategy is Strategy.BINPACK else 1.0 - full)


# how much one replica of another workload crowds a node, next to one of the workload's own (1.0)
OTHERS_CROWD: Final = 0.25


def crowd(node: NodeView, workload: str) -> float:
    """How crowded a node is for a replica of `workload`: its own replicas there, plus a quarter of every other
    replica there (fault domains first, then load)."""
    own = node.workloads.get(workload, 0)
    return own + OTHERS_CROWD * max(0, node.replicas - own)


class Spreading:
    """Spread what may be spread, 100 / (1 + crowding):
    - `spread: node` / `spread: zone`: crowding is the workload's replicas already in the node's domain;
    - no spread asked, `strategy: spread` (the default): crowding is the workload's replicas already on the node
      plus a quarter of the node's other replicas (`crowd`). Utilization alone cannot do this: a 10m replica barely
      moves a node's fullness (and not at all below its live usage), so ten of them went to the same two nodes
      (issue 17). With every other score within reach, N small replicas go to N distinct nodes when N fit;
    - binpack without spread: not applicable (packing is the point).

    `score_all` is `score` for many nodes at once (the engine ranks every node when a workload's first replica
    comes); it computes exactly the same floats."""

    name: ClassVar[str] = "spread"
    dynamic: ClassVar[bool] = True
    local: ClassVar[bool] = False
    __slots__ = ()

    def weight(self, config: SchedulerConfig) -> float:
        return config.spread_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        if request.spread is Spread.NONE and request.strategy is Strategy.BINPACK:
            return None
        return (request.spread, request.workload)

    def may_increase(self, request: PlacementRequest) -> bool:
        return False

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        if request.spread is Spread.NONE:
            if request.strategy is Strategy.BINPACK:
                return FULL
            return FULL / (1.0 + crowd(node, request.workload))
        scope = Scope.ZONE if request.spread is Spread.ZONE else Scope.NODE
        return FULL / (1 + ctx.count(node, request.workload, scope))

    def score_all(self, nodes: Sequence[NodeView], request: PlacementRequest, ctx: Context) -> list[float]:
        if request.spread is not Spread.NONE or request.strategy is Strategy.BINPACK:
            return [self.score(node, request, ctx) for node in nodes]
        w, others = request.workload, OTHERS_CROWD
        # crowd() inlined (twice as fast as calling it), the same arithmetic in the same order
        return [FULL / (1.0 + ((own := n.workloads.get(w, 0)) + others * (n.replicas - own if n.replicas > own else 0)))
                for n in nodes]


@runtime_checkable
class BulkScorer(Protocol):
    """A dynamic scorer that may also rate many nodes in one call (optional: the engine uses it when present)."""

    def score_all(self, nodes: Sequence[NodeView], request: PlacementRequest, ctx: Context) -> list[float]: ...


DEFAULT_SCORERS: Final[tuple[Scorer, ...]] = (
    Locality(),
    Reliability(),
    Cost(),
    NetworkPenalty(),
    PreferNoScheduleTaints(),
    UtilizationBalance(),
    Spreading(),
)
