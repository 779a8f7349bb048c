"""The REST lists at fleet size (issue 17): 5,000 nodes and 2,500 replicas in memory (tests.coordinator.fleet_memory),
each request under the loop guard (no callback may take more than 50 ms of CPU), every list answered whole through
`continue`, the largest allowed page in one request, filters, one node and one workload.

It prints, per request, the wall time through aiohttp's test client (client decoding included) and the longest
callback's CPU time: `pytest -s tests/coordinator/test_rest_pagination_fleet.py` gives the numbers. Only the loop
guard fails the test; wall times are reported, never asserted (a loaded CI machine would make them flaky).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.coordinator import fleet_memory, loop_guard
from tests.coordinator.fleet_memory import FleetCluster, converge, workload
from tests.coordinator.loop_guard import Guard

NODES = 5000
REPLICAS = 2500

pytestmark = pytest.mark.timeout(600)


async def measured(fc: FleetCluster, name: str, work: Callable[[], Awaitable[int]],
                   rows: list[tuple[str, float, Guard, int]]) -> None:
    started = time.perf_counter()
    with loop_guard.watch(exempt=[asyncio.current_task()], check=False) as guard:
        items = await work()
        await asyncio.sleep(0)
    rows.append((name, time.perf_counter() - started, guard, items))


async def walk(fc: FleetCluster, path: str, **params: str) -> int:
    """Every item of a list through `continue`; checks each key comes once, in order."""
    seen: list[Any] = []
    token = None
    for _ in range(NODES + 1):
        status, body = await fc.get(path, **params, **({"continue": token} if token else {}))
        assert status == 200, body
        seen += [i.get("id") or (i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            if path == "/v1/nodes":
                assert seen == sorted(set(seen)), "each node once, in id order"
            return len(seen)
    raise AssertionError("continue never ended")


async def test_rest_lists_at_5000_nodes_hold_the_loop_at_most_50_ms(tmp_path: Path) -> None:
    rows: list[tuple[str, float, Guard, int]] = []
    async with fleet_memory.cluster(tmp_path, nodes=NODES) as fc:
        await fc.apply(workload("big", REPLICAS))
        await converge(fc, REPLICAS, rounds=30)
        node = sorted(set(fc.placed().values()))[len(fc.placed()) // 2]  # a node that holds a replica

        async def one(path: str, **params: str) -> int:
            status, body = await fc.get(path, **params)
            assert status == 200, body
            return len(body["items"]) if "items" in body else 1
        assert await one("/v1/replicas", node=node) >= 1

        await measured(fc, "GET /v1/nodes (first page, limit 500)", lambda: one("/v1/nodes", limit="500"), rows)
        await measured(fc, "GET /v1/nodes whole list via continue (limit 500)", lambda: walk(fc, "/v1/nodes"), rows)
        await measured(fc, "GET /v1/nodes?limit=5000 (one page)", lambda: one("/v1/nodes", limit="5000"), rows)
        await measured(fc, "GET /v1/nodes?labelSelector=rack=r7&zone=zone-d",
                       lambda: walk(fc, "/v1/nodes", labelSelector="rack=r7", zone="zone-d"), rows)
        await measured(fc, "GET /v1/nodes?state=online (first page)",
                       lambda: one("/v1/nodes", state="online"), rows)
        await measured(fc, f"GET /v1/nodes/{node}", lambda: one(f"/v1/nodes/{node}"), rows)
        await measured(fc, "GET /v1/replicas whole list via continue (limit 500)",
                       lambda: walk(fc, "/v1/replicas"), rows)
        await measured(fc, f"GET /v1/replicas?node={node}", lambda: one("/v1/replicas", node=node), rows)
        await measured(fc, "GET /v1/workloads", lambda: one("/v1/workloads"), rows)
        await measured(fc, "GET /v1/workloads/default/big (2,500 replicas)",
                       lambda: one("/v1/workloads/default/big"), rows)
        await measured(fc, "GET /v1/events whole list via continue", lambda: walk(fc, "/v1/events"), rows)
        await measured(fc, "GET /v1/events?tail=100", lambda: one("/v1/events", tail="100"), rows)
        await measured(fc, "GET /v1/overlay (every node's overlay)", lambda: one("/v1/overlay"), rows)
        retained = len(fc.coord.journal.committed_events())

        async def replay() -> int:
            """The event stream's replay of every retained event (then the connection is dropped)."""
            resp = await fc.http.get("/v1/events/stream", headers=fleet_memory.AUTH)
            seen = 0
            async for line in resp.content:
                seen += line.startswith(b"id: ")
                if seen == retained:
                    break
            resp.close()
            return seen
        await measured(fc, "GET /v1/events/stream (replay of every retained event)", replay, rows)

        async def plain(path: str) -> int:
            resp = await fc.http.get(path, headers=fleet_memory.AUTH)
            assert resp.status < 500, path
            await resp.read()
            return 1
        for path in ("/readyz", "/metrics", "/openapi.json"):
            await measured(fc, f"GET {path}", lambda path=path: plain(path), rows)  # type: ignore[misc]

    print()
    for name, wall, guard, items in rows:
        worst = guard.longest(1)
        print(f"{name}: {items} items, {wall * 1000:.0f} ms wall, longest callback "
              f"{worst[0].cpu_s * 1000 if worst else 0:.1f} ms CPU, gc {guard.gc_total_s * 1000:.0f} ms"
              + (f" ({worst[0].what})" if worst and worst[0].what else ""))
    over = [(name, g.culprits[:3]) for name, _, g, _ in rows if g.culprits]
    assert not over, "\n".join(f"{name}: {', '.join(map(str, c))}" for name, c in over)
