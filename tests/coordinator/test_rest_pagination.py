"""Paged, filtered lists on the real REST app of a real Coordinator (in-memory broker; nodes join with real
NodeStatus messages): every item once across pages, the consistency rule while nodes come and go, filters done
by the server, a 400 naming the parameter for bad input, and a node's allocation equal to the scheduler's view."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from broker import wire
from broker.wire import NodeFacts, NodeStatus, PathKind, PeerPath, Presence, topics
from tests.coordinator.rest_harness import AUTH, Rest, rest
from tests.coordinator.test_overlay import _online, _publish, report

SPEC = {"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}


def _status(node: str, *, zone: str = "home", labels: dict[str, str] | None = None,
            presence: Presence = Presence.ONLINE) -> bytes:
    facts = NodeFacts(arch="x86_64", os="linux", cpu_count=4, memory_bytes=4 * 1024**3, runtime="podman",
                      zone=zone, labels=labels or {}, abilities=("containers", "port-remap", "volumes", "images"))
    return wire.encode(NodeStatus(node_id=node, presence=presence, ts=time.time(), facts=facts))


async def _until(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _join(r: Rest, nodes: dict[str, dict[str, Any]]) -> None:
    bus = r.bus.client(f"nodes-{len(r.coord.cluster.members)}")
    await bus.start()
    for node, kw in nodes.items():
        bus.publish_nowait(topics.node_status(node), _status(node, **kw), retain=True)
    await _until("nodes joined", lambda: set(nodes) <= set(r.coord.cluster.members))


async def _get(r: Rest, path: str, **query: Any) -> dict[str, Any]:
    resp = await r.client.get(path, params={k: str(v) for k, v in query.items()}, headers=AUTH)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


def _counted(path: str, query: dict[str, Any]) -> bool:
    """Whether a list's pages say how many items follow (docs/api.md): when the server can count them without a
    scan, as Kubernetes does (no remainingItemCount with a selector)."""
    given = set(query) - {"limit", "continue"}
    match path:
        case "/v1/nodes":
            return not given
        case "/v1/workloads":
            return given <= {"namespace"}
        case "/v1/replicas":
            return given in (set(), {"node"}, {"namespace", "workload"})
        case "/v1/events":
            return given <= {"tail"}
    return path != "/v1/peers"  # peers give only the token


async def _walk(r: Rest, path: str, **query: Any) -> list[dict[str, Any]]:
    """Every item through `continue`; where pages count what follows, each count is exactly what came after."""
    items: list[dict[str, Any]] = []
    token = query.pop("continue", None)  # resume a walk from a token
    counts: list[tuple[int, int]] = []  # (items so far, remainingItemCount)
    for _ in range(1000):
        body = await _get(r, path, **query, **({"continue": token} if token else {}))
        items += body["items"]
        token = body["metadata"].get("continue")
        if not token:
            assert "remainingItemCount" not in body["metadata"]
            assert all(len(items) - so_far == left for so_far, left in counts), (counts, len(items))
            return items
        if _counted(path, query):
            counts.append((len(items), body["metadata"]["remainingItemCount"]))
        else:
            assert "remainingItemCount" not in body["metadata"], (path, query)
    raise AssertionError("never ended")


async def _refused(r: Rest, path: str, field: str, **query: Any) -> None:
    resp = await r.client.get(path, params=query, headers=AUTH)
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["field"] == field, body


async def test_nodes_page_by_id_each_exactly_once_with_counts() -> None:
    async with rest() as r:
        names = [f"n{i:02}" for i in range(37)]
        await _join(r, {n: {} for n in reversed(names)})
        first = await _get(r, "/v1/nodes", limit=10)
        assert [n["id"] for n in first["items"]] == names[:10]
        assert first["metadata"]["remainingItemCount"] == 27
        assert [n["id"] for n in await _walk(r, "/v1/nodes", limit=10)] == names
        assert [n["id"] for n in await _walk(r, "/v1/nodes")] == names  # default limit: one page


async def test_nodes_added_ahead_of_the_cursor_are_seen_behind_it_not_removed_ones_vanish() -> None:
    async with rest() as r:
        await _join(r, {f"n{i:02}": {} for i in range(0, 40, 2)})  # n00, n02, ... n38
        first = await _get(r, "/v1/nodes", limit=5)
        assert [n["id"] for n in first["items"]] == ["n00", "n02", "n04", "n06", "n08"]
        await _join(r, {"n01": {}, "n31": {}})  # behind the cursor, ahead of it
        bus = r.bus.client("leaver")
        await bus.start()
        bus.publish_nowait(topics.node_status("n20"), _status("n20", presence=Presence.OFFLINE), retain=True)
        await _until("n20 offline", lambda: r.coord.cluster.members["n20"].state.value == "offline")
        await r.coord.ops.delete_node("n20")
        rest_items = await _walk(r, "/v1/nodes", limit=5, **{"continue": first["metadata"]["continue"]})
        ids = [n["id"] for n in first["items"]] + [n["id"] for n in rest_items]
        assert "n01" not in ids, "added behind the cursor: not seen on this walk"
        assert "n31" in ids, "added ahead of the cursor: seen"
        assert "n20" not in ids, "removed before its page: gone"
        assert ids == sorted(set(ids))
        assert set(ids) == {f"n{i:02}" for i in range(0, 40, 2)} - {"n20"} | {"n31"}


async def test_node_filters_run_on_the_server() -> None:
    async with rest() as r:
        await _join(r, {
            "a1": {"zone": "attic", "labels": {"gpu": "yes", "tier": "edge"}},
            "a2": {"zone": "attic", "labels": {"tier": "core"}},
            "c1": {"zone": "cellar", "labels": {"gpu": "no", "tier": "edge"}},
            "c2": {"zone": "cellar", "labels": {}},
            "c3": {"zone": "cellar", "labels": {"tier": "edge"}, "presence": Presence.OFFLINE},
        })
        await _until("c3 offline", lambda: r.coord.cluster.members["c3"].state.value == "offline")

        async def ids(**query: Any) -> list[str]:
            return [n["id"] for n in await _walk(r, "/v1/nodes", **query)]
        assert await ids(zone="attic") == ["a1", "a2"]
        assert await ids(state="offline") == ["c3"]
        assert await ids(state="online", zone="cellar") == ["c1", "c2"]
        assert await ids(labelSelector="tier=edge") == ["a1", "c1", "c3"]
        assert await ids(labelSelector="tier=edge,gpu") == ["a1", "c1"]
        assert await ids(labelSelector="gpu notin (yes),tier") == ["a2", "c1", "c3"]
        assert await ids(labelSelector="!tier") == ["c2"]
        assert await ids(labelSelector="tier in (edge,core)", state="online", limit=1) == ["a1", "a2", "c1"]
        assert await ids(zone="nowhere") == []


@pytest.mark.parametrize(("path", "query", "field"), [
    ("/v1/nodes", {"limit": "0"}, "limit"),
    ("/v1/nodes", {"limit": "5001"}, "limit"),
    ("/v1/nodes", {"limit": "lots"}, "limit"),
    ("/v1/nodes", {"continue": "garbage!"}, "continue"),
    ("/v1/nodes", {"labelSelector": "a in (b"}, "labelSelector"),
    ("/v1/nodes", {"state": "asleep"}, "state"),
    ("/v1/workloads", {"labelSelector": "=x"}, "labelSelector"),
    ("/v1/workloads", {"namespace": "no spaces"}, "namespace"),
    ("/v1/workloads", {"limit": "-3"}, "limit"),
    ("/v1/replicas", {"node": "../etc"}, "node"),
    ("/v1/events", {"tail": "0"}, "tail"),
    ("/v1/events", {"since": "yesterday"}, "since"),
    ("/v1/events", {"type": "Fatal"}, "type"),
    ("/v1/services", {"limit": "x"}, "limit"),
    ("/v1/peers", {"continue": "e30"}, "continue"),
], ids=str)
async def test_bad_paging_or_filter_input_is_a_400_naming_the_parameter(path: str, query: dict[str, str],
                                                                         field: str) -> None:
    async with rest() as r:
        await _refused(r, path, field, **query)


async def test_a_token_of_one_list_is_refused_by_another() -> None:
    async with rest() as r:
        await _join(r, {"a": {}, "b": {}})
        token = (await _get(r, "/v1/nodes", limit=1))["metadata"]["continue"]
        await _refused(r, "/v1/services", "continue", **{"continue": token})


async def test_workloads_and_replicas_page_and_filter_and_nodes_show_their_allocation() -> None:
    async with rest() as r:
        await _join(r, {f"n{i}": {} for i in range(3)})
        for ns, name, labels, replicas in [("default", "web", {"app": "web"}, 2), ("default", "db", {"app": "db"}, 1),
                                           ("lab", "web", {"app": "web"}, 3), ("lab", "cache", {}, 1)]:
            doc = {"apiVersion": "cloudless/v1", "kind": "Workload",
                   "metadata": {"name": name, "namespace": ns, "labels": labels},
                   "spec": {"image": "localhost/app:1", "replicas": replicas, **SPEC}}
            resp = await r.client.put(f"/v1/workloads/{ns}/{name}", json=doc, headers=AUTH)
            assert resp.status == 201, await resp.text()
        await _until("all placed", lambda: len(r.coord.cluster.replicas) == 7
                     and all(x.node for x in r.coord.cluster.replicas.values()))

        def names(items: list[dict[str, Any]]) -> list[str]:
            return [f"{w['metadata']['namespace']}/{w['metadata']['name']}" for w in items]
        assert names(await _walk(r, "/v1/workloads", limit=1)) == ["default/db", "default/web", "lab/cache", "lab/web"]
        assert names(await _walk(r, "/v1/workloads", labelSelector="app=web")) == ["default/web", "lab/web"]
        assert names(await _walk(r, "/v1/workloads", namespace="lab", limit=1)) == ["lab/cache", "lab/web"]
        lab_web = (await _get(r, "/v1/workloads/lab/web"))["status"]["replicas"]
        assert len(lab_web) == 3, "a workload's own replicas, nobody else's"

        reps = await _walk(r, "/v1/replicas", limit=2)
        keys = [(x["namespace"], x["workload"], x["id"]) for x in reps]
        assert keys == sorted(keys) and len(set(keys)) == 7
        assert len(await _walk(r, "/v1/replicas", namespace="lab", workload="web", limit=2)) == 3
        snap = {v.node_id: v for v in r.coord.snapshot(r.coord.clock()).nodes}
        for node in await _walk(r, "/v1/nodes", limit=2):
            view = snap[node["id"]]
            on_node = [x["id"] for x in await _walk(r, "/v1/replicas", node=node["id"])]
            assert node["replicas"] == view.replicas == len(on_node)
            assert node["allocated"] == {"cpu": view.allocated_cpu_millis, "memory": view.allocated_memory_bytes}
            assert (await _get(r, f"/v1/nodes/{node['id']}"))["allocated"] == node["allocated"]
        assert sum(n["allocated"]["cpu"] for n in await _walk(r, "/v1/nodes")) == 700


async def test_events_page_oldest_first_and_tail_keeps_the_newest() -> None:
    async with rest() as r:
        for i in range(12):
            await r.coord.journal.record_now("Normal", "Test", f"node/x{i % 3}", f"event {i}")
        await _until("events committed", lambda: sum(
            e.reason == "Test" for e in r.coord.journal.committed_events()) == 12)
        walked = [e for e in await _walk(r, "/v1/events", limit=5, reason="Test")]
        assert [e["message"] for e in walked] == [f"event {i}" for i in range(12)]
        ids = [e["id"] for e in walked]
        assert ids == sorted(ids)
        tail = await _walk(r, "/v1/events", reason="Test", tail=4, limit=3)
        assert [e["message"] for e in tail] == [f"event {i}" for i in range(8, 12)]
        mine = await _walk(r, "/v1/events", object="node/x1", limit=2)
        assert [e["message"] for e in mine] == [f"event {i}" for i in (1, 4, 7, 10)]


async def test_tail_keeps_its_window_across_pages_while_events_arrive() -> None:
    """The first page of `tail` fixes the window's start in the token: events recorded between pages do not move
    it (the newest N are not recomputed per page), so nothing between the cursor and a newer window is skipped."""
    async with rest() as r:
        for i in range(12):
            await r.coord.journal.record_now("Normal", "Test", "node/x", f"event {i}")
        await _until("events committed", lambda: sum(
            e.reason == "Test" for e in r.coord.journal.committed_events()) == 12)
        first = await _get(r, "/v1/events", reason="Test", tail=4, limit=3)
        assert [e["message"] for e in first["items"]] == ["event 8", "event 9", "event 10"]
        for i in range(12, 17):
            await r.coord.journal.record_now("Normal", "Test", "node/x", f"event {i}")
        await _until("more committed", lambda: sum(
            e.reason == "Test" for e in r.coord.journal.committed_events()) == 17)
        rest_of = await _walk(r, "/v1/events", reason="Test", tail=4, limit=3,
                              **{"continue": first["metadata"]["continue"]})
        assert [e["message"] for e in rest_of] == [f"event {i}" for i in range(11, 17)], \
            "event 11 is inside the first page's window: a window recomputed per page would skip it"
        # a token without the window (from a walk without `tail`) is refused for a `tail` walk, not guessed at
        plain = await _get(r, "/v1/events", reason="Test", limit=3)
        await _refused(r, "/v1/events", "continue", reason="Test", tail="4", limit="3",
                       **{"continue": plain["metadata"]["continue"]})


async def test_the_openapi_document_lists_the_query_parameters() -> None:
    async with rest() as r:
        doc = await _get(r, "/openapi.json")
        params = {p["name"]: p for p in doc["paths"]["/v1/nodes"]["get"]["parameters"]}
        assert set(params) == {"limit", "continue", "labelSelector", "state", "zone"}
        assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 5000}
        assert params["state"]["schema"]["enum"] == ["online", "suspect", "offline", "lost"]
        for path in ("/v1/workloads", "/v1/replicas", "/v1/events", "/v1/services", "/v1/peers"):
            assert {"limit", "continue"} <= {p["name"] for p in doc["paths"][path]["get"]["parameters"]}, path


async def test_peer_paths_page_by_node_then_peer() -> None:
    async with rest() as r:
        nodes = ["a", "b", "c", "d"]
        await _online(r, *nodes)
        for n in nodes:
            peers = tuple(PeerPath(p, PathKind.DIRECT, address="192.0.2.1:41641") for p in reversed(nodes) if p != n)
            await _publish(r, report(n, peers=peers))
        await _until("reports", lambda: set(nodes) <= set(r.coord.overlay.reports))
        walked = await _walk(r, "/v1/peers", limit=5)
        pairs = [(x["node"], x["peer"]) for x in walked]
        assert pairs == [(n, p) for n in nodes for p in nodes if p != n], "each (node, peer) once, in order"
        only_c = await _walk(r, "/v1/peers", node="c", limit=2)
        assert [(x["node"], x["peer"]) for x in only_c] == [("c", "a"), ("c", "b"), ("c", "d")]
