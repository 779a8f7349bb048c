"""REST list pages at 100,000 replicas and 5,000 nodes (issue 17, review-1 P1): no page sorts or filters the whole
table before it answers, so none holds the event loop past the 50 ms guard (CPU time, tests.coordinator.loop_guard)
— first pages, pages deep in the list, filtered pages, and pages after the table changed.

The 5,000 nodes join as real nodes (tests.coordinator.fleet_memory). The 100,000 replicas (ten workloads at the
10,000-replica cap, twenty on each node) are put straight into the coordinator's replica table: placing them
through reconcile rounds is other tests' subject and would take minutes; the lists read only that table. No round
is asked for during the test; a round the engine runs on its own meanwhile is exempt from the guard (its cost is
the subject of the engine's fleet tests, not of this one).

`pytest -s` prints each request's longest callback; only the loop guard fails the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator.listing import encode_continue
from coordinator.model import ReplicaPhase, ReplicaRecord
from tests.coordinator import fleet_memory, loop_guard
from tests.coordinator.fleet_memory import FleetCluster, node_name
from tests.coordinator.loop_guard import Guard

NODES = 5000
WORKLOADS = 10
PER_WORKLOAD = 10_000  # coordinator.spec.MAX_REPLICAS

pytestmark = pytest.mark.timeout(900)


def _replica(w: int, i: int) -> ReplicaRecord:
    return ReplicaRecord(replica_id=f"big{w}-{i:05d}", namespace="default", workload=f"big{w}", revision=1,
                         spec_hash="h1", node=node_name((w * PER_WORKLOAD + i) % NODES),
                         phase=ReplicaPhase.ASSIGNED, created_at=fleet_memory.START)


async def _page(fc: FleetCluster, path: str, **params: str) -> dict[str, Any]:
    status, body = await fc.get(path, **params)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_pages_of_100k_replicas_and_5000_nodes_hold_the_loop_at_most_50_ms(tmp_path: Path) -> None:
    rows: list[tuple[str, float, Guard, int]] = []

    async def measured(name: str, path: str, **params: str) -> dict[str, Any]:
        started = time.perf_counter()
        # the engine's own loop is exempt: its rounds over the injected replicas are not this test's subject (a
        # round's steps have their own fleet tests); every REST request's steps count
        with loop_guard.watch(exempt=[asyncio.current_task(), fc.coord._task], check=False) as guard:
            body = await _page(fc, path, **params)
            await asyncio.sleep(0)
        rows.append((name, time.perf_counter() - started, guard, len(body["items"])))
        return body

    async with fleet_memory.cluster(tmp_path, nodes=NODES) as fc:
        table = fc.coord.cluster.replicas
        for w in range(WORKLOADS):
            for i in range(PER_WORKLOAD):
                r = _replica(w, i)
                table[r.replica_id] = r
            await asyncio.sleep(0)
        assert len(table) == WORKLOADS * PER_WORKLOAD

        first = await measured("replicas, first page (limit 1; the kept order is built here)", "/v1/replicas",
                               limit="1")
        assert [x["id"] for x in first["items"]] == ["big0-00000"]
        assert first["metadata"]["remainingItemCount"] == WORKLOADS * PER_WORKLOAD - 1
        second = await measured("replicas, next page (limit 500)", "/v1/replicas", limit="500",
                                **{"continue": first["metadata"]["continue"]})
        assert second["items"][0]["id"] == "big0-00001" and len(second["items"]) == 500
        deep = encode_continue("replicas", ("default", "big7", "big7-04999"))
        page = await measured("replicas, a page deep in the list (70,000 before it)", "/v1/replicas",
                              limit="500", **{"continue": deep})
        assert page["items"][0]["id"] == "big7-05000"
        assert page["metadata"]["remainingItemCount"] == 3 * PER_WORKLOAD - 5000 - 500
        end = await measured("replicas, the last page", "/v1/replicas", limit="5000",
                             **{"continue": encode_continue("replicas", ("default", "big9", "big9-04999"))})
        assert len(end["items"]) == 5000 and "continue" not in end["metadata"]
        one = await measured("replicas of one workload by name only (no namespace)", "/v1/replicas",
                             workload="big8", limit="500")
        assert {x["workload"] for x in one["items"]} == {"big8"}
        on_node = await measured("replicas on one node", "/v1/replicas", node=node_name(1234))
        assert len(on_node["items"]) == WORKLOADS * PER_WORKLOAD // NODES

        # the table changes between pages: a replica of every workload moves (each workload's id order and the
        # scheduler's indexes are dropped), one workload's replicas all go, and the list goes on from its cursor
        for w in range(WORKLOADS):
            r = _replica(w, 0)
            table[r.replica_id] = dataclasses.replace(r, node=node_name(7))
        for i in range(PER_WORKLOAD):
            del table[f"big3-{i:05d}"]
        await asyncio.sleep(0)
        after = await measured("replicas after 10,010 changes (limit 500)", "/v1/replicas", limit="500",
                               **{"continue": encode_continue("replicas", ("default", "big2", "big2-09999"))})
        assert after["items"][0]["id"] == "big4-00000", "big3 is gone: the walk goes on with the next workload"

        nodes = await measured("nodes, first page (limit 500)", "/v1/nodes", limit="500")
        # node-00000 held big*-00000 and big*-05000: ten moved away, and big3-05000 is gone
        assert nodes["items"][0]["replicas"] == WORKLOADS * PER_WORKLOAD // NODES - 10 - 1
        await measured("nodes, a page deep in the list", "/v1/nodes", limit="500",
                       **{"continue": nodes["metadata"]["continue"]})
        rare = await measured("nodes, a selector that matches 100 of 5,000 (first page)", "/v1/nodes",
                              labelSelector="rack=r7", zone="zone-d", limit="50")
        assert len(rare["items"]) == 50 and "remainingItemCount" not in rare["metadata"]

    print()
    for name, wall, guard, items in rows:
        worst = guard.longest(1)
        what = f" ({worst[0].what})" if worst and worst[0].what else ""
        print(f"{name}: {items} items, {wall * 1000:.0f} ms wall, longest callback "
              f"{worst[0].cpu_s * 1000 if worst else 0:.1f} ms CPU{what}")
    over = [(name, g.culprits[:3]) for name, _, g, _ in rows if g.culprits]
    assert not over, "\n".join(f"{name}: {', '.join(map(str, c))}" for name, c in over)
