"""Builders for scheduler tests: short, readable nodes, requests, contexts and snapshots."""

from __future__ import annotations

from typing import Any

from coordinator.scheduler import Context, NodeView, PlacementRequest, SchedulerConfig, Snapshot, Taint
from coordinator.spec import TaintEffect
from firmware_profiles.units import parse_cpu, parse_memory


def make_node(
    node_id: str = "n1",
    *,
    cpu: str = "2",
    mem: str = "1Gi",
    used_cpu: str = "0",
    used_mem: str = "0",
    reserved_cpu: str = "0",
    reserved_mem: str = "0",
    labels: dict[str, str] | None = None,
    taints: tuple[str, ...] = (),
    **fields: Any,
) -> NodeView:
    """A node with quantities as strings; taints as "key=value:Effect" (or "key:Effect")."""
    return NodeView(
        node_id=node_id,
        arch=fields.pop("arch", "aarch64"),
        labels=labels or {},
        capacity_cpu_millis=parse_cpu(cpu),
        capacity_memory_bytes=parse_memory(mem),
        reserved_cpu_millis=parse_cpu(reserved_cpu),
        reserved_memory_bytes=parse_memory(reserved_mem),
        allocated_cpu_millis=parse_cpu(used_cpu),
        allocated_memory_bytes=parse_memory(used_mem),
        taints=tuple(parse_taint(t) for t in taints),
        **fields,
    )


def parse_taint(text: str) -> Taint:
    body, effect = text.rsplit(":", 1)
    key, _, value = body.partition("=")
    return Taint(key, value, TaintEffect(effect))


def make_request(workload: str = "default/web", *, cpu: str = "0", mem: str = "0", **fields: Any) -> PlacementRequest:
    return PlacementRequest(
        workload=workload,
        replica_id=fields.pop("replica_id", "web-0"),
        cpu_millis=parse_cpu(cpu),
        memory_bytes=parse_memory(mem),
        **fields,
    )


def make_ctx(*nodes: NodeView, config: SchedulerConfig | None = None) -> Context:
    return Context(nodes, config or SchedulerConfig())


def make_snapshot(*nodes: NodeView, revision: int = 1) -> Snapshot:
    return Snapshot(tuple(nodes), revision)
