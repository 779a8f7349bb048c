"""The embedded broker under a connect burst (issue 17: 2,000 devices must be online within 10 s).

Each test pins down one cause of per-connection work that grew with the fleet or cost far more than the connection
needed, as semantics: what a connect or SUBSCRIBE touches, never how long it takes. The broker runs in this process
(plain TCP on loopback, anonymous clients with full access) and the clients are `tests.fleet.mqtt_lite`'s.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import transitions
from amqtt.session import Session
from transitions.core import MachineError

from broker.acl import Acl
from broker.auth import CertAuthenticator
from broker.cli import open_acl
from broker.embedded import EmbeddedBroker, EmbeddedBrokerSettings
from broker.embedded_session import GC_THRESHOLDS, TLS_READ_BUFFER_BYTES, CloudlessSession
from tests.fleet.env import Pki
from tests.fleet.mqtt_lite import PUBACK, LiteClient

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


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, Pki]]:
    """Mutual TLS with the cluster CA, as `cloudless broker --cert-auth` runs it."""
    pki = Pki(tmp_path, ["127.0.0.1"])
    pki.issue_nodes(["node-a", "node-b"])
    acl = Acl()
    b = EmbeddedBroker(EmbeddedBrokerSettings(host="127.0.0.1", port=0, tls=pki.server_tls),
                       authenticator=CertAuthenticator(acl), acl=acl)
    await b.start()
    try:
        yield b, pki
    finally:
        await b.shutdown()


async def connect_tls(broker: EmbeddedBroker, pki: Pki, node: str) -> tuple[LiteClient, asyncio.BaseTransport]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_file)
    ctx.load_cert_chain(pki.cert_dir / f"{node}.pem", pki.cert_dir / f"{node}.key")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT_S):
        transport, client = await loop.create_connection(
            lambda: LiteClient(node, keepalive_s=60), "127.0.0.1", port_of(broker), ssl=ctx,
            server_hostname="127.0.0.1")
        await client.connected
    return client, transport


class NoAckClient(LiteClient):
    """Takes QoS 1 messages and never acknowledges them (a device stuck, or gone without its socket closing)."""

    def _send(self, data: bytes) -> None:
        if data[0] >> 4 != PUBACK:
            super()._send(data)


async def connect(broker: EmbeddedBroker, client_id: str, received: list[tuple[str, bytes]] | None = None,
                  kind: type[LiteClient] = LiteClient) -> LiteClient:
    loop = asyncio.get_running_loop()

    def on_message(topic: str, payload: bytes) -> None:
        if received is not None:
            received.append((topic, payload))

    async with asyncio.timeout(TIMEOUT_S):
        _, client = await loop.create_connection(
            lambda: kind(client_id, keepalive_s=60, on_message=on_message), "127.0.0.1", port_of(broker))
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


async def test_a_connection_builds_no_state_machine(broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt built a `transitions.Machine` for every Session (0.3 ms and 23 KiB each); the embedded broker's
    sessions keep the same three states in `SessionState`."""
    built: list[object] = []
    plain = transitions.Machine.__init__

    def counting(self: transitions.Machine, *args: object, **kwargs: object) -> None:
        built.append(self)
        plain(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transitions.Machine, "__init__", counting)
    client = await connect(broker, "node-0")
    session, _ = broker._sessions["node-0"]
    assert isinstance(session, CloudlessSession)
    assert session.transitions.is_connected() and session.transitions.state == "connected"
    assert built == []
    client.disconnect()
    async with asyncio.timeout(TIMEOUT_S):
        while session.transitions.state != "disconnected":
            await asyncio.sleep(0.01)


def test_session_state_moves_as_amqtts_machine_did() -> None:
    """new -> connected -> disconnected -> connected; `connect` while connected raises MachineError (amqtt's
    take-over path catches it); `disconnect` from any state; the enter hooks stamp the times."""
    s = CloudlessSession()
    assert s.transitions.is_new() and s.transitions.state == "new"
    s.transitions.connect()
    assert s.transitions.is_connected() and s.last_connect_time is not None and s.last_disconnect_time is None
    with pytest.raises(MachineError):
        s.transitions.connect()
    s.transitions.disconnect()
    assert s.transitions.is_disconnected() and s.last_disconnect_time is not None
    s.transitions.disconnect()  # disconnected -> disconnected is allowed, as in amqtt
    s.transitions.connect()
    assert s.transitions.state == "connected" and s.last_disconnect_time is None
    fresh = CloudlessSession()
    fresh.transitions.disconnect()  # new -> disconnected
    assert fresh.transitions.state == "disconnected"


async def test_tls_sends_no_session_tickets(tls_broker: tuple[EmbeddedBroker, Pki]) -> None:
    """OpenSSL sent two TLS 1.3 session tickets after every handshake (a fifth of the server's handshake work);
    no client of ours resumes a session."""
    broker, pki = tls_broker
    client, transport = await connect_tls(broker, pki, "node-a")
    async with asyncio.timeout(TIMEOUT_S):  # a round trip after the handshake: any ticket has arrived by now
        assert await client.subscribe([("cloudless/v1/node/node-a/desired", 1)]) == bytes([1])
    ssl_object = transport.get_extra_info("ssl_object")
    assert ssl_object.version() == "TLSv1.3"
    assert ssl_object.session is None or not ssl_object.session.has_ticket
    client.disconnect()


async def test_a_tls_connection_holds_a_small_read_buffer(tls_broker: tuple[EmbeddedBroker, Pki]) -> None:
    """asyncio gives every TLS connection a 256 KiB zero-filled read buffer (500 of the broker's 736 MiB at 2,000
    devices); the broker's connections hold TLS_READ_BUFFER_BYTES, and a message larger than it still arrives."""
    broker, pki = tls_broker
    a, _ = await connect_tls(broker, pki, "node-a")
    b, _ = await connect_tls(broker, pki, "node-b")
    sizes = [len(handler.writer._writer.transport._ssl_protocol._ssl_buffer)  # type: ignore[union-attr]
             for _, handler in broker._sessions.values()]
    assert len(sizes) == 2 and all(size <= TLS_READ_BUFFER_BYTES for size in sizes)
    big = bytes(range(256)) * (3 * TLS_READ_BUFFER_BYTES // 256)
    a.publish("cloudless/v1/node/node-a/status", big, qos=1, retain=True)
    async with asyncio.timeout(TIMEOUT_S):
        while "cloudless/v1/node/node-a/status" not in broker._retained_messages:
            await asyncio.sleep(0.01)
    assert bytes(broker._retained_messages["cloudless/v1/node/node-a/status"].data) == big
    for c in (a, b):
        c.disconnect()


async def test_a_certificate_connect_needs_no_thread(tls_broker: tuple[EmbeddedBroker, Pki],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Password hashing runs in a thread; a certificate the TLS handshake verified is checked on the loop (a thread
    hop per connect was more work than the check). The verdict is the same: the node is admitted as itself."""
    broker, pki = tls_broker
    hops: list[object] = []
    plain = asyncio.to_thread

    async def counting(func: object, /, *args: object, **kwargs: object) -> object:
        hops.append(func)
        return await plain(func, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", counting)
    client, _ = await connect_tls(broker, pki, "node-a")
    assert hops == []
    session, _ = broker._sessions["node-a"]
    identity = broker._identity(session)
    assert identity is not None and identity.username == "node-a"
    client.disconnect()


async def test_a_delivery_stuck_on_its_puback_holds_no_finished_ones(broker: EmbeddedBroker) -> None:
    """amqtt reaped delivery tasks only from the front of a deque: one QoS 1 delivery to a client that never sends
    PUBACK kept every later, finished delivery (with its message) in memory. Now only the stuck one stays."""
    stuck_got: list[tuple[str, bytes]] = []
    stuck = await connect(broker, "stuck", stuck_got, kind=NoAckClient)
    got: list[tuple[str, bytes]] = []
    listener = await connect(broker, "listener", got)
    publisher = await connect(broker, "publisher")
    async with asyncio.timeout(TIMEOUT_S):
        await stuck.subscribe([("t/stuck", 1)])
        await listener.subscribe([("t/other", 0)])
    publisher.publish("t/stuck", b"never acknowledged", qos=1, retain=False)
    async with asyncio.timeout(TIMEOUT_S):
        while not stuck_got:
            await asyncio.sleep(0.01)
    sent = [f"m{i}".encode() for i in range(50)]
    for payload in sent:
        publisher.publish("t/other", payload, qos=0, retain=False)
    async with asyncio.timeout(TIMEOUT_S):
        while len(got) < len(sent):
            await asyncio.sleep(0.01)
    assert [p for _, p in got] == sent  # delivered, in order
    await asyncio.sleep(0)  # the last delivery's done-callback
    assert len(list(broker._tasks_queue)) == 1  # the stuck QoS 1 delivery, and nothing that finished
    for c in (stuck, listener, publisher):
        c.disconnect()


async def test_packets_are_served_without_an_asyncio_wait_each(broker: EmbeddedBroker,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt ran an asyncio.wait() per packet in each client's loop and per message in its broadcast loop (a done
    callback added and removed per waiter each time); the broker's loops wake on one future instead. What they
    serve is unchanged: messages in order, SUBSCRIBE and UNSUBSCRIBE acknowledged and applied."""
    got: list[tuple[str, bytes]] = []
    listener = await connect(broker, "listener", got)
    publisher = await connect(broker, "publisher")
    waits: list[object] = []
    plain = asyncio.wait

    async def counting(fs: object, *args: object, **kwargs: object) -> object:
        waits.append(fs)
        return await plain(fs, *args, **kwargs)  # type: ignore[call-overload,arg-type]

    monkeypatch.setattr(asyncio, "wait", counting)
    async with asyncio.timeout(TIMEOUT_S):
        await listener.subscribe([("t/a", 0)])
    for i in range(20):
        publisher.publish("t/a", str(i).encode(), qos=0, retain=False)
    async with asyncio.timeout(TIMEOUT_S):
        while len(got) < 20:
            await asyncio.sleep(0.01)
    assert [p for _, p in got] == [str(i).encode() for i in range(20)]
    assert waits == []
    for c in (listener, publisher):
        c.disconnect()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_the_collector_is_tuned_while_brokers_run() -> None:
    """At CPython's thresholds the collector took 2.3 of the 7.4 CPU seconds of a 2,000-device connect burst. While
    a broker runs, the process collects at GC_THRESHOLDS with its start-up objects frozen; the last broker to stop
    gives back what it found. Garbage cycles are still collected meanwhile."""
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    a = EmbeddedBroker(EmbeddedBrokerSettings(host="127.0.0.1", port=0), acl=open_acl())
    b = EmbeddedBroker(EmbeddedBrokerSettings(host="127.0.0.1", port=0), acl=open_acl())
    await a.start()
    await b.start()
    running = [a, b]
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        cycle = _Cycle()
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
        await running.pop(0).shutdown()
        assert gc.get_threshold() == GC_THRESHOLDS  # b still runs
    finally:
        for broker in running:
            await broker.shutdown()
    assert gc.get_threshold() == before


async def failing_fanout(broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, *, failures: int) -> tuple[
        LiteClient, LiteClient, list[tuple[str, bytes]], list[str]]:
    """A subscriber of t/x and a publisher; the broker's fan-out raises for the first `failures` messages (a bug, a
    bad subscriber state). (subscriber, publisher, what it received, the topics the fan-out was asked for)."""
    received: list[tuple[str, bytes]] = []
    sub = await connect(broker, "sub", received)
    pub = await connect(broker, "pub")
    async with asyncio.timeout(TIMEOUT_S):
        await sub.subscribe([("t/x", 0)])
    plain = broker._indexed_targets
    calls: list[str] = []

    def failing(topic: str) -> object:
        calls.append(topic)
        if len(calls) <= failures:
            raise RuntimeError("a message that cannot be delivered")
        return plain(topic)

    monkeypatch.setattr(broker, "_indexed_targets", failing)
    return sub, pub, received, calls


async def test_one_message_that_fails_to_deliver_does_not_end_delivery(broker: EmbeddedBroker,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The broadcast loop runs every delivery itself (no task per message): an exception in one must be logged and
    dropped, not end delivery for every client for the rest of the broker's life (review 5, M1)."""
    sub, pub, received, calls = await failing_fanout(broker, monkeypatch, failures=1)
    pub.publish("t/x", b"1", qos=0, retain=False)
    async with asyncio.timeout(TIMEOUT_S):
        while not calls:
            await asyncio.sleep(0.01)
    pub.publish("t/x", b"2", qos=0, retain=False)
    async with asyncio.timeout(TIMEOUT_S):
        while received != [("t/x", b"2")]:
            await asyncio.sleep(0.01)
    assert broker._broadcast_task is not None and not broker._broadcast_task.done()
    sub.disconnect()
    pub.disconnect()


async def test_a_flood_of_failing_deliveries_is_logged_counted_not_echoed(
        broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Every message failing the same way (a bug, a bad subscriber state) is one log line per interval with its
    count, not one traceback per message: a flood must not fill the disk of a Pi."""
    flood = 40
    sub, pub, received, calls = await failing_fanout(broker, monkeypatch, failures=flood)
    from broker import embedded_session
    from broker.listeners import ThrottledLog
    # a fresh throttle: no interval left over from other tests
    monkeypatch.setattr(embedded_session, "delivery_failures", ThrottledLog(embedded_session.log))
    with caplog.at_level(logging.WARNING, logger="broker.embedded"):
        for i in range(flood):
            pub.publish("t/x", str(i).encode(), qos=0, retain=False)
        async with asyncio.timeout(TIMEOUT_S):
            while len(calls) < flood:
                await asyncio.sleep(0.01)
        pub.publish("t/x", b"after", qos=0, retain=False)
        async with asyncio.timeout(TIMEOUT_S):
            while ("t/x", b"after") not in received:
                await asyncio.sleep(0.01)
    lines = [r for r in caplog.records if "delivering a message failed" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    sub.disconnect()
    pub.disconnect()
