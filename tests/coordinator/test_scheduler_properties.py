"""Hypothesis properties of the scheduler (STYLE §5): capacity never exceeded, no placement on a rejected node,
deterministic, every unschedulable result explains every node, and the engine equals the brute-force oracle."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler import (
    Context,
    NodeView,
    Placement,
    PlacementRequest,
    SchedulerConfig,
    SchedulingPass,
    Snapshot,
    Taint,
    Unschedulable,
    schedule_many,
    schedule_slices,
)
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
)
from tests.coordinator.oracle import first_reject, oracle_schedule_many

MI = 2**20
WORKLOADS = ["default/a", "default/b", "other/c"]
ZONES = ["", "z1", "z2", "z3"]
sometimes = st.sampled_from([False] * 4 + [True])  # False first: hypothesis shrinks towards it
TAINTS = [Taint("dedicated", "edge"), Taint("battery", "", TaintEffect.PREFER_NO_SCHEDULE), Taint("gpu")]


@st.composite
def nodes(draw: st.DrawFn, node_id: str) -> NodeView:
    cpu = draw(st.integers(0, 8)) * 1000
    mem = draw(st.integers(0, 8)) * 512 * MI
    workloads = draw(st.dictionaries(st.sampled_from(WORKLOADS), st.integers(1, 3), max_size=2))
    health = draw(st.sampled_from(["healthy"] * 8 + ["offline", "cordoned", "draining", "gated"]))
    return NodeView(
        node_id=node_id,
        arch=draw(st.sampled_from(["aarch64", "x86_64", "armv7l", ""])),
        os=draw(st.sampled_from(["linux", "linux", "android"])),
        labels=draw(st.sampled_from([{"disk": "ssd"}, {}, {"disk": "ssd", "class": "pi"}, {"class": "phone"}])),
        zone=draw(st.sampled_from(ZONES)),
        region=draw(st.sampled_from(["", "eu"])),
        capacity_cpu_millis=cpu,
        capacity_memory_bytes=mem,
        reserved_cpu_millis=draw(st.integers(0, cpu // 2)),
        reserved_memory_bytes=draw(st.integers(0, mem // 2)),
        allocated_cpu_millis=draw(st.integers(0, cpu // 2) | st.just(cpu)),
        allocated_memory_bytes=draw(st.integers(0, mem // 2) | st.just(mem)),
        replicas=sum(workloads.values()),
        max_workloads=draw(st.sampled_from([None, None, 4, 8])),
        online=health != "offline",
        cordoned=health == "cordoned",
        draining=health == "draining",
        schedulable=health != "gated",
        gates=("battery low",),
        taints=tuple(draw(st.lists(st.sampled_from(TAINTS), max_size=2, unique=True))) if draw(sometimes) else (),
        reliability=draw(st.sampled_from([1.0, 0.9, 0.5])),
        cost=draw(st.sampled_from([0.5, 1.0, 2.0])),
        network_penalty=draw(st.sampled_from([0.0, 0.3])),
        latency_ms=draw(st.sampled_from([None, 50.0, 700.0])),
        utilization=draw(st.sampled_from([None, 0.2, 0.95])),
        workloads=workloads,
        host_ports=frozenset(draw(st.lists(st.sampled_from(["80/TCP", "53/UDP"]), max_size=1))),
    )


@st.composite
def snapshots(draw: st.DrawFn, max_nodes: int = 8) -> Snapshot:
    count = draw(st.integers(0, max_nodes) | st.just(max_nodes))
    return Snapshot(tuple(draw(nodes(f"n{i}")) for i in range(count)), revision=draw(st.integers(0, 9)))


@st.composite
def shapes(draw: st.DrawFn) -> PlacementRequest:
    """The shared part of a workload's replicas."""
    workload = draw(st.sampled_from(WORKLOADS))
    kw: dict[str, Any] = {
        "cpu_millis": draw(st.sampled_from([0, 100, 250, 500, 1500])),
        "memory_bytes": draw(st.sampled_from([0, 64, 256, 1024])) * MI,
        "strategy": draw(st.sampled_from(Strategy)),
        "spread": draw(st.sampled_from(Spread)),
    }
    if draw(sometimes):
        kw["archs"] = tuple(draw(st.lists(st.sampled_from(["arm64", "x86_64", "armv7"]), min_size=1, max_size=2)))
    if draw(sometimes):
        kw["oses"] = ("linux",)
    if draw(sometimes):
        kw["node_selector"] = (("disk", "ssd"),)
    if draw(sometimes):
        kw["zones"] = tuple(draw(st.lists(st.sampled_from(ZONES[1:]), min_size=1, max_size=2, unique=True)))
    if draw(sometimes):
        kw["required"] = (NodeSelectorRequirement("class", Operator.NOT_IN, ("phone",)),)
    if draw(sometimes):
        kw["preferred"] = (
            PreferredTerm(
                draw(st.integers(1, 100)), "cloudless.io/zone", Operator.IN, (draw(st.sampled_from(ZONES[1:])),)
            ),
            PreferredTerm(30, "class", Operator.IN, ("pi",)),
        )
    if draw(sometimes):
        kw["anti_affinity"] = tuple(draw(st.lists(st.sampled_from(WORKLOADS), min_size=1, max_size=2, unique=True)))
        kw["anti_affinity_scope"] = draw(st.sampled_from(Scope))
    if draw(sometimes):
        kw["tolerations"] = (
            Toleration(draw(st.sampled_from(["dedicated", "battery", ""])), TolerationOperator.EXISTS),
        )
    if draw(sometimes):
        kw["host_ports"] = (draw(st.sampled_from(["80/TCP", "8080/TCP"])),)
    return PlacementRequest(workload=workload, **kw)


@st.composite
def request_lists(draw: st.DrawFn, max_requests: int = 24) -> list[PlacementRequest]:
    pool = draw(st.lists(shapes(), min_size=1, max_size=4))
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=max_requests))
    return [dataclasses.replace(pool[p], replica_id=f"r{i}") for i, p in enumerate(picks)]


configs = st.builds(
    SchedulerConfig,
    locality_weight=st.sampled_from([0.0, 2.0]),
    cost_weight=st.sampled_from([0.0, 1.0, 3.5]),
    utilization_weight=st.sampled_from([0.0, 1.0, 4.0]),
    spread_weight=st.sampled_from([0.0, 2.0, 10.0]),
    max_cached_groups=st.sampled_from([1, 2, 64]),
)
seeds = st.integers(0, 2**32)
ORACLE = settings(max_examples=200, deadline=None)
PROPERTY = settings(max_examples=80, deadline=None)


@ORACLE
@given(snapshots(), request_lists(), configs, seeds)
def test_engine_equals_the_brute_force_oracle(
    snapshot: Snapshot, requests: list[PlacementRequest], config: SchedulerConfig, seed: int
) -> None:
    sched = SchedulingPass(snapshot, config, seed=seed)
    got = sched.place_all(requests)
    expected, expected_nodes = oracle_schedule_many(snapshot, requests, config, seed)
    assert got == expected
    assert list(sched.nodes) == expected_nodes


@PROPERTY
@given(snapshots(), request_lists(), configs, seeds)
def test_capacity_is_never_exceeded_by_a_placement(
    snapshot: Snapshot, requests: list[PlacementRequest], config: SchedulerConfig, seed: int
) -> None:
    sched = SchedulingPass(snapshot, config, seed=seed)
    sched.place_all(requests)
    for before, after in zip(snapshot.nodes, sched.nodes, strict=True):
        added_cpu = after.allocated_cpu_millis - before.allocated_cpu_millis
        added_mem = after.allocated_memory_bytes - before.allocated_memory_bytes
        if added_cpu:
            assert after.allocated_cpu_millis <= after.allocatable_cpu_millis
        if added_mem:
            assert after.allocated_memory_bytes <= after.allocatable_memory_bytes
        if after.max_workloads is not None and after.replicas > before.replicas:
            assert after.replicas <= after.max_workloads


@PROPERTY
@given(snapshots(), request_lists(), configs, seeds)
def test_no_placement_on_a_node_any_filter_rejects(
    snapshot: Snapshot, requests: list[PlacementRequest], config: SchedulerConfig, seed: int
) -> None:
    sched = SchedulingPass(snapshot, config, seed=seed)
    for request in requests:
        before = sched.snapshot()
        result = sched.place(request)
        if isinstance(result, Placement):
            node = next(n for n in before.nodes if n.node_id == result.node_id)
            assert first_reject(node, request, Context(before.nodes, config)) is None
            assert 0.0 <= result.score <= 100.0


@PROPERTY
@given(snapshots(), request_lists(), configs, seeds)
def test_deterministic_and_independent_of_node_order(
    snapshot: Snapshot, requests: list[PlacementRequest], config: SchedulerConfig, seed: int
) -> None:
    first = schedule_many(snapshot, requests, config, seed)
    assert schedule_many(snapshot, requests, config, seed) == first
    reversed_snapshot = Snapshot(tuple(reversed(snapshot.nodes)), snapshot.revision)
    assert schedule_many(reversed_snapshot, requests, config, seed) == first


@PROPERTY
@given(snapshots(), request_lists(), configs, seeds, st.integers(0, 4))
def test_slices_together_are_schedule_many(
    snapshot: Snapshot, requests: list[PlacementRequest], config: SchedulerConfig, seed: int, size: int
) -> None:
    """schedule_slices (for a caller that yields to its loop between slices) decides exactly as schedule_many."""
    parts = list(schedule_slices(snapshot, requests, config, seed, size=size))
    assert all(len(p) <= size for p in parts) if size else len(parts) <= 1
    if size and requests:  # the set-up and each workload's ranking in steps of their own, before its decisions
        assert parts[0] == [] and len([p for p in parts if not p]) >= 1 + len({r.workload for r in requests})
    decided = dict(pair for part in parts for pair in part)
    assert sorted(decided) == list(range(len(requests)))
    assert [decided[i] for i in range(len(requests))] == schedule_many(snapshot, requests, config, seed)


@PROPERTY
@given(snapshots(), request_lists(), configs, seeds)
def test_unschedulable_gives_a_reason_for_every_node(
    snapshot: Snapshot, requests: list[PlacementRequest], config: SchedulerConfig, seed: int
) -> None:
    for result in schedule_many(snapshot, requests, config, seed):
        if isinstance(result, Unschedulable):
            assert set(result.reasons) == {n.node_id for n in snapshot.nodes}
            assert result.summary.startswith(f"0/{len(snapshot.nodes)} nodes available: ")
            counted = sum(
                int(part.split(" ", 1)[0]) for part in result.summary.split(": ", 1)[1].split(", ") if part[0].isdigit()
            )
            assert counted == len(snapshot.nodes)


@st.composite
def alike_nodes(draw: st.DrawFn, count: int) -> list[NodeView]:
    """Room for many small replicas each; they differ in live usage (up to 40%) and reliability (0.9 and up), as
    a fleet's heartbeats make them differ."""
    return [NodeView(node_id=f"n{i:02d}", capacity_cpu_millis=4000, capacity_memory_bytes=4096 * MI,
                     zone=draw(st.sampled_from(ZONES)),
                     utilization=draw(st.none() | st.floats(0.0, 0.4)),
                     reliability=draw(st.floats(0.9, 1.0))) for i in range(count)]


@given(data=st.data(), n=st.integers(1, 16), extra=st.integers(0, 12),
       workload=st.sampled_from(WORKLOADS), cpu=st.integers(1, 50))
@settings(max_examples=60, deadline=None)
def test_n_small_replicas_go_to_n_nodes_when_they_fit(data: st.DataObject, n: int, extra: int, workload: str,
                                                       cpu: int) -> None:
    """Issue 17: with the default placement, N small replicas on at least N nodes with room take N nodes, however
    the nodes' usage and reliability differ (spread counts the replicas already on a node)."""
    snap = Snapshot(tuple(data.draw(alike_nodes(n + extra))), 1)
    requests = [PlacementRequest(workload=workload, replica_id=f"r{i}", cpu_millis=cpu, memory_bytes=8 * MI)
                for i in range(n)]
    results = schedule_many(snap, requests)
    nodes = [r.node_id for r in results if isinstance(r, Placement)]
    assert len(nodes) == n and len(set(nodes)) == n
