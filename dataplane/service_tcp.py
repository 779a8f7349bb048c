"""TCP services (adapter): a client's connection balanced to a ready endpoint (dataplane.balance) and spliced to it
(dataplane.splice) — on this node over TCP, on another node through an overlay stream to `svc` that opens with the
header of dataplane.service_plan — and the serving end of those streams, which admits only replicas its own table
lists here. An endpoint that refuses or cannot be reached is excluded and the next one tried (nearest first), up to
`max_attempts`; then the client is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

from broker.wire import Protocol, ServiceRecord
from dataplane.balance import Choice, NoEndpoint, choose
from dataplane.errors import DataPlaneError
from dataplane.service_plan import (
    OK,
    REFUSED,
    STREAM_SERVICE,
    VERSION,
    Counters,
    ServiceKey,
    Target,
    admit,
    decode_target,
    refusal,
    stream_header,
)
from dataplane.service_udp import Host
from dataplane.splice import splice

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY on a client's connection. asyncio sets it only on sockets made with proto IPPROTO_TCP, and the
    listeners here are made with proto 0 (the binder's, ours): accepted connections inherit that, so Nagle's
    algorithm held back the second write of a response until the client's delayed ACK (~40 ms per request/response
    turn: a 4 KiB GET through a service took 44 ms instead of about 1)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpPath:
    def __init__(self, host: Host, *, connect_timeout_s: float, max_attempts: int) -> None:
        self.host = host
        self.connect_timeout_s = connect_timeout_s
        self.max_attempts = max_attempts
        self.connections: set[asyncio.Task[object]] = set()  # open ones, ended by the proxy's stop()

    # ---- a client's connection -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """The running connection task is ended by stop() (an open connection otherwise outlives its listener)."""
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            yield
        finally:
            if task is not None:
                self.connections.discard(task)

    async def client(self, route: tuple[ServiceKey, int], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        no_delay(writer)
        with self._tracked():
            await self._client_connection(route, reader, writer)

    async def _client_connection(self, route: tuple[ServiceKey, int], reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        service, port = route
        record = self.host.view.services.get(service)
        spec = next((p for p in record.ports if p.port == port and p.protocol == Protocol.TCP), None) \
            if record is not None else None
        counters = self.host.counters(service)
        if record is None or spec is None:
            counters.no_endpoint += 1
            writer.close()
            return
        upstream = await self._connect_any(record, spec.target_port, counters)
        if upstream is None:
            writer.close()
            return
        counters.active += 1
        try:
            await splice((reader, writer), upstream, a_to_b=counters.out, b_to_a=counters.into)
        finally:
            counters.active -= 1

    async def _connect_any(self, record: ServiceRecord, target_port: int, counters: Counters) -> Stream | None:
        """A connection to one endpoint, trying others (nearest first) when one fails, up to `max_attempts`."""
        exclude: set[tuple[str, str]] = set()
        for _ in range(self.max_attempts):
            choice = choose(record.endpoints, node=self.host.node_id, zone=self.host.view.zone, rng=self.host.rng,
                            exclude=exclude)
            if isinstance(choice, NoEndpoint):
                counters.no_endpoint += 1
                log.info("services: %s/%s: %s", record.namespace, record.name, choice.reason)
                return None
            target = Target(record.namespace, record.name, choice.endpoint.replica, target_port)
            result = await self._connect(choice, target)
            if not isinstance(result, str):
                counters.connections[choice.tier.value] += 1
                return result
            counters.connect_failures += 1
            exclude.add(choice.key)
            log.info("services: %s/%s -> %s on %s failed: %s", record.namespace, record.name,
                     choice.endpoint.replica, choice.endpoint.node, result)
        counters.no_endpoint += 1
        return None

    async def _connect(self, choice: Choice, target: Target) -> Stream | str:
        """A stream to `target` on `choice`'s node, or why not."""
        if choice.endpoint.node == self.host.node_id:
            return await self._connect_local(target)
        if self.host.overlay is None:
            return "no overlay on this node to reach another node"
        stream: Stream | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                # the target rides behind the overlay's service name: one round trip for both answers
                stream = await self.host.overlay.open_stream(choice.endpoint.node, STREAM_SERVICE,
                                                             timeout_s=self.connect_timeout_s,
                                                             early=stream_header(target))
                reader, _writer = stream
                status = (await reader.readexactly(1))[0]
                if status == OK:
                    return stream
                reason = await reader.readexactly((await reader.readexactly(1))[0]) if status == REFUSED else b""
                problem = f"refused: {reason.decode(errors='replace') or f'status {status}'}"
        except TimeoutError:
            problem = f"no answer within {self.connect_timeout_s:g}s"
        except (DataPlaneError, OSError, asyncio.IncompleteReadError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if stream is not None:
            with contextlib.suppress(DataPlaneError, OSError):
                stream[1].close()
        return problem

    async def _connect_local(self, target: Target) -> Stream | str:
        address = self.host.local_endpoint(target.replica, target.target_port, Protocol.TCP)
        if address is None:
            return f"{target.replica} has no address for port {target.target_port} on {self.host.node_id}"
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                return await asyncio.open_connection(*address)
        except TimeoutError:
            return f"connect to {address[0]}:{address[1]}: no answer within {self.connect_timeout_s:g}s"
        except OSError as exc:
            return f"connect to {address[0]}:{address[1]}: {exc.strerror or exc}"

    # ---- the serving side (streams from other nodes) -------------------------------------------------------

    async def serve(self, node_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._tracked():
            await self._serve_stream(node_id, reader, writer)

    async def _serve_stream(self, node_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEADER_TIMEOUT_S):
                version, length = await reader.readexactly(2)
                body = await reader.readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError):
            return
        target = decode_target(body) if version == VERSION else f"header version {version} (this node speaks 1)"
        if isinstance(target, str):
            return await self._refuse(node_id, writer, target)
        problem = admit(self.host.view, target, self.host.node_id, Protocol.TCP)
        if problem is not None:
            return await self._refuse(node_id, writer, problem)
        local = await self._connect_local(target)
        if isinstance(local, str):
            return await self._refuse(node_id, writer, local)
        counters = self.host.counters((target.namespace, target.service))
        counters.served += 1
        writer.write(bytes([OK]))
        await splice((reader, writer), local, a_to_b=lambda _: None, b_to_a=lambda _: None)

    async def _refuse(self, node_id: str, writer: asyncio.StreamWriter, reason: str) -> None:
        log.info("services: refused a connection from %s: %s", node_id, reason)
        writer.write(refusal(reason))
        with contextlib.suppress(DataPlaneError, OSError):
            await writer.drain()
