"""Issue 16, Medium 9: a write the API answered 503 ("retry") must not take effect once the disk has room again.
The request's in-memory change and its queued store writes go with the refused transaction."""

from __future__ import annotations

import asyncio

from tests.coordinator.rest_harness import AUTH, Rest, rest
from tests.pair.test_pair import workload

DOC = workload("web", 1, resources={"requests": {"cpu": "10m", "memory": "8Mi"},
                                    "limits": {"cpu": "100m", "memory": "64Mi"}})


async def _rounds(r: Rest, n: int) -> None:
    start = r.coord.rounds
    while r.coord.rounds < start + n:
        await asyncio.sleep(0.02)


async def _refused_then_room_again(r: Rest, method: str, path: str, body: object) -> None:
    r.store.full = True
    resp = await r.client.request(method, path, json=body, headers=AUTH)
    assert resp.status == 503, await resp.text()
    r.store.full = False
    await _rounds(r, 3)  # rounds that would write whatever the refused request left queued


async def test_a_scale_answered_503_never_takes_effect() -> None:
    async with rest() as r:
        assert (await r.client.put("/v1/workloads/default/web", json=DOC, headers=AUTH)).status == 201
        await _refused_then_room_again(r, "POST", "/v1/workloads/default/web/scale", {"replicas": 5})
        assert r.coord.workloads["default/web"].doc["spec"].get("replicas", 1) == 1
        stored = await r.store.get("/workloads/default/web")
        assert stored is None or (b'"replicas": 5' not in stored.value and b'"replicas":5' not in stored.value)
        assert len([x for x in r.coord.replicas.values() if x.workload == "web"]) <= 1
        assert not [e for e in r.coord.journal.events if e.reason == "Updated"]


async def test_an_apply_answered_503_never_takes_effect() -> None:
    async with rest() as r:
        await _refused_then_room_again(r, "PUT", "/v1/workloads/default/web", DOC)
        assert "default/web" not in r.coord.workloads
        assert not r.coord.replicas
        assert not [e for e in r.coord.journal.events if e.object == "workload/default/web"]
        assert r.coord.round_failures == 0


async def test_a_delete_answered_503_never_takes_effect() -> None:
    async with rest() as r:
        assert (await r.client.put("/v1/workloads/default/web", json=DOC, headers=AUTH)).status == 201
        await _refused_then_room_again(r, "DELETE", "/v1/workloads/default/web", None)
        assert not r.coord.workloads["default/web"].deleting
