"""The scheduler's specification as the simplest possible code: for each request, run every filter on every node
and score every survivor, then place on the best and update that node. O(nodes) per decision, no caches.

The engine must return exactly what this returns (same nodes, same scores, same reasons): its heaps, caches
and lazy re-evaluation are optimisations, not semantics. Floating-point sums are taken in the order the
engine documents (static scorers, then dynamic ones, each in scorer order), so equality is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from coordinator.scheduler import (
    DEFAULT_FILTERS,
    DEFAULT_SCORERS,
    Context,
    NodeView,
    Placement,
    PlacementRequest,
    Reject,
    SchedulerConfig,
    Snapshot,
    Unschedulable,
    tiebreak,
)

Result = Placement | Unschedulable


def first_reject(node: NodeView, request: PlacementRequest, ctx: Context) -> Reject | None:
    return next((r for f in DEFAULT_FILTERS if (r := f.check(node, request, ctx)) is not None), None)


def oracle_schedule_many(
    snapshot: Snapshot, requests: Sequence[PlacementRequest], config: SchedulerConfig, seed: int
) -> tuple[list[Result], list[NodeView]]:
    nodes = list(snapshot.nodes)
    weighted = [(s, s.weight(config)) for s in DEFAULT_SCORERS if s.weight(config) > 0]
    total_weight = sum(w for _, w in weighted) or 1.0
    results: list[Result] = []
    for request in requests:
        ctx = Context(nodes, config)
        reasons: dict[str, Reject] = {}
        best: tuple[float, int, int] | None = None
        for i, node in enumerate(nodes):
            reject = first_reject(node, request, ctx)
            if reject is not None:
                reasons[node.node_id] = reject
                continue
            static = 0.0
            for s, w in weighted:
                if not s.dynamic:
                    static += w * s.score(node, request, ctx)
            dynamic = 0.0
            for s, w in weighted:
                if s.dynamic:
                    dynamic += w * s.score(node, request, ctx)
            rank = (-(static + dynamic), tiebreak(seed, request.workload, node.node_id), i)
            best = rank if best is None or rank < best else best
        if best is None:
            results.append(Unschedulable.explain(reasons))
            continue
        i = best[2]
        node = nodes[i]
        breakdown = {s.name: s.score(node, request, ctx) for s, _ in weighted}
        results.append(Placement(node.node_id, -best[0] / total_weight, breakdown))
        workloads = dict(node.workloads)
        workloads[request.workload] = workloads.get(request.workload, 0) + 1
        nodes[i] = dataclasses.replace(
            node,
            allocated_cpu_millis=node.allocated_cpu_millis + request.cpu_millis,
            allocated_memory_bytes=node.allocated_memory_bytes + request.memory_bytes,
            replicas=node.replicas + 1,
            workloads=workloads,
            host_ports=node.host_ports | frozenset(request.host_ports),
        )
    return results, nodes
