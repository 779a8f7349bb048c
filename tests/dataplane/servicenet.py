"""Two nodes with real overlays and a relay on loopback (tests/dataplane/test_overlay_facade.py's setup), a
ServiceProxy on each, real TCP/UDP servers as service replicas, and a binder that binds on the host's loopback the
way the agent's binds inside a workload's namespace (every port remapped to an ephemeral one, so concurrent runs
never collide: `Binds.addr` says where a requested (ip, port) ended up)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from broker.wire import (
    IngressPort,
    Protocol,
    ServiceEndpoint,
    ServicePort,
    ServiceRecord,
    ServiceTable,
)
from dataplane.services import BindRequest, ServiceProxy
from tests.dataplane.test_overlay_facade import Net, make_net, until

__all__ = ["Binds", "Node", "Replicas", "cluster", "fetch", "table", "until", "web"]


@dataclass
class Binds:
    """A binder on the host's loopback; `fail` names (ip, port) pairs it refuses, as a namespace might."""

    addr: dict[tuple[str, int, Protocol], tuple[str, int]] = field(default_factory=dict)
    fail: set[tuple[str, int]] = field(default_factory=set)
    calls: int = 0

    async def __call__(self, requests: list[BindRequest]) -> list[socket.socket | str]:
        self.calls += 1
        results: list[socket.socket | str] = []
        for ip, port, protocol in requests:
            if (ip, port) in self.fail:
                results.append(f"bind {ip}:{port}: Address not available (test)")
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if protocol is Protocol.UDP
                                 else socket.SOCK_STREAM)
            sock.bind((ip, 0))
            if protocol is Protocol.TCP:
                sock.listen(64)
            self.addr[(ip, port, protocol)] = sock.getsockname()
            results.append(sock)
        return results

    def tcp(self, ip: str, port: int) -> tuple[str, int]:
        return self.addr[(ip, port, Protocol.TCP)]


@dataclass
class Replicas:
    """Real servers standing in for replicas: replica id -> (host, port), per node."""

    addrs: dict[str, tuple[str, int]] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)
    udp: list[asyncio.DatagramTransport] = field(default_factory=list)

    def lookup(self, replica: str, _target_port: int, _protocol: Protocol) -> tuple[str, int] | None:
        return self.addrs.get(replica)

    async def who(self, replica: str) -> None:
        """Reads to EOF, answers `<replica>:<what it read>` and closes."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()
            writer.write(replica.encode() + b":" + data)
            await writer.drain()
            writer.close()
        await self._serve(replica, handle)

    async def echo(self, replica: str) -> None:
        """Echoes each chunk as `<replica>:<chunk>` until the client closes (a long-lived connection)."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(65536):
                writer.write(replica.encode() + b":" + chunk)
                await writer.drain()
            writer.close()
        await self._serve(replica, handle)

    async def _serve(self, replica: str, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                          object]) -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)  # type: ignore[arg-type]
        self.servers.append(server)
        self.addrs[replica] = server.sockets[0].getsockname()

    async def udp_echo(self, replica: str) -> None:
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(replica.encode() + b":" + data, addr)  # type: ignore[attr-defined]

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        self.udp.append(transport)
        self.addrs[replica] = transport.get_extra_info("sockname")

    def dead(self, replica: str) -> None:
        """An address nothing listens on (connect refused)."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.addrs[replica] = sock.getsockname()
        sock.close()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for transport in self.udp:
            transport.close()


@dataclass
class Node:
    name: str
    proxy: ServiceProxy
    replicas: Replicas


def web(*endpoints: ServiceEndpoint, vip: str = "127.77.0.10", ingress: tuple[IngressPort, ...] = (),
        name: str = "web", namespace: str = "default") -> ServiceRecord:
    return ServiceRecord(name=name, namespace=namespace, vip=vip,
                         ports=(ServicePort(port=80, target_port=8080, name="http"),
                                ServicePort(port=53, target_port=5353, name="dns", protocol=Protocol.UDP)),
                         endpoints=endpoints, ingress=ingress)


def table(node: str, *services: ServiceRecord, zone: str = "home", generation: int = 1) -> ServiceTable:
    return ServiceTable(node_id=node, generation=generation, epoch=1, ts=time.time(), zone=zone, services=services)


async def fetch(addr: tuple[str, int], data: bytes = b"hello") -> bytes:
    """Connect, send `data`, half-close, read the whole answer."""
    async with asyncio.timeout(15):
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(data)
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer


@asynccontextmanager
async def cluster() -> AsyncIterator[tuple[Net, Node, Node]]:
    net = await make_net(direct=False)
    nodes = []
    for overlay in (net.pi, net.laptop):
        replicas = Replicas()
        proxy = ServiceProxy(overlay, node_id=overlay.identity, local_endpoint=replicas.lookup, upstream_dns=[],
                             rng=random.Random(5), clock=time.monotonic, ingress_host="127.0.0.1",
                             connect_timeout_s=5.0, udp_idle_s=2.0)
        await proxy.start()
        nodes.append(Node(overlay.identity, proxy, replicas))
    net.connect()
    await until(lambda: net.pi._connected("laptop") is not None and "pi" in net.laptop.endpoint.peers,  # type: ignore[union-attr]
                "pi connected to laptop through the relay")
    try:
        yield net, nodes[0], nodes[1]
    finally:
        for node in nodes:
            await node.proxy.stop()
            node.replicas.close()
        await net.pi.stop()
        await net.laptop.stop()
        net.relay.close()
