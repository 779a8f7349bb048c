"""A real Coordinator (in-memory broker, a store fake) and its real REST app behind aiohttp's test client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import Api
from coordinator.http import token_digest
from coordinator.identity import IdentityConfig, IdentityService
from coordinator.secrets import KeySource, SecretsService
from coordinator.secrets import masterkey as masterkeys
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
async def rest(*, pki: Path | None = None, start: bool = True, tick_s: float = 0.05) -> AsyncIterator[Rest]:
    """With `pki` (a directory), the coordinator runs a cluster CA and a secrets service there."""
    store = FullDiskStore()
    bus = FakeBroker()
    identity, secrets = None, None
    if pki is not None:
        identity = IdentityService(pki / "pki", store, IdentityConfig(), clock=time.time)
        loaded = masterkeys.load(KeySource(pki / "secrets.key"), secrets_present=False)
        secrets = await SecretsService.open(store, loaded.keyring, clock=time.time)
    coord = Coordinator(CoordinatorConfig(coordinator_id="test", tick_s=tick_s), store=store,
                        mqtt=bus.client("coordinator@test"), secrets=secrets)  # type: ignore[arg-type]
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
