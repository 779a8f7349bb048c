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

from collections.abc import Hashable
from typing import ClassVar, Final, Protocol

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


class Spreading:
    """When spread is requested: 100 / (1 + sibling replicas already in the node's node or zone domain)."""

    name: ClassVar[str] = "spread"
    dynamic: ClassVar[bool] = True
    local: ClassVar[bool] = False
    __slots__ = ()

    def weight(self, config: SchedulerConfig) -> float:
        return config.spread_weight

    def key(self, request: PlacementRequest) -> Hashable | None:
        return None if request.spread is Spread.NONE else (request.spread, request.workload)

    def may_increase(self, request: PlacementRequest) -> bool:
        return False

    def score(self, node: NodeView, request: PlacementRequest, ctx: Context) -> float:
        if request.spread is Spread.NONE:
            return FULL
        scope = Scope.ZONE if request.spread is Spread.ZONE else Scope.NODE
        return FULL / (1 + ctx.count(node, request.workload, scope))


DEFAULT_SCORERS: Final[tuple[Scorer, ...]] = (
    Locality(),
    Reliability(),
    Cost(),
    NetworkPenalty(),
    PreferNoScheduleTaints(),
    UtilizationBalance(),
    Spreading(),
)
