"""The pass-wide state filters and scorers may read besides the node itself.

A `Context` is built from the nodes of one snapshot: cluster-wide constants (the cost range, for normalising)
and per-zone replica counts (for zone-scoped anti-affinity and spreading). The scheduling pass records each
placement here so later decisions in the same pass see it. Filters and scorers only read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from coordinator.scheduler.model import DEFAULT_CONFIG, NodeView, SchedulerConfig
from coordinator.spec import Scope


def domain(node: NodeView, scope: Scope) -> str:
    """The failure domain of a node: itself, or its zone (a node without a zone is a zone of its own)."""
    if scope is Scope.ZONE and node.zone:
        return f"zone:{node.zone}"
    return f"node:{node.node_id}"


class Context:
    __slots__ = ("_zones", "config", "cost_max", "cost_min")

    def __init__(self, nodes: Sequence[NodeView], config: SchedulerConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        costs = [n.cost for n in nodes]
        self.cost_min = min(costs, default=0.0)
        self.cost_max = max(costs, default=0.0)
        self._zones: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        for node in nodes:
            if node.zone:
                counts = self._zones[domain(node, Scope.ZONE)]
                for workload, n in node.workloads.items():
                    counts[workload] += n

    def count(self, node: NodeView, workload: str, scope: Scope) -> int:
        """Replicas of `workload` in the node's domain for `scope` (this pass's placements included)."""
        if scope is Scope.ZONE and node.zone:
            zone = self._zones.get(domain(node, Scope.ZONE))
            return zone.get(workload, 0) if zone else 0
        return node.workloads.get(workload, 0)

    def record(self, node: NodeView, workload: str) -> None:
        """A replica of `workload` was placed on `node` (node-scope counts live in the NodeView itself)."""
        if node.zone:
            self._zones[domain(node, Scope.ZONE)][workload] += 1
