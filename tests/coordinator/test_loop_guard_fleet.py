"""Nothing blocks the loop at fleet size (issue 17, Deliver 1): 5,000 nodes, 2,500 replicas of one workload and a
few small ones, in memory (tests.coordinator.fleet_memory), under the loop guard (tests.coordinator.loop_guard: no
callback or task step may take more than 50 ms of CPU).

Every phase a coordinator meets on a big fleet is watched on its own — the join burst (every node's status and first
heartbeat, with the engine's own rounds running meanwhile, then the first round past the settle time), every node's
heartbeat, the apply, the round
that places 2,500 replicas, the rounds and ready reports until they all run, a steady round, the REST lists (nodes
first page and the whole list through `continue`, workloads, /healthz), the dashboard mirror, and 10% of the nodes
going silent until lost and replaced — and the test fails once, at the end, listing every phase over the limit with
its longest callbacks, so one run says everything that still blocks. A single garbage collection over the limit fails
its phase too: the loop serves nobody while it runs, whichever callback it landed in (coordinator.gc_pace keeps full
collections to what is new since the last).

The test's own task only drives the simulated nodes and reads responses: it is exempt. The coordinator's work runs
where it runs in production: in the engine's loop task, in aiohttp's request tasks, in the bus handlers, and in the
named tasks fleet_memory runs rounds in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from coordinator.service import DASH_INTERVAL_S
from tests.coordinator import fleet_memory, loop_guard
from tests.coordinator.fleet_memory import FleetCluster, converge, workload
from tests.coordinator.loop_guard import Guard

NODES = 5000
BIG = 2500
SMALL = (("api", 5), ("cache", 3), ("jobs", 7))
PAGE = 500
LIMIT_S = loop_guard.LIMIT_S
# CLOUDLESS_LOOP_PROFILE=1: each culprit in the failure comes with its profile (where its time went)
PROFILE = os.environ.get("CLOUDLESS_LOOP_PROFILE") == "1"

pytestmark = pytest.mark.timeout(600)  # a coordinator that still blocks takes long to fail; fixed, it takes ~30 s


class Phases:
    """A guard per phase; `report()` is every phase over the limit with its worst callbacks."""

    def __init__(self) -> None:
        self.guards: dict[str, Guard] = {}
        self.wall: dict[str, float] = {}

    async def run(self, name: str, work: Callable[[], Awaitable[object]]) -> object:
        started = time.perf_counter()
        with loop_guard.watch(LIMIT_S, exempt=[asyncio.current_task()], check=False, profile=PROFILE) as guard:
            result = await work()
            await asyncio.sleep(0)  # what the phase woke (a round, a handler) runs inside it
            await asyncio.sleep(0)
        self.guards[name], self.wall[name] = guard, time.perf_counter() - started
        return result

    def summary(self) -> str:
        lines = []
        for name, g in self.guards.items():
            worst = g.longest(1)
            longest = f"{worst[0].cpu_s * 1000:.1f} ms CPU {worst[0].what}" if worst else "-"
            lines.append(f"{name}: {len(g.steps)} steps, longest {longest}, wall {self.wall[name]:.2f} s, "
                         f"gc {g.gc_total_s * 1000:.0f} ms (longest collection {g.gc_longest_s * 1000:.1f} ms, "
                         f"gen {g.gc_longest_gen})")
        return "\n".join(lines)

    def report(self) -> str:
        failed = [(name, g) for name, g in self.guards.items() if g.culprits or g.gc_longest_s > LIMIT_S]
        if not failed:
            return ""
        parts = [f"{len(failed)} of {len(self.guards)} phases held the loop longer than {LIMIT_S * 1000:.0f} ms "
                 "of CPU (a step, or one garbage collection):"]
        for name, g in failed:
            if g.gc_longest_s > LIMIT_S:
                parts.append(f"- {name}: one garbage collection (generation {g.gc_longest_gen}) took "
                             f"{g.gc_longest_s * 1000:.1f} ms")
            if g.culprits:
                parts.append(f"- {name}: {len(g.culprits)} step(s) over; longest:")
                parts.extend(f"    {s}" for s in g.culprits[:3])
        return "\n".join(parts) + "\n\nall phases:\n" + self.summary()


async def walk_nodes(fc: FleetCluster) -> tuple[int, int]:
    """Every node through `continue`: (items, pages)."""
    items, pages, token = 0, 0, None
    while True:
        params = {"limit": str(PAGE), **({"continue": token} if token else {})}
        status, body = await fc.get("/v1/nodes", **params)
        assert status == 200, body
        items, pages = items + len(body["items"]), pages + 1
        token = body.get("metadata", {}).get("continue")
        if not token:
            return items, pages
        assert pages <= NODES, "the continue tokens never end"


FRESH = "CLOUDLESS_LOOP_GUARD_FRESH"  # set in the child: run the scenario here


def test_no_callback_holds_the_loop_at_5000_nodes_and_2500_replicas(tmp_path: Path) -> None:
    """Run in a fresh interpreter: deep in the full suite, this process carries every earlier test's heap (and
    their leftover threads), and a step's CPU time there measures the suite as much as the coordinator."""
    if os.environ.get(FRESH) == "1":
        asyncio.run(_scenario(tmp_path))
        return
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "child"),
         f"{__file__}::test_no_callback_holds_the_loop_at_5000_nodes_and_2500_replicas"],
        env={**os.environ, FRESH: "1"}, capture_output=True, text=True, timeout=580, check=False,
        cwd=Path(__file__).resolve().parents[2])
    print(child.stdout[-6000:])
    assert child.returncode == 0, child.stdout[-12000:] + child.stderr[-3000:]


async def _scenario(tmp_path: Path) -> None:
    phases = Phases()
    async with fleet_memory.cluster(tmp_path, nodes=NODES, joined=False) as fc:
        async def join_burst() -> None:
            # every node connects and says who it is, then its first heartbeat, while the engine's own loop runs the
            # rounds the joins wake (in the settle time after the coordinator connected), then the first round past it
            assert await fc.join() == NODES
            assert await fc.heartbeat_all() == NODES
            await fc.settle()
        await phases.run("join burst (status + first heartbeat of every node)", join_burst)
        assert len(fc.coord.members) == NODES
        fc.advance(10.0)
        assert await phases.run("heartbeats of every node", fc.heartbeat_all) == NODES

        async def apply_all() -> None:
            await fc.apply(workload("big", BIG))
            for name, n in SMALL:
                await fc.apply(workload(name, n))
        await phases.run("apply (REST PUT)", apply_all)
        await phases.run("round after apply", fc.round)
        want = BIG + sum(n for _, n in SMALL)
        await phases.run("rounds and ready reports until all ready", lambda: converge(fc, want, rounds=30))
        assert fc.ready() == want
        spread = len(set(fc.placed("big").values()))  # checked at the end: the loop report comes first

        fc.advance(5.0)
        await fc.heartbeat_all()
        await phases.run("round steady", fc.round)
        await phases.run("round steady (again)", fc.round)

        async def first_page() -> None:
            status, body = await fc.get("/v1/nodes", limit=str(PAGE))
            assert status == 200 and 0 < len(body["items"]) <= NODES
        await phases.run("GET /v1/nodes first page", first_page)
        walked = await phases.run("GET /v1/nodes whole list through continue", lambda: walk_nodes(fc))
        assert isinstance(walked, tuple) and walked[0] == NODES

        async def workloads() -> None:
            status, body = await fc.get("/v1/workloads")
            assert status == 200 and {w["metadata"]["name"] for w in body["items"]} >= {"big", *dict(SMALL)}
        await phases.run("GET /v1/workloads", workloads)

        async def healthz() -> None:
            for _ in range(20):
                assert (await fc.http.get("/healthz")).status == 200
        await phases.run("GET /healthz", healthz)
        fc.advance(DASH_INTERVAL_S)
        await phases.run("dashboard publish", fc.publish_dashboard)
        await phases.run("dashboard publish (nothing changed)", fc.publish_dashboard)

        holders = sorted(set(fc.placed().values()))
        lost = [n for n in sorted(fc.nodes) if n not in holders][: NODES // 20] + holders[: NODES // 20]  # 10%
        await phases.run("10% of nodes silent until lost (rounds)", lambda: fc.lose(lost))
        await phases.run("round after 10% lost", fc.round)
        await phases.run("replaced and ready again", lambda: converge(fc, want, rounds=30))
        assert not set(fc.placed().values()) & set(lost)
        fc.advance(5.0)
        await phases.run("heartbeats of every live node", fc.heartbeat_all)

    print(phases.summary())  # in the output of a passing run too (pytest -s): the numbers
    assert not phases.report(), phases.report()
    assert spread == BIG, f"2,500 small replicas on {spread} nodes of 5,000, not one per node"
