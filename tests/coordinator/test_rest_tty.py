"""coordinator.rest.tty's refusals that need a coordinator in a particular state: a follower, a full house. (The
session itself: tests/pair/test_tty_pair.py and tests/integration/test_exec_tty.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.http import token_digest
from coordinator.rest.tty import TtyHandlers
from coordinator.tty import Sessions
from tests.pair.fakebus import FakeBroker

ADMIN = "admin-token"
PATH = "/v1/workloads/default/web/replicas/web-0/tty"


def engine(*, acting: bool, leader_api: str | None = "https://10.0.0.2:8470") -> Any:
    replica = SimpleNamespace(replica_id="web-0", namespace="default", workload="web", node="pi-1")
    return SimpleNamespace(acting=acting, leadership=SimpleNamespace(leader_api=leader_api),
                           cluster=SimpleNamespace(replicas={"web-0": replica}), clock=lambda: 1.0,
                           mqtt=FakeBroker().client("coordinator@t"))


async def client_for(handlers: TtyHandlers) -> TestClient[Any, Any]:
    app = web.Application()
    app.router.add_get("/v1/workloads/{namespace}/{name}/replicas/{replica}/tty", handlers.tty)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def follower() -> AsyncIterator[TestClient[Any, Any]]:
    client = await client_for(TtyHandlers(engine(acting=False), tokens={token_digest(ADMIN): ("admin", "admin")}))
    yield client
    await client.close()


async def test_a_follower_refuses_and_names_the_leader(follower: TestClient[Any, Any]) -> None:
    resp = await follower.get(PATH, params=[("command", "sh")], headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 409
    message = (await resp.json())["error"]["message"]
    assert "served by the leader coordinator" in message and "--server https://10.0.0.2:8470" in message


async def test_without_a_leader_the_refusal_says_to_retry() -> None:
    client = await client_for(TtyHandlers(engine(acting=False, leader_api=None),
                                          tokens={token_digest(ADMIN): ("admin", "admin")}))
    try:
        resp = await client.get(PATH, params=[("command", "sh")], headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status == 409 and "retry in a few seconds" in (await resp.json())["error"]["message"]
    finally:
        await client.close()


async def test_no_token_is_refused_before_anything_else(follower: TestClient[Any, Any]) -> None:
    resp = await follower.get(PATH, params=[("command", "sh")])
    assert resp.status == 403


async def test_a_full_house_refuses_the_upgrade_with_429() -> None:
    handlers = TtyHandlers(engine(acting=True), tokens={token_digest(ADMIN): ("admin", "admin")})
    handlers.sessions = Sessions(max_sessions=1)
    handlers.sessions.open("other", "pi-2", "db-0", 0.0)
    client = await client_for(handlers)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(PATH, params=[("command", "sh")], headers={"Authorization": f"Bearer {ADMIN}"})
        assert refused.value.status == 429
        assert list(handlers.sessions.by_id) == ["other"]
        # the same request without the upgrade answers with the reason (what the CLI shows)
        resp = await client.get(PATH, params=[("command", "sh")], headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status == 429
        assert (await resp.json())["error"]["message"] == ("this coordinator already runs 1 interactive sessions "
                                                           "(the most it allows); end one first")
    finally:
        await client.close()
