"""A minimal asyncio MQTT 3.1.1 client for fleet simulation: thousands of connections in one process.

paho (one thread and a socket loop per client) is far too heavy for 5,000 simulated devices; this client is an
`asyncio.Protocol` with no task of its own. It does what a simulated agent needs and nothing more: CONNECT with a
last will and a keep-alive, SUBSCRIBE, PUBLISH at QoS 0 and 1 (answering the broker's QoS 1 with PUBACK, counting
our own unacknowledged ones), PINGREQ when the caller's timer says so, DISCONNECT, and `abort()` — the socket closed
with no DISCONNECT, so the broker publishes the will (a crash or a power cut). No reconnect, no QoS 2, no session
state: a closed client stays closed.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
MAX_PACKET = 4 * 1024 * 1024  # a desired state of 512 replicas fits easily; anything larger is a broken stream


class ProtocolError(Exception):
    """The broker sent something this client cannot parse, or refused the connection."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class WillMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(client_id: str, keepalive_s: int, *, will: WillMessage | None = None, clean: bool = True,
                   username: str | None = None, password: str | None = None) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic) + _str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + payload
    return packet(CONNECT, 0, body)


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int = 0) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(PUBLISH, (qos << 1) | (1 if retain else 0), body)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([q]) for f, q in filters)
    return packet(SUBSCRIBE, 0x02, body)


def parse(buf: bytearray) -> tuple[int, int, bytes] | None:
    """One complete packet off the front of `buf` (removed): (type, flags, body); None: not complete yet."""
    if len(buf) < 2:
        return None
    length, mult, i = 0, 1, 1
    while True:
        if i >= len(buf):
            return None
        byte = buf[i]
        length += (byte & 0x7F) * mult
        mult *= 128
        i += 1
        if not byte & 0x80:
            break
        if i > 4:
            raise ProtocolError("remaining length longer than 4 bytes")
    if length > MAX_PACKET:
        raise ProtocolError(f"packet of {length} bytes")
    if len(buf) < i + length:
        return None
    first = buf[0]
    body = bytes(buf[i:i + length])
    del buf[:i + length]
    return first >> 4, first & 0x0F, body


OnMessage = Callable[[str, bytes], None]


class LiteClient(asyncio.Protocol):
    """One MQTT connection. Create with `loop.create_connection(lambda: LiteClient(...), host, port, ssl=ctx)`,
    then `await client.connected` (the CONNACK)."""

    def __init__(self, client_id: str, *, keepalive_s: int, will: WillMessage | None = None,
                 on_message: OnMessage | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.will = will
        self.on_message = on_message
        self.username = username
        self.password = password
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._next_id = 0
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self.unacked: set[int] = set()  # our QoS 1 publishes the broker has not acknowledged yet
        self.last_sent = time.monotonic()
        self.pings = 0
        self.received = 0
        self.close_reason = ""

    # ---- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send(connect_packet(self.client_id, self.keepalive_s, will=self.will, username=self.username,
                                  password=self.password))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            while (p := parse(self._buf)) is not None:
                self._handle(*p)
        except ProtocolError as exc:
            self.close_reason = str(exc)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.close_reason:
            self.close_reason = str(exc) if exc else "closed"
        err = ConnectionError(f"{self.client_id}: connection closed ({self.close_reason})")
        if not self.connected.done():
            self.connected.set_exception(err)
            self.connected.exception()  # retrieved: nobody may be waiting any more
        for fut in self._subacks.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- packets in ----------------------------------------------------------------------------------------

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            self.received += 1
            (tlen,) = struct.unpack_from("!H", body, 0)
            topic = body[2:2 + tlen].decode()
            pos = 2 + tlen
            qos = (flags >> 1) & 0x03
            if qos:
                (pid,) = struct.unpack_from("!H", body, pos)
                pos += 2
                self._send(packet(PUBACK, 0, struct.pack("!H", pid)))
            if self.on_message is not None:
                self.on_message(topic, body[pos:])
        elif kind == PUBACK:
            self.unacked.discard(struct.unpack_from("!H", body, 0)[0])
        elif kind == CONNACK:
            rc = body[1] if len(body) >= 2 else 255
            if rc != 0:
                self.close_reason = f"CONNACK refused with code {rc}"
                self.abort()
            elif not self.connected.done():
                self.connected.set_result(None)
        elif kind == SUBACK:
            (pid,) = struct.unpack_from("!H", body, 0)
            fut = self._subacks.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(body[2:])
        # PINGRESP and anything else: nothing to do

    # ---- packets out ---------------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"{self.client_id}: not connected")
        self.transport.write(data)
        self.last_sent = time.monotonic()

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def subscribe(self, filters: list[tuple[str, int]]) -> bytes:
        """Subscribe and wait for the SUBACK; returns its return codes (0x80: refused)."""
        pid = self._packet_id()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut
        self._send(subscribe_packet(pid, filters))
        return await fut

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        pid = self._packet_id() if qos else 0
        if qos:
            self.unacked.add(pid)
        self._send(publish_packet(topic, payload, qos, retain, pid))

    def ping_if_due(self, now: float) -> bool:
        """PINGREQ when nothing was sent for a keep-alive period (the caller's timer calls this)."""
        if self.keepalive_s and self.transport is not None and now - self.last_sent >= self.keepalive_s:
            self._send(packet(PINGREQ, 0, b""))
            self.pings += 1
            return True
        return False

    def disconnect(self) -> None:
        """A clean goodbye: DISCONNECT, then close (the broker discards the will)."""
        if self.transport is not None:
            self._send(packet(DISCONNECT, 0, b""))
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the will."""
        if self.transport is not None:
            self.transport.abort()
