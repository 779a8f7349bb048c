"""The scheduler's values: what it sees (NodeView, Snapshot), what it is asked (PlacementRequest), what it answers
(Placement, Unschedulable, Reject) and how it is tuned (SchedulerConfig).

All frozen; mappings inside them are treated as immutable. Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, get_type_hints

from broker.wire import MAX_PAYLOAD_BYTES, DesiredState, ObservedState
from broker.wire.schema import Items
from coordinator.errors import ConfigError
from coordinator.scheduler import abilities
from coordinator.spec import (
    NodeSelectorRequirement,
    Operator,
    PreferredTerm,
    Scope,
    Spread,
    Strategy,
    TaintEffect,
    Toleration,
    TolerationOperator,
    Workload,
)

DESIRED_BUDGET_BYTES: Final = MAX_PAYLOAD_BYTES - 256 * 1024


def _items_cap(message: type, field_name: str) -> int:
    """The wire contract's bound on the number of items of one field of a message (its `Items` marker)."""
    hint = get_type_hints(message, include_extras=True)[field_name]
    return min(m.max_items for m in getattr(hint, "__metadata__", ()) if isinstance(m, Items))


# a node's desired state lists its replicas in one message, and its observed state reports them in one: neither may
# hold more items than the wire allows, however small each replica is (the byte budget alone does not bound that)
DESIRED_MAX_REPLICAS: Final = min(_items_cap(DesiredState, "replicas"), _items_cap(ObservedState, "replicas"))

# Labels every node has implicitly, resolved from NodeView fields (like Kubernetes' topology labels), so
# affinity terms and selectors can name a node's zone, region, arch, os or id.
LABEL_NODE: Final = "cloudless.io/node"
LABEL_ZONE: Final = "cloudless.io/zone"
LABEL_REGION: Final = "cloudless.io/region"
LABEL_ARCH: Final = "cloudless.io/arch"
LABEL_OS: Final = "cloudless.io/os"

_ARCH_ALIASES: Final = {
    "arm64": "aarch64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "armv7l": "armv7",
    "armhf": "armv7",
    "arm": "armv7",
    "i686": "x86",
    "i386": "x86",
    "386": "x86",
}


def normalize_arch(arch: str) -> str:
    """One name per architecture: Debian/Go names (arm64, amd64, armhf) and uname names agree."""
    lowered = arch.lower()
    return _ARCH_ALIASES.get(lowered, lowered)


@dataclass(frozen=True, slots=True)
class Taint:
    """A node repels replicas that do not tolerate it (NoSchedule) or merely prefers not to run them."""

    key: str
    value: str = ""
    effect: TaintEffect = TaintEffect.NO_SCHEDULE

    def tolerated_by(self, toleration: Toleration) -> bool:
        if toleration.effect is not None and toleration.effect is not self.effect:
            return False
        if toleration.operator is TolerationOperator.EXISTS:
            return not toleration.key or toleration.key == self.key
        return toleration.key == self.key and toleration.value == self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the scheduler knows about one node at snapshot time.

    `allocated_*` is the sum of the *requests* reserved by replicas assigned to the node (not live usage), so
    two decisions between heartbeats cannot double-book; the scheduler adds its own placements as it goes.
    `workloads` counts assigned replicas per workload key (`namespace/name`), siblings included.
    `reserved_*` is what the device owner keeps for themselves: allocatable = capacity - reserved.
    """

    node_id: str
    arch: str = ""
    os: str = "linux"
    labels: Mapping[str, str] = field(default_factory=dict)
    zone: str = ""
    region: str = ""
    capacity_cpu_millis: int = 0
    capacity_memory_bytes: int = 0
    reserved_cpu_millis: int = 0
    reserved_memory_bytes: int = 0
    allocated_cpu_millis: int = 0
    allocated_memory_bytes: int = 0
    replicas: int = 0
    max_workloads: int | None = None  # max replicas on the node; None = no limit
    online: bool = True
    cordoned: bool = False
    draining: bool = False
    schedulable: bool = True  # the node's own gates (battery, thermal, owner busy ...)
    gates: tuple[str, ...] = ()  # why not schedulable
    taints: tuple[Taint, ...] = ()
    reliability: float = 1.0  # 0..1, e.g. observed uptime
    cost: float = 1.0  # relative price or power cost; only ratios between nodes matter
    network_penalty: float = 0.0  # 0..1: metered, relayed or cellular links score worse
    latency_ms: float | None = None  # round-trip hint to the coordinator
    utilization: float | None = None  # live usage 0..1 from the last heartbeat, if known
    workloads: Mapping[str, int] = field(default_factory=dict)
    host_ports: frozenset[str] = frozenset()  # "8080/TCP" already bound by assigned replicas
    desired_bytes: int = 0  # the encoded size of the replicas in its desired state (the wire caps one message)
    # what its runtime can do (`scheduler.abilities.of_facts`); None: not known, not filtered on
    abilities: frozenset[str] | None = None

    @property
    def allocatable_cpu_millis(self) -> int:
        return max(0, self.capacity_cpu_millis - self.reserved_cpu_millis)

    @property
    def allocatable_memory_bytes(self) -> int:
        return max(0, self.capacity_memory_bytes - self.reserved_memory_bytes)

    @property
    def free_cpu_millis(self) -> int:
        return self.allocatable_cpu_millis - self.allocated_cpu_millis

    @property
    def free_memory_bytes(self) -> int:
        return self.allocatable_memory_bytes - self.allocated_memory_bytes

    def label(self, key: str) -> str | None:
        """A label's value, including the well-known `cloudless.io/*` ones; None if absent."""
        match key:
            case "cloudless.io/node":
                return self.node_id
            case "cloudless.io/zone":
                return self.zone or None
            case "cloudless.io/region":
                return self.region or None
            case "cloudless.io/arch":
                return normalize_arch(self.arch) if self.arch else None
            case "cloudless.io/os":
                return self.os or None
        return self.labels.get(key)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster as one scheduling pass sees it; `revision` lets a caller commit only if still current."""

    nodes: tuple[NodeView, ...]
    revision: int = 0


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """One replica to place, with every constraint it carries. Hashable; replicas of one workload share all
    fields but `replica_id`, which is what lets the scheduler reuse work between them.

    Sibling replicas already placed are not listed here: `NodeView.workloads` is the single count of them,
    and the scheduler updates it as it places, so the two can never disagree.
    """

    workload: str  # namespace/name
    replica_id: str = ""
    cpu_millis: int = 0
    memory_bytes: int = 0
    archs: tuple[str, ...] = ()  # any of; empty = any
    oses: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs, all must match
    zones: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    required: tuple[NodeSelectorRequirement, ...] = ()
    preferred: tuple[PreferredTerm, ...] = ()
    anti_affinity: tuple[str, ...] = ()  # workload keys (namespace/name) not to share a node/zone with
    anti_affinity_scope: Scope = Scope.NODE
    tolerations: tuple[Toleration, ...] = ()
    spread: Spread = Spread.NONE
    strategy: Strategy = Strategy.SPREAD
    host_ports: tuple[str, ...] = ()  # "8080/TCP" the replica binds on the node
    wire_bytes: int = 0  # what the replica adds to its node's desired state, encoded
    abilities: abilities.Needs = ()  # alternatives: a node needs every ability of one; () = any node
    refused_by: tuple[tuple[str, str], ...] = ()  # sorted (node, reason): nodes whose runtime refused this replica

    @classmethod
    def for_replica(cls, workload: Workload, replica_id: str, *, wire_bytes: int = 0,
                    refused_by: Mapping[str, str] | None = None) -> PlacementRequest:
        """The request for one replica of a parsed workload (`wire_bytes`: its encoded size on the wire;
        `refused_by`: the nodes that already refused to run it, with their reasons, not asked again)."""
        spec, placement = workload.spec, workload.spec.placement
        return cls(
            workload=workload.key,
            replica_id=replica_id,
            cpu_millis=spec.resources.cpu_request_millis,
            memory_bytes=spec.resources.memory_request_bytes,
            archs=tuple(normalize_arch(a) for a in placement.arch),
            oses=tuple(o.lower() for o in placement.os),
            node_selector=tuple(sorted(placement.node_selector.items())),
            zones=placement.zones,
            regions=placement.regions,
            required=placement.node_affinity.required,
            preferred=placement.node_affinity.preferred,
            anti_affinity=tuple(f"{workload.namespace}/{name}" for name in placement.anti_affinity.workloads),
            anti_affinity_scope=placement.anti_affinity.scope,
            tolerations=placement.tolerations,
            spread=placement.spread,
            strategy=placement.strategy,
            host_ports=tuple(f"{p.host_port}/{p.protocol}" for p in spec.ports if p.host_port),
            wire_bytes=wire_bytes,
            abilities=abilities.needs(spec),
            refused_by=tuple(sorted((refused_by or {}).items())),
        )


def matches(term: NodeSelectorRequirement | PreferredTerm, node: NodeView) -> bool:
    """Whether a node's labels satisfy one affinity term (NotIn and DoesNotExist match an absent label)."""
    value = node.label(term.key)
    match term.operator:
        case Operator.IN:
            return value is not None and value in term.values
        case Operator.NOT_IN:
            return value is None or value not in term.values
        case Operator.EXISTS:
            return value is not None
        case Operator.DOES_NOT_EXIST:
            return value is None


@dataclass(frozen=True, slots=True)
class Reject:
    """Why a node cannot take a replica. `resolvable`: could change without editing the workload (capacity
    frees up, the node comes back, is uncordoned) as opposed to a mismatch only a spec or label edit fixes.
    The text before the first colon is the reason's category, used to summarise (`"insufficient memory"`).
    """

    reason: str
    resolvable: bool = True

    @property
    def category(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Placement:
    """The chosen node. `score` is the weighted mean of the scorers (0..100); `breakdown` each scorer's 0..100."""

    node_id: str
    score: float
    breakdown: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No node fits: the reason for every node of the snapshot, and a one-line summary for humans."""

    reasons: Mapping[str, Reject]
    summary: str

    @property
    def resolvable(self) -> bool:
        """Whether waiting could help: some node was rejected for a reason that may go away on its own."""
        return any(r.resolvable for r in self.reasons.values())

    @staticmethod
    def explain(reasons: Mapping[str, Reject], counts: Mapping[str, int] | None = None) -> Unschedulable:
        """Build the result with its summary; `counts` (reasons per category) may be passed if known."""
        counts = Counter(r.category for r in reasons.values()) if counts is None else counts
        parts = ", ".join(f"{n} {cat}" for cat, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return Unschedulable(reasons, f"0/{len(reasons)} nodes available: {parts or 'no nodes'}")

    def detail(self, limit: int = 8) -> str:
        """The summary with each node's reason ("...; pi-1: runtime mismatch: ..., pi-2: offline"), the first
        `limit` nodes by name: what a human needs to see when a few nodes all say no."""
        shown = [f"{node}: {self.reasons[node].reason}" for node in sorted(self.reasons)[:limit]]
        more = len(self.reasons) - len(shown)
        tail = f" (and {more} more)" if more > 0 else ""
        return f"{self.summary}; {'; '.join(shown)}{tail}" if shown else self.summary


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Scorer weights (0 switches a scorer off) and engine knobs; parsed once at startup, passed down."""

    locality_weight: float = 2.0
    reliability_weight: float = 1.0
    cost_weight: float = 1.0
    utilization_weight: float = 1.0
    network_weight: float = 1.0
    spread_weight: float = 2.0
    taint_weight: float = 1.0
    latency_ceiling_ms: float = 500.0  # latency at or above this scores 0 in NetworkPenalty
    # per pass: how many workloads' rankings stay cached (~100 bytes per feasible node each) when requests of
    # different workloads interleave; schedule_many groups requests by workload, so it needs only one
    max_cached_groups: int = 32
    # a node's desired state is one wire message: what the scheduler places on a node must encode within this
    # (the wire's cap less room for the envelope and the sealed secrets the replicas carry)
    desired_budget_bytes: int = DESIRED_BUDGET_BYTES
    desired_max_replicas: int = DESIRED_MAX_REPLICAS  # ... and list at most this many replicas

    def __post_init__(self) -> None:
        weights = (
            self.locality_weight,
            self.reliability_weight,
            self.cost_weight,
            self.utilization_weight,
            self.network_weight,
            self.spread_weight,
            self.taint_weight,
        )
        if any(w < 0 for w in weights):
            raise ConfigError("scorer weights must not be negative")
        if self.desired_budget_bytes < 1 or self.desired_max_replicas < 1:
            raise ConfigError("desired_budget_bytes and desired_max_replicas must be positive")
        if self.latency_ceiling_ms <= 0 or self.max_cached_groups < 1:
            raise ConfigError("latency_ceiling_ms must be positive and max_cached_groups at least 1")


DEFAULT_CONFIG: Final = SchedulerConfig()
