"""The embedded broker under a connect burst (issue 17: 2,000 devices must be online within 10 s).

Each test pins down one cause of per-connection work that grew with the fleet or cost far more than the connection
needed, as semantics: what a connect or SUBSCRIBE touches, never how long it takes. The broker runs in this process
(plain TCP on loopback, anonymous clients with full access) and the clients are `tests.fleet.mqtt_lite`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from amqtt.session import Session

from broker.cli import open_acl
from broker.embedded import EmbeddedBroker, EmbeddedBrokerSettings
from tests.fleet.mqtt_lite import LiteClient

TIMEOUT_S = 30.0


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    b = EmbeddedBroker(EmbeddedBrokerSettings(host="127.0.0.1", port=0), acl=open_acl())
    await b.start()
    try:
        yield b
    finally:
        await b.shutdown()


def port_of(broker: EmbeddedBroker) -> int:
    port: int = broker._servers["default"].instance.sockets[0].getsockname()[1]
    return port


async def connect(broker: EmbeddedBroker, client_id: str, received: list[tuple[str, bytes]] | None = None
                  ) -> LiteClient:
    loop = asyncio.get_running_loop()

    def on_message(topic: str, payload: bytes) -> None:
        if received is not None:
            received.append((topic, payload))

    async with asyncio.timeout(TIMEOUT_S):
        _, client = await loop.create_connection(
            lambda: LiteClient(client_id, keepalive_s=60, on_message=on_message), "127.0.0.1", port_of(broker))
        await client.connected
    return client


async def test_a_subscribe_renders_no_other_session(broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt logged `repr(self._subscriptions)` after every SUBSCRIBE, built whatever the log level: every session
    of every subscription rendered per SUBSCRIBE, quadratic over a fleet's connect burst."""
    rendered: list[str | None] = []
    plain = Session.__repr__

    def counting(self: Session) -> str:
        rendered.append(self.client_id)
        return str(plain(self))

    monkeypatch.setattr(Session, "__repr__", counting)
    clients = [await connect(broker, f"node-{i}") for i in range(5)]
    for i, c in enumerate(clients):
        async with asyncio.timeout(TIMEOUT_S):
            codes = await c.subscribe([(f"cloudless/v1/node/node-{i}/desired", 1), ("cloudless/v1/all", 0)])
        assert codes == bytes([1, 0])
    assert rendered == []
    # and the subscriptions work: a message reaches every subscriber of the shared filter
    received: list[tuple[str, bytes]] = []
    listener = await connect(broker, "listener", received)
    async with asyncio.timeout(TIMEOUT_S):
        await listener.subscribe([("cloudless/v1/node/+/desired", 0)])
    clients[0].publish("cloudless/v1/node/node-3/desired", b"x", qos=0, retain=False)
    async with asyncio.timeout(TIMEOUT_S):
        while received != [("cloudless/v1/node/node-3/desired", b"x")]:
            await asyncio.sleep(0.01)
    for c in [*clients, listener]:
        c.disconnect()
