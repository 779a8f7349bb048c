"""An in-memory MQTT broker and clients with the same surface as `broker.client.MqttClient` (STYLE §5: a
maintained fake, not a mock). Retained messages, wildcard subscriptions (the real matcher from broker.acl),
last wills on `abort()`, and asynchronous delivery (handlers run from the event loop, as paho's do)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from broker.acl import topic_matches
from broker.client import Message
from broker.outbox import Outcome

Handler = Callable[[Message], None]


@dataclass
class FakeBroker:
    retained: dict[str, bytes] = field(default_factory=dict)
    clients: list[FakeBusClient] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (client id, topic) of every publish

    def client(self, client_id: str, *, will: tuple[str, bytes] | None = None) -> FakeBusClient:
        c = FakeBusClient(self, client_id, will)
        self.clients.append(c)
        return c

    def route(self, sender: str, topic: str, payload: bytes, retain: bool) -> None:
        self.log.append((sender, topic))
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        loop = asyncio.get_running_loop()
        for c in self.clients:
            if c.connected:
                for f, handler in list(c.subs.items()):
                    if topic_matches(topic, f):
                        loop.call_soon(handler, Message(topic, payload, 1, False))

    def wipe(self) -> None:
        """A broker restart with an empty retained store."""
        self.retained.clear()

    async def shutdown(self, *, wipe: bool = True) -> None:
        """Stop as Mosquitto does on SIGTERM: publish every connected client's last will (to the clients still
        connected), then drop every connection and (`wipe`) forget the retained store. `start` each client again
        to model the reconnect."""
        connected = [c for c in self.clients if c.connected]
        for c in connected:
            if c.will is not None:
                self.route(c.client_id, c.will[0], c.will[1], True)
        await asyncio.sleep(0.01)  # the wills reach the clients before their connections go
        for c in connected:
            c._drop()
        if wipe:
            self.wipe()


class FakeBusClient:
    def __init__(self, broker: FakeBroker, client_id: str, will: tuple[str, bytes] | None) -> None:
        self.broker = broker
        self.client_id = client_id
        self.will = will
        self.subs: dict[str, Handler] = {}
        self._hooks: list[Callable[[], Awaitable[None]]] = []
        self._down_hooks: list[Callable[[], None]] = []
        self._connected = False
        self.queued: list[tuple[str, bytes, bool]] = []

    @property
    def connected(self) -> bool:
        return self._connected

    def on_connect(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._hooks.append(hook)

    def on_disconnect(self, hook: Callable[[], None]) -> None:
        self._down_hooks.append(hook)

    def _drop(self) -> None:
        was, self._connected = self._connected, False
        if was:
            for hook in self._down_hooks:
                hook()

    async def start(self) -> None:
        self._connected = True
        loop = asyncio.get_running_loop()
        for f, handler in self.subs.items():
            for topic, payload in list(self.broker.retained.items()):
                if topic_matches(topic, f):
                    loop.call_soon(handler, Message(topic, payload, 1, True))
        for topic, payload, retain in self.queued:
            self.broker.route(self.client_id, topic, payload, retain)
        self.queued.clear()
        for hook in self._hooks:
            await hook()

    async def stop(self) -> None:
        self._drop()

    async def abort(self) -> None:
        """Drop the connection as a crash would: the broker publishes the will."""
        self._drop()
        if self.will is not None:
            self.broker.route(self.client_id, self.will[0], self.will[1], True)

    async def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> int:
        self.subs[topic_filter] = handler
        if self._connected:
            loop = asyncio.get_running_loop()
            for topic, payload in list(self.broker.retained.items()):
                if topic_matches(topic, topic_filter):
                    loop.call_soon(handler, Message(topic, payload, 1, True))
        return 1

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                       droppable: bool = False) -> asyncio.Future[Outcome]:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._connected:
            self.broker.route(self.client_id, topic, payload, retain)
        elif not droppable:
            self.queued.append((topic, payload, retain))
        fut.set_result(Outcome.DELIVERED if self._connected else Outcome.DROPPED)
        return fut

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                      droppable: bool = False) -> Outcome:
        return await self.publish_nowait(topic, payload, qos=qos, retain=retain, droppable=droppable)
