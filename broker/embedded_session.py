"""The embedded broker's per-connection parts (broker/embedded.py composes them): amqtt 0.12.1's session and protocol
handler with the defects that module's docstring lists mended (fixes 2, 3, 4, 8 and 10), and the delivery bookkeeping.

- `SizeCappedReader` refuses a packet over MAX_PACKET_BYTES before its body is read (fix 8).
- `SessionState`, `CloudlessSession`: a session's state without a `transitions.Machine` each (fix 10).
- `trim_tls_read_buffer`, `GcTuning`: a small read buffer per TLS connection; the cyclic collector tuned while brokers
  run (fix 10).
- `DeliveryTasks`: delivery tasks that reap themselves, failures logged throttled.
- `CloudlessProtocolHandler`: keep-alive enforcement (fix 2), durable QoS 1/2 in flight and redelivery (fix 3).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from typing import Any

from amqtt.adapters import ReaderAdapter
from amqtt.errors import BrokerError
from amqtt.mqtt.protocol import broker_handler as _broker_handler_module
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import (
    INCOMING,
    IncomingApplicationMessage,
    OutgoingApplicationMessage,
    Session,
)
from transitions.core import MachineError

from broker.listeners import ThrottledLog
from broker.wire import MAX_PAYLOAD_BYTES

log = logging.getLogger("broker.embedded")  # one logger for the broker: operators filter on it

# The largest MQTT packet either broker accepts: the wire contract's payload cap plus room for the topic and headers
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024
KEEPALIVE_GRACE = 1.5  # MQTT 3.1.1 §3.1.2.10: disconnect after one and a half keep-alive periods of silence
TLS_READ_BUFFER_BYTES = 16 * 1024  # about one full TLS record; a larger message arrives in more reads


class PacketTooLarge(BrokerError):  # type: ignore[misc]  # amqtt ships no type information
    """A client sent a packet over MAX_PACKET_BYTES: refused before its body is read; the client is disconnected."""


class SizeCappedReader(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt reads a packet's body with one read(remaining length): refuse that read when it is over the cap, so the
    bytes are never buffered (amqtt's reader loop then ends the connection)."""

    def __init__(self, inner: ReaderAdapter, limit: int, who: str) -> None:
        self.inner = inner
        self.limit = limit
        self.who = who

    async def read(self, n: int = -1) -> bytes:
        if n > self.limit:
            log.warning("refused a %d-byte packet from %s (the limit is %d): disconnecting it", n, self.who,
                        self.limit)
            raise PacketTooLarge(f"a packet of {n} bytes (at most {self.limit})")
        data: bytes = await self.inner.read(n)
        return data

    def feed_eof(self) -> None:
        self.inner.feed_eof()


class SessionState:
    """A session's state without a `transitions.Machine` per connection: amqtt built one for every Session (about
    0.3 ms and 23 KiB each, a tenth of the broker's CPU in a 2,000-device connect burst, issue 17). Same states
    (new, connected, disconnected), triggers, queries and enter hooks: `connect` from new or disconnected (from
    connected it raises MachineError, which amqtt's take-over path catches), `disconnect` from any state."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def connect(self) -> bool:
        if self.state == "connected":
            raise MachineError("Can't trigger event connect from state connected!")
        self.state = "connected"
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        self.state = "disconnected"
        self._session._on_enter_disconnected()
        return True

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


class CloudlessSession(Session):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's Session with `SessionState` for its state machine."""

    def _init_states(self) -> None:
        self.transitions = SessionState(self)  # type: ignore[assignment]


# amqtt's CONNECT handling makes its Session by this module-level name (amqtt is pinned exactly, see pyproject.toml)
_broker_handler_module.Session = CloudlessSession  # type: ignore[misc]


def trim_tls_read_buffer(transport: asyncio.BaseTransport | None, size: int = TLS_READ_BUFFER_BYTES) -> None:
    """Give a TLS connection's ciphertext read buffer `size` bytes instead of asyncio's 256 KiB (sslproto
    SSLProtocol.max_size, zero-filled per connection: 500 of the broker's 736 MiB at 2,000 devices, issue 17). A
    socket read larger than one TLS record buys a broker of small packets nothing; at 32 KiB the buffer was still
    the largest Python object per connection (half of ~80 KiB). asyncio keeps no public handle
    on the buffer: a transport without one (plain TCP, another event loop) is left as it is."""
    proto = getattr(transport, "_ssl_protocol", None)
    if proto is None or not isinstance(getattr(proto, "_ssl_buffer", None), bytearray) or proto.max_size <= size:
        return
    proto.max_size = size  # get_buffer() grows the buffer back to max_size
    proto._ssl_buffer = bytearray(size)
    proto._ssl_buffer_view = memoryview(proto._ssl_buffer)


# Generation-0 threshold and the two multipliers while a broker runs (CPython's defaults: 700, 10, 10)
GC_THRESHOLDS = (10_000, 20, 20)


class GcTuning:
    """The cyclic collector set for a process holding thousands of connections, while a broker runs in it.

    Each connection is hundreds of tracked objects (session, handler, queues, tasks, futures), and amqtt allocates
    several per packet: at CPython's thresholds a 2,000-device connect burst ran 721 collections, 6 of them full,
    2.3 of its 7.4 CPU seconds (issue 17). With GC_THRESHOLDS it runs 48 and none full (0.3 s), and what the
    process held at start is frozen (gc.freeze: no collection walks it). Garbage cycles still go, some thousands
    of allocations later; reference counting frees everything else at once. Process-wide, so counted: the last
    broker to stop gives back the thresholds it found and thaws the frozen objects."""

    def __init__(self) -> None:
        self.installs = 0
        self.saved: tuple[int, int, int] | None = None

    def install(self) -> None:
        self.installs += 1
        if self.installs > 1:
            return
        self.saved = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        gc.freeze()

    def uninstall(self) -> None:
        if self.installs == 0:
            return
        self.installs -= 1
        if self.installs or self.saved is None:
            return
        gc.set_threshold(*self.saved)
        self.saved = None
        gc.unfreeze()


gc_tuning = GcTuning()
delivery_failures = ThrottledLog(log)  # delivery failures: a flood of one kind is one line per interval with its count


class DeliveryTasks:
    """The broker's delivery tasks in flight, each dropped the moment it ends (its failure logged). amqtt kept them in
    a deque reaped only from the front, so one delivery waiting for a PUBACK that never came held every later
    finished delivery, message data included, in memory for as long as it waited."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def append(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            delivery_failures.log(logging.WARNING, f"delivery:{type(exc).__name__}", "a delivery failed: %r", exc)

    def __iter__(self) -> Iterator[asyncio.Future[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)


class CloudlessProtocolHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker-side protocol handler with keep-alive enforcement and durable QoS 1/QoS 2 in-flight state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retries: set[asyncio.Task[None]] = set()  # redeliveries in flight (kept referenced until done)

    def handle_read_timeout(self) -> None:
        # Called from inside the reader task when no packet arrived for 1.5x keep-alive: end the reader loop,
        # whose exit path reports an abnormal disconnect (so the broker publishes the will).
        client_id = self.session.client_id if self.session else "?"
        log.info("client %s silent past 1.5x keep-alive: disconnecting", client_id)
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        if app_message.direction == INCOMING:
            await super()._handle_qos1_message_flow(app_message)
            return
        assert self.session is not None and app_message.packet_id is not None
        if app_message.puback_packet:
            return  # already acknowledged before a reconnect
        self.session.inflight_out[app_message.packet_id] = app_message  # type: ignore[assignment]
        dup = app_message.publish_packet is not None  # a resend after reconnect (§4.4)
        packet = app_message.build_publish_packet(dup=dup)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[app_message.packet_id] = waiter
        try:
            await self._send_packet(packet)
            app_message.publish_packet = packet
            app_message.puback_packet = await waiter
        finally:
            self._puback_waiters.pop(app_message.packet_id, None)
        # Only an acknowledged message leaves the session; a disconnect (which cancels the waiter) keeps it in
        # inflight_out, and the next connection's start() resends it.
        self.session.inflight_out.pop(app_message.packet_id, None)

    async def _handle_qos2_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        """amqtt's outgoing QoS 2 flow forgot the message when the subscriber left (or after 5 s) before PUBCOMP.
        Here it stays in the session until PUBCOMP; on reconnect it is resent as PUBLISH with DUP=1 if no PUBREC
        came, as PUBREL if PUBREC came (MQTT 3.1.1 §4.3.3, §4.4)."""
        if app_message.direction == INCOMING:
            await super()._handle_qos2_message_flow(app_message)
            return
        assert self.session is not None and app_message.packet_id is not None
        if app_message.pubcomp_packet:
            return  # completed before a reconnect
        pid = app_message.packet_id
        self.session.inflight_out[pid] = app_message  # type: ignore[assignment]
        if app_message.pubrec_packet is None:
            packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
            app_message.publish_packet = packet  # sent once: any resend carries DUP=1
            app_message.pubrec_packet = await self._send_and_wait(packet, self._pubrec_waiters, pid)
        # PUBREC came: from here on only PUBREL is (re)sent, never the PUBLISH (§4.3.3)
        app_message.pubrel_packet = PubrelPacket.build(pid)
        app_message.pubcomp_packet = await self._send_and_wait(app_message.pubrel_packet, self._pubcomp_waiters, pid)
        self.session.inflight_out.pop(pid, None)

    async def _send_and_wait(self, packet: Any, waiters: dict[int, asyncio.Future[Any]], pid: int) -> Any:
        """Send `packet` and wait for its acknowledgement, however long the connection lasts: a disconnect cancels
        the waiter (and so this coroutine), leaving the message in the session for the next connection."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiters[pid] = waiter
        try:
            await self._send_packet(packet)
            return await waiter
        finally:
            waiters.pop(pid, None)

    async def _retry_deliveries(self) -> None:
        """Resend what the session holds unacknowledged (§4.4) without waiting for the acknowledgements: amqtt
        awaited them for up to 10 s before the client's own SUBSCRIBEs and PUBLISHes were served at all. The
        flows end with their acknowledgement or with this connection (stop() cancels their waiters)."""
        assert self.session is not None
        for message in [*self.session.inflight_in.values(), *self.session.inflight_out.values()]:
            task = asyncio.ensure_future(self._handle_message_flow(message))  # type: ignore[arg-type]
            self._retries.add(task)
            task.add_done_callback(self._retry_done)

    def _retry_done(self, task: asyncio.Task[None]) -> None:
        self._retries.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            delivery_failures.log(logging.WARNING, f"redelivery:{type(exc).__name__}", "redelivery to %s failed: %r",
                          self.session.client_id if self.session else "?", exc)
