"""Filters: each answers "can this node take this replica?" with None (yes) or a `Reject` (no, and why).

A filter is `static` when its answer depends only on facts that do not change during a scheduling pass (labels,
arch, taints, online/cordoned) and on the part of the request returned by `key(request)`. The engine evaluates
a static filter once per node per distinct key and reuses the answer for every replica that shares it; dynamic
filters (capacity, replica count, anti-affinity, host ports) are evaluated at decision time against the pass's
working copy. Within a pass a dynamic rejection never reverts (capacity only shrinks, counts only grow), so
the engine drops a rejected node for the rest of the pass. `DEFAULT_FILTERS` is ordered cheap-and-static
first; a node's reported reason is the first filter that rejects it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import ClassVar, Final, Protocol

from coordinator.scheduler import abilities
from coordinator.scheduler.context import Context
from coordinator.scheduler.model import NodeView, PlacementRequest, Reject, matches, normalize_arch
from coordinator.spec import NodeSelectorRequirement, Operator, Scope, TaintEffect
from firmware_profiles.units import describe_memory, format_cpu


class Filter(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def static(self) -> bool: ...

    @property
    def local(self) -> bool:
        """For dynamic filters: the answer depends only on the node's own working state (not on its zone's)."""
        ...

    def key(self, request: PlacementRequest) -> Hashable:
        """The part of the request the answer depends on (static filters are cached per node and key)."""
        ...

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None: ...


OFFLINE: Final = Reject("offline", resolvable=True)
CORDONED: Final = Reject("cordoned", resolvable=True)
DRAINING: Final = Reject("draining", resolvable=True)


class Online:
    name: ClassVar[str] = "Online"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        return None if node.online else OFFLINE


class Schedulable:
    """Cordoned or draining by an admin, or gated by the node itself (battery, heat, owner busy)."""

    name: ClassVar[str] = "Schedulable"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        if node.cordoned:
            return CORDONED
        if node.draining:
            return DRAINING
        if not node.schedulable:
            return Reject(f"gated: {'; '.join(node.gates) or 'not schedulable'}", resolvable=True)
        return None


class ArchOS:
    name: ClassVar[str] = "ArchOS"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.archs, request.oses

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        if request.archs:
            arch = normalize_arch(node.arch)
            if arch not in (normalize_arch(a) for a in request.archs):
                wanted = ", ".join(request.archs)
                return Reject(f"arch mismatch: node is {arch or 'unknown'}, workload needs {wanted}", False)
        if request.oses and node.os.lower() not in (o.lower() for o in request.oses):
            wanted = ", ".join(request.oses)
            return Reject(f"os mismatch: node is {node.os or 'unknown'}, workload needs {wanted}", False)
        return None


class Runtime:
    """The node's runtime must be able to run the replica: containers for an image with remapped ports or
    volumes, a process runtime for a workload with no image (`scheduler.abilities`). A node whose abilities are
    not known is not judged here (its agent refuses what it cannot run, and `Refused` then keeps it away)."""

    name: ClassVar[str] = "Runtime"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.abilities

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        if node.abilities is None:
            return None
        lacking = abilities.missing(node.abilities, request.abilities)
        if lacking is None:
            return None
        return Reject(f"runtime mismatch: node lacks {abilities.describe(lacking)} (it has "
                      f"{abilities.describe(node.abilities)}; the workload needs "
                      f"{abilities.describe_needs(request.abilities)})", resolvable=False)


class Refused:
    """A node whose runtime refused this very replica (it reported why) is not asked again: the reason stands
    until the workload's spec changes, which makes new replicas."""

    name: ClassVar[str] = "Refused"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.refused_by

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        for refusing, reason in request.refused_by:
            if refusing == node.node_id:
                return Reject(f"refused by the node: {reason}", resolvable=False)
        return None


class Zones:
    name: ClassVar[str] = "Zones"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.zones, request.regions

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        if request.zones and node.zone not in request.zones:
            return Reject(f"zone not allowed: {node.zone or '(none)'} not in {', '.join(request.zones)}", False)
        if request.regions and node.region not in request.regions:
            allowed = ", ".join(request.regions)
            return Reject(f"region not allowed: {node.region or '(none)'} not in {allowed}", False)
        return None


class Taints:
    """NoSchedule taints repel every replica that does not tolerate them (PreferNoSchedule is a scorer's job)."""

    name: ClassVar[str] = "Taints"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.tolerations

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        for taint in node.taints:
            if taint.effect is TaintEffect.NO_SCHEDULE and not any(taint.tolerated_by(t) for t in request.tolerations):
                return Reject(f"untolerated taint: {taint}", resolvable=False)
        return None


class NodeSelector:
    name: ClassVar[str] = "NodeSelector"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.node_selector

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        for key, wanted in request.node_selector:
            actual = node.label(key)
            if actual != wanted:
                has = f"node has {actual!r}" if actual is not None else "node lacks it"
                return Reject(f"node selector mismatch: {key}={wanted} ({has})", resolvable=False)
        return None


def describe_term(term: NodeSelectorRequirement) -> str:
    if term.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        return f"{term.key} {term.operator}"
    return f"{term.key} {term.operator} [{', '.join(term.values)}]"


class NodeAffinity:
    """Every required term must match the node's labels."""

    name: ClassVar[str] = "NodeAffinity"
    static: ClassVar[bool] = True
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return request.required

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        for term in request.required:
            if not matches(term, node):
                return Reject(f"node affinity mismatch: {describe_term(term)}", resolvable=False)
        return None


class MaxWorkloads:
    name: ClassVar[str] = "MaxWorkloads"
    static: ClassVar[bool] = False
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        if node.max_workloads is not None and node.replicas >= node.max_workloads:
            return Reject(f"too many replicas: {node.replicas}/{node.max_workloads}", resolvable=True)
        return None


class Capacity:
    """Requests must fit in what is free (allocatable minus reserved by assigned replicas), CPU and memory
    separately. A request larger than the node's whole allocatable amount can never fit: not resolvable."""

    name: ClassVar[str] = "Capacity"
    static: ClassVar[bool] = False
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        cpu = request.cpu_millis
        if cpu and cpu > node.free_cpu_millis:
            total = node.allocatable_cpu_millis
            if cpu > total:
                return Reject(f"insufficient cpu: requested {format_cpu(cpu)}, allocatable {format_cpu(total)}", False)
            return Reject(f"insufficient cpu: requested {format_cpu(cpu)}, free {format_cpu(node.free_cpu_millis)}")
        mem = request.memory_bytes
        if mem and mem > node.free_memory_bytes:
            total = node.allocatable_memory_bytes
            if mem > total:
                shown = f"requested {describe_memory(mem)}, allocatable {describe_memory(total)}"
                return Reject(f"insufficient memory: {shown}", resolvable=False)
            shown = f"requested {describe_memory(mem)}, free {describe_memory(node.free_memory_bytes)}"
            return Reject(f"insufficient memory: {shown}", resolvable=True)
        return None


class DesiredStateSize:
    """A node's desired state is one wire message, capped (broker.wire.MAX_PAYLOAD_BYTES) in bytes and in items
    (the `replicas` list of DesiredState and ObservedState): a replica goes only where the node's replicas, this one
    included, still encode within the budget and the item cap. Otherwise the message could not be sent and the node
    would get nothing new at all. A replica over the byte budget on its own can never fit."""

    name: ClassVar[str] = "DesiredStateSize"
    static: ClassVar[bool] = False
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        budget, size = ctx.config.desired_budget_bytes, request.wire_bytes
        if size and node.desired_bytes + size > budget:
            shown = f"this replica's {size:,} bytes would take its {node.desired_bytes:,} past {budget:,}"
            return Reject(f"desired state too large: {shown}", resolvable=size <= budget)
        if node.replicas >= ctx.config.desired_max_replicas:  # counts replicas stopping too: conservative
            cap = ctx.config.desired_max_replicas
            return Reject(f"desired state too large: {node.replicas} replicas already, one message carries {cap}",
                          resolvable=True)
        return None


class HostPorts:
    """Two replicas cannot bind the same host port on one node."""

    name: ClassVar[str] = "HostPorts"
    static: ClassVar[bool] = False
    local: ClassVar[bool] = True
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        for port in request.host_ports:
            if port in node.host_ports:
                return Reject(f"host port in use: {port}", resolvable=True)
        return None


class AntiAffinity:
    """No replica of the listed workloads in the same node (or zone, by scope). A workload may list itself."""

    name: ClassVar[str] = "AntiAffinity"
    static: ClassVar[bool] = False
    local: ClassVar[bool] = False  # zone scope reads zone-wide counts
    __slots__ = ()

    def key(self, request: PlacementRequest) -> Hashable:
        return None

    def check(self, node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
        scope = request.anti_affinity_scope
        for workload in request.anti_affinity:
            if ctx.count(node, workload, scope):
                where = f"zone {node.zone}" if scope is Scope.ZONE and node.zone else "this node"
                return Reject(f"anti-affinity: {workload} runs in {where}", resolvable=True)
        return None


DEFAULT_FILTERS: Final[tuple[Filter, ...]] = (
    Online(),
    Schedulable(),
    ArchOS(),
    Runtime(),
    Refused(),
    Zones(),
    Taints(),
    NodeSelector(),
    NodeAffinity(),
    MaxWorkloads(),
    Capacity(),
    DesiredStateSize(),
    HostPorts(),
    AntiAffinity(),
)
