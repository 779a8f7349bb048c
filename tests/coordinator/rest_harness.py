"""A real Coordinator (in-memory broker, a store fake) and its real REST app behind aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import Api
from coordinator.http import token_digest
from coordinator.identity import IdentityService
from coordinator.service import Coordinator, CoordinatorConfig
from tests.coordinator.stores import FullDiskStore
from tests.pair.fakebus import FakeBroker

ADMIN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Rest:
    coord: Coordinator
    store: FullDiskStore
    client: TestClient[Any, Any]
    bus: FakeBroker


@asynccontextmanager
async def rest(*, identity: IdentityService | None = None, start: bool = True,
               tick_s: float = 0.05) -> AsyncIterator[Rest]:
    store = FullDiskStore()
    bus = FakeBroker()
    coord = Coordinator(CoordinatorConfig(coordinator_id="test", tick_s=tick_s), store=store,
                        mqtt=bus.client("coordinator@test"))  # type: ignore[arg-type]
    if start:
        await coord.start()
    api = Api(coord, token_digests={token_digest(ADMIN): ("admin", "admin")}, identity=identity)
    client: TestClient[Any, Any] = TestClient(TestServer(api.app()))
    await client.start_server()
    try:
        yield Rest(coord, store, client, bus)
    finally:
        await client.close()
        if start:
            await coord.stop()
        await store.close()
