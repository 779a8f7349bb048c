"""The resolver a workload asks (adapter over dataplane.dns): UDP and TCP (RFC 1035 §4.2) on sockets the agent bound
inside the workload's network namespace; names of services it may see are answered here, everything else is relayed
to the node's upstream resolvers (in order, each within `timeout_s`) and their answer relayed back; no answer from
any: SERVFAIL. At most `MAX_FORWARDS` relayed queries are in flight per server; past that a query gets SERVFAIL at
once rather than growing a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Sequence

from broker.wire import ServiceRecord
from dataplane.dns import MAX_PACKET, Forward, Malformed, Query, parse_query, resolve, servfail

log = logging.getLogger(__name__)

MAX_FORWARDS = 64
TCP_IDLE_S = 10.0  # a TCP client that sends nothing this long is closed (RFC 7766 §6.2.3 suggests seconds)
Services = Callable[[], Sequence[ServiceRecord]]  # what the workload may see, read per query (updates apply at once)


class Resolver:
    """One workload's resolver: `namespace` for short names, `services()` for what it may see."""

    def __init__(self, namespace: str, services: Services, upstream: Sequence[tuple[str, int]], *,
                 timeout_s: float = 2.0) -> None:
        self.namespace = namespace
        self.services = services
        self.upstream = list(upstream)
        self.timeout_s = timeout_s
        self.answered = 0
        self.forwarded = 0
        self.failed = 0  # malformed queries and forwards nobody answered
        self._in_flight = 0

    async def answer(self, packet: bytes, *, tcp: bool) -> bytes | None:
        """The reply to `packet` (None: send nothing)."""
        query = parse_query(packet)
        if isinstance(query, Malformed):
            self.failed += 1
            log.debug("dns: malformed query: %s", query.reason)
            return query.reply
        result = resolve(query, services=self.services(), namespace=self.namespace,
                         max_size=65535 if tcp else None)
        if not isinstance(result, Forward):
            self.answered += 1
            return result.packet
        return await self._forward(query, packet, tcp=tcp)

    async def _forward(self, query: Query, packet: bytes, *, tcp: bool) -> bytes:
        if self._in_flight >= MAX_FORWARDS or not self.upstream:
            self.failed += 1
            return servfail(query)
        self._in_flight += 1
        try:
            for server in self.upstream:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        reply = await (_ask_tcp(server, packet) if tcp else _ask_udp(server, packet, query.id))
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    log.debug("dns: upstream %s:%d did not answer %s: %s", *server, query.name, exc)
                    continue
                self.forwarded += 1
                return reply
        finally:
            self._in_flight -= 1
        self.failed += 1
        return servfail(query)


async def _ask_udp(server: tuple[str, int], packet: bytes, ident: int) -> bytes:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class _Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
            # only a response to this query (same ID, QR set) counts: anything else on the port is ignored
            if len(data) >= 12 and struct.unpack_from("!H", data)[0] == ident and data[2] & 0x80 \
                    and not answer.done():
                answer.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not answer.done():
                answer.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(_Client, remote_addr=server)
    try:
        transport.sendto(packet)
        return await answer
    finally:
        transport.close()


async def _ask_tcp(server: tuple[str, int], packet: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        length = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(length)
    finally:
        writer.close()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = await self.resolver.answer(data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class DnsServer:
    """The resolver served on a UDP socket and (optionally) a listening TCP socket; `close()` ends both."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._udp: tuple[asyncio.DatagramTransport, _UdpServer] | None = None
        self._tcp: asyncio.Server | None = None

    async def serve_udp(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        transport, protocol = await loop.create_datagram_endpoint(lambda: _UdpServer(self.resolver), sock=sock)
        self._udp = (transport, protocol)

    async def serve_tcp(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._tcp = await asyncio.start_server(self._tcp_client, sock=sock)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S):
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                    if length > MAX_PACKET:
                        return
                    packet = await reader.readexactly(length)
                reply = await self.resolver.answer(packet, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def close(self) -> None:
        if self._udp is not None:
            transport, protocol = self._udp
            transport.close()
            for task in list(protocol.tasks):
                task.cancel()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
