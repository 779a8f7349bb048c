"""Scheduler benchmark: per-decision latency and throughput on a large synthetic, heterogeneous cluster.

    python bench/scheduler.py            # 5,000 nodes x 10,000 replicas; writes docs/benchmarks.md "scheduler"
    python bench/scheduler.py --quick    # 500 nodes x 1,000 replicas; writes only with an explicit --doc

The cluster mixes Pis, phones, laptops, gateways and VPSes across 4 regions / 12 zones with different arches,
capacities, labels, prices and links; some nodes are offline, cordoned, draining, gated, tainted or already
busy. A few hundred workloads (replica counts skewed: many small, a few large) carry varied constraints:
arch, node selectors, zones/regions, required and preferred affinity, self anti-affinity, tolerations, zone
and node spread, binpack or spread strategy, host ports, and some that cannot fit anywhere. Requests arrive
workload by workload (as the reconciler emits them) in shuffled workload order. Everything is seeded.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import DOC, table, write_section
from coordinator.scheduler import (
    NodeView,
    Placement,
    PlacementRequest,
    SchedulingPass,
    Snapshot,
    Taint,
    Unschedulable,
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

MI, GI = 2**20, 2**30
GOALS = {"p50_ms": 2.0, "p95_ms": 10.0, "per_s": 2000.0}

# device class: (weight, arches, cores, memory GiB choices, cost, reliability range, network penalty range)
CLASSES = {
    "pi": (40, ["aarch64", "armv7"], [4], [1, 2, 4, 8], 0.3, (0.80, 0.99), (0.0, 0.3)),
    "phone": (10, ["aarch64"], [4, 8], [3, 4, 6], 0.2, (0.50, 0.90), (0.2, 0.8)),
    "laptop": (20, ["x86_64", "aarch64"], [4, 8, 12], [8, 16, 32], 1.0, (0.60, 0.95), (0.0, 0.4)),
    "gateway": (15, ["armv7", "aarch64"], [2, 4], [1, 2], 0.4, (0.90, 0.999), (0.0, 0.2)),
    "vps": (15, ["x86_64"], [1, 2, 4, 8], [2, 4, 8, 16], 2.0, (0.97, 0.999), (0.0, 0.1)),
}
REGIONS = {f"r{r}": [f"r{r}-z{z}" for z in range(3)] for r in range(4)}
ZONES = [z for zs in REGIONS.values() for z in zs]
REGION_OF = {z: r for r, zs in REGIONS.items() for z in zs}


def make_nodes(count: int, rng: random.Random) -> tuple[NodeView, ...]:
    names = list(CLASSES)
    weights = [CLASSES[c][0] for c in names]
    nodes = []
    for i in range(count):
        cls = rng.choices(names, weights)[0]
        _, arches, cores, mems, cost, rel, net = CLASSES[cls]
        zone = rng.choice(ZONES)
        cpu, mem = rng.choice(cores) * 1000, rng.choice(mems) * GI
        busy = rng.random() * 0.5
        labels = {"class": cls, "disk": rng.choice(["ssd", "sd", "hdd"]), "owner": f"u{rng.randrange(50)}"}
        if rng.random() < 0.05:
            labels["gpu"] = "true"
        if rng.random() < 0.10:
            labels["camera"] = "true"
        taints: tuple[Taint, ...] = ()
        roll = rng.random()
        if roll < 0.05:
            taints = (Taint("dedicated", "edge", TaintEffect.NO_SCHEDULE),)
        elif roll < 0.15:
            taints = (Taint("battery", "", TaintEffect.PREFER_NO_SCHEDULE),)
        state = rng.random()
        nodes.append(
            NodeView(
                node_id=f"{cls}-{i:05d}",
                arch=rng.choice(arches),
                os="linux" if cls != "phone" else "android",
                labels=labels,
                zone=zone,
                region=REGION_OF[zone],
                capacity_cpu_millis=cpu,
                capacity_memory_bytes=mem,
                reserved_cpu_millis=cpu // 4,
                reserved_memory_bytes=mem // 4,
                allocated_cpu_millis=int(cpu * 0.75 * busy),
                allocated_memory_bytes=int(mem * 0.75 * busy),
                replicas=rng.randrange(0, 6),
                max_workloads=rng.choice([None, None, 8, 16, 32]),
                online=state >= 0.02,
                cordoned=0.02 <= state < 0.04,
                draining=0.04 <= state < 0.05,
                schedulable=not 0.05 <= state < 0.07,
                gates=("battery below 20%",) if 0.05 <= state < 0.07 else (),
                taints=taints,
                reliability=rng.uniform(*rel),
                cost=cost * rng.uniform(0.8, 1.25),
                network_penalty=rng.uniform(*net),
                latency_ms=rng.uniform(5, 400),
                utilization=rng.random() * 0.6 if rng.random() < 0.5 else None,
            )
        )
    return tuple(nodes)


def make_workload(index: int, rng: random.Random) -> PlacementRequest:
    """The shared shape of one workload's replicas (replica_id filled in per replica)."""
    kw: dict[str, object] = {
        "cpu_millis": rng.choice([50, 100, 100, 250, 250, 500, 1000]),
        "memory_bytes": rng.choice([32, 64, 64, 128, 256, 512, 1024]) * MI,
        "strategy": Strategy.BINPACK if rng.random() < 0.3 else Strategy.SPREAD,
    }
    roll = rng.random()
    if roll < 0.25:
        kw["archs"] = (rng.choice(["aarch64", "x86_64", "armv7"]),)
    if rng.random() < 0.15:
        kw["node_selector"] = (("disk", "ssd"),) if rng.random() < 0.7 else (("camera", "true"),)
    if rng.random() < 0.15:
        region = rng.choice(list(REGIONS))
        if rng.random() < 0.5:
            kw["regions"] = (region,)
        else:
            kw["zones"] = tuple(rng.sample(REGIONS[region], 2))
    if rng.random() < 0.10:
        kw["required"] = (NodeSelectorRequirement("class", Operator.NOT_IN, ("phone",)),)
    if rng.random() < 0.25:
        kw["preferred"] = (
            PreferredTerm(50, "class", Operator.IN, (rng.choice(list(CLASSES)),)),
            PreferredTerm(20, "cloudless.io/zone", Operator.IN, (rng.choice(ZONES),)),
        )
    if rng.random() < 0.20:
        kw["spread"] = Spread.ZONE if rng.random() < 0.5 else Spread.NODE
    if rng.random() < 0.08:
        kw["anti_affinity"] = (f"default/w{index}",)
        kw["anti_affinity_scope"] = Scope.NODE
    if rng.random() < 0.10:
        kw["tolerations"] = (Toleration("dedicated", TolerationOperator.EQUAL, "edge", TaintEffect.NO_SCHEDULE),)
    if rng.random() < 0.03:
        kw["host_ports"] = ("8080/TCP",)
    if rng.random() < 0.02:  # cannot fit anywhere: bigger than any node
        kw["memory_bytes"] = 64 * GI
    return PlacementRequest(workload=f"default/w{index}", **kw)  # type: ignore[arg-type]


def make_requests(workloads: int, replicas: int, rng: random.Random) -> list[PlacementRequest]:
    shapes = [make_workload(i, rng) for i in range(workloads)]
    weights = [rng.paretovariate(1.2) for _ in shapes]  # many small workloads, a few large ones
    scale = replicas / sum(weights)
    counts = [max(1, round(w * scale)) for w in weights]
    while sum(counts) > replicas:
        counts[counts.index(max(counts))] -= 1
    while sum(counts) < replicas:
        counts[rng.randrange(len(counts))] += 1
    order = list(range(workloads))
    rng.shuffle(order)
    requests = []
    for w in order:
        name = shapes[w].workload.split("/")[1]
        for r in range(counts[w]):
            requests.append(replace(shapes[w], replica_id=f"{name}-{r}"))
    return requests


def interleave(requests: list[PlacementRequest]) -> list[PlacementRequest]:
    """Round-robin over workloads: the worst order for the engine's per-workload reuse."""
    queues: dict[str, deque[PlacementRequest]] = {}
    for r in requests:
        queues.setdefault(r.workload, deque()).append(r)
    out: list[PlacementRequest] = []
    while queues:
        for key in list(queues):
            out.append(queues[key].popleft())
            if not queues[key]:
                del queues[key]
    return out


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    per_s: float
    total_s: float
    setup_ms: float


@dataclass(frozen=True)
class Outcome:
    nodes: int
    replicas: int
    workloads: int
    placed: int
    unschedulable: int
    example: str
    grouped: Timing
    interleaved: Timing
    interleaved_count: int


def measure(
    snapshot: Snapshot, requests: list[PlacementRequest], seed: int
) -> tuple[Timing, SchedulingPass, list[Placement | Unschedulable]]:
    gc.collect()
    gc.disable()  # measure the scheduler, not when the collector happens to run
    try:
        start = time.perf_counter()
        sched = SchedulingPass(snapshot, seed=seed)
        setup_s = time.perf_counter() - start
        latencies: list[float] = []
        results: list[Placement | Unschedulable] = []
        for request in requests:
            t0 = time.perf_counter()
            results.append(sched.place(request))
            latencies.append(time.perf_counter() - t0)
        total_s = time.perf_counter() - start
    finally:
        gc.enable()
    ms = sorted(x * 1000 for x in latencies)
    timing = Timing(
        p50_ms=statistics.median(ms),
        p95_ms=ms[int(0.95 * (len(ms) - 1))],
        p99_ms=ms[int(0.99 * (len(ms) - 1))],
        max_ms=ms[-1],
        per_s=len(requests) / total_s,
        total_s=total_s,
        setup_ms=setup_s * 1000,
    )
    return timing, sched, results


def run(nodes: int, replicas: int, workloads: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    snapshot = Snapshot(make_nodes(nodes, rng), revision=1)
    requests = make_requests(workloads, replicas, rng)
    grouped, sched, results = measure(snapshot, requests, seed)
    _verify(snapshot.nodes, sched.nodes)
    mixed = interleave(requests)[: max(1, replicas * 3 // 10)]
    interleaved, sched, _ = measure(snapshot, mixed, seed)
    _verify(snapshot.nodes, sched.nodes)
    failed = [r for r in results if isinstance(r, Unschedulable)]
    return Outcome(
        nodes=nodes,
        replicas=replicas,
        workloads=workloads,
        placed=sum(isinstance(r, Placement) for r in results),
        unschedulable=len(failed),
        example=failed[0].summary if failed else "",
        grouped=grouped,
        interleaved=interleaved,
        interleaved_count=len(mixed),
    )


def _verify(before: tuple[NodeView, ...], after: tuple[NodeView, ...]) -> None:
    """The benchmark doubles as a smoke test: a node that received replicas must still be within capacity."""
    for old, new in zip(before, after, strict=True):
        if new.replicas != old.replicas and (new.free_cpu_millis < 0 or new.free_memory_bytes < 0):
            raise SystemExit(f"over-committed {new.node_id}: {new}")


def report(res: Outcome) -> str:
    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    g, m = res.grouped, res.interleaved
    rows = [
        [
            "per-decision latency P50",
            f"{g.p50_ms:.3f} ms",
            "≤ 2 ms",
            met(g.p50_ms <= GOALS["p50_ms"]),
            f"{m.p50_ms:.3f} ms",
        ],
        [
            "per-decision latency P95",
            f"{g.p95_ms:.3f} ms",
            "≤ 10 ms",
            met(g.p95_ms <= GOALS["p95_ms"]),
            f"{m.p95_ms:.3f} ms",
        ],
        ["per-decision latency P99", f"{g.p99_ms:.3f} ms", "", "", f"{m.p99_ms:.3f} ms"],
        ["per-decision latency max", f"{g.max_ms:.3f} ms", "", "", f"{m.max_ms:.3f} ms"],
        [
            "throughput (incl. setup)",
            f"{g.per_s:,.0f} placements/s",
            "≥ 2,000/s",
            met(g.per_s >= GOALS["per_s"]),
            f"{m.per_s:,.0f} placements/s",
        ],
        ["pass setup (snapshot prep)", f"{g.setup_ms:.1f} ms", "", "", f"{m.setup_ms:.1f} ms"],
        ["wall time", f"{g.total_s:.2f} s", "", "", f"{m.total_s:.2f} s"],
    ]
    return (
        f"{res.nodes:,} synthetic heterogeneous nodes (Pis, phones, laptops, gateways, VPSes; 4 regions, 12 zones; "
        f"~7% offline/cordoned/draining/gated, 15% tainted, pre-existing load) and {res.replicas:,} replicas from "
        f"{res.workloads} workloads with mixed constraints (arch, selectors, zones/regions, affinity, "
        f"anti-affinity, tolerations, zone/node spread, binpack/spread, host ports), placed one at a time in one "
        f"`SchedulingPass`: the exact arg-max over all feasible nodes, no sampling. Requests arrive workload by "
        f"workload, as `schedule_many` orders them. {res.placed:,} placed, {res.unschedulable:,} unschedulable by "
        f"design (e.g. `{res.example}`).\n\n"
        + table(
            ["metric", "grouped by workload", "goal", "met", f"interleaved ({res.interleaved_count:,} requests)"], rows
        )
        + "\n\nThe seed project's target was 200 ms P50 / 800 ms P95 per decision. The slow tail is the first "
        "replica of each workload (its static filtering and ranking, O(nodes)) and unschedulable replicas "
        "(a reason for every node); later replicas reuse the workload's ranking. The last column feeds the same "
        "pass round-robin over workloads through `SchedulingPass.place` (the worst order for that reuse; "
        "`schedule_many` regroups by workload to avoid it)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 nodes x 1,000 replicas; no doc unless --doc")
    parser.add_argument("--doc", type=Path, default=None, help=f"markdown file to update (default {DOC})")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    nodes, replicas, workloads = (500, 1000, 60) if args.quick else (5000, 10000, 300)
    res = run(nodes, replicas, workloads, args.seed)
    body = report(res)
    print(body)
    doc = args.doc if args.doc is not None else (None if args.quick else DOC)
    if doc is not None:
        command = "python bench/scheduler.py" + (" --quick" if args.quick else "")
        write_section("scheduler", "Scheduler: placement latency and throughput", body, command=command, doc=doc)
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
