"""The resolver a workload gets (real UDP and TCP sockets from the binder: A, SRV, NXDOMAIN, forwarding to real
upstream servers, SERVFAIL when none answers) and UDP services (same node, and across the overlay's datagrams, with
flows that stick to one endpoint and expire when idle, bounded per source and in total)."""

from __future__ import annotations

import asyncio
import random
import struct
import time

from broker.wire import Protocol, ServiceEndpoint
from dataplane.service_plan import Target, udp_request
from dataplane.services import ServiceProxy, ServiceStats
from tests.dataplane import dnspackets as dp
from tests.dataplane.servicenet import Binds, Replicas, cluster, table, until, web

VIP = "127.77.0.10"
ON_PI = ServiceEndpoint(node="pi", replica="web-0", zone="home")
ON_LAPTOP = ServiceEndpoint(node="laptop", replica="web-1", zone="home")
UPSTREAM_ANSWER = "192.0.2.1"


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def udp_exchange(addr: tuple[str, int], *packets: bytes) -> list[bytes]:
    """Send `packets` from one client socket (one flow) and collect one answer per packet."""
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(_Client, remote_addr=addr)
    try:
        answers = []
        async with asyncio.timeout(15):
            for packet in packets:
                transport.sendto(packet)
                answers.append(await client.got.get())
        return answers
    finally:
        transport.close()


async def tcp_dns(addr: tuple[str, int], packet: bytes) -> bytes:
    async with asyncio.timeout(15):
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(struct.pack("!H", len(packet)) + packet)
        length = struct.unpack("!H", await reader.readexactly(2))[0]
        answer = await reader.readexactly(length)
        writer.close()
        return answer


def _upstream_reply(query: bytes) -> bytes:
    """What a real recursive resolver would say: the question and one A record."""
    question = query[12:]
    return (query[:2] + b"\x81\x80" + struct.pack("!4H", 1, 1, 0, 0) + question
            + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(map(int, UPSTREAM_ANSWER.split("."))))


class _Upstream(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(_upstream_reply(data), addr)  # type: ignore[attr-defined]


async def test_the_resolver_answers_service_names_and_forwards_the_rest() -> None:
    async with cluster() as (_net, pi, laptop):
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_datagram_endpoint(_Upstream, local_addr=("127.0.0.1", 0))
        silent, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))

        async def tcp_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = _upstream_reply(await reader.readexactly(length))
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
            writer.close()

        tcp_server = await asyncio.start_server(tcp_upstream, "127.0.0.1", upstream.get_extra_info("sockname")[1])
        try:
            # the first upstream never answers: the second one does (in order, each within the timeout)
            pi.proxy.upstream_dns = [silent.get_extra_info("sockname"), upstream.get_extra_info("sockname")]
            pi.proxy.dns_timeout_s = 0.5
            await pi.proxy.update(table("pi", web(ON_LAPTOP), web(name="cache", namespace="shop",
                                                                   vip="127.77.0.20")))
            binds = Binds()
            await pi.proxy.attach("client", "default", binds)
            resolver = binds.addr[("127.0.0.1", 53, Protocol.UDP)]
            a, srv, missing, other_ns, outside = map(dp.read, await udp_exchange(
                resolver, dp.query("web.default.svc.cloudless", 1, ident=1),
                dp.query("_http._tcp.web", 33, ident=2), dp.query("nope.default.svc.cloudless", 1, ident=3),
                dp.query("cache.shop.svc.cloudless", 1, ident=4), dp.query("example.org", 1, ident=5)))
            assert [r.data for r in a.answers] == [VIP] and a.rcode == 0
            assert [r.data for r in srv.answers] == [(0, 100, 80, "web.default.svc.cloudless")]
            assert missing.rcode == 3
            assert other_ns.rcode == 3  # another namespace's service is not this workload's to see
            assert (outside.ident, [r.data for r in outside.answers]) == (5, [UPSTREAM_ANSWER])
            tcp = binds.addr[("127.0.0.1", 53, Protocol.TCP)]
            assert [r.data for r in dp.read(await tcp_dns(tcp, dp.query("WEB.default", 1))).answers] == [VIP]
            forwarded = dp.read(await tcp_dns(tcp, dp.query("example.org", 1)))
            assert [r.data for r in forwarded.answers] == [UPSTREAM_ANSWER]
            # a table update is seen by the next query: the service is gone
            await pi.proxy.update(table("pi", generation=2))
            (gone,) = map(dp.read, await udp_exchange(resolver, dp.query("web.default.svc.cloudless", 1)))
            assert gone.rcode == 3
            # no upstream answers: SERVFAIL, not silence
            pi.proxy.upstream_dns = []
            await pi.proxy.attach("client2", "default", binds2 := Binds())
            (failed,) = map(dp.read, await udp_exchange(binds2.addr[("127.0.0.1", 53, Protocol.UDP)],
                                                        dp.query("example.org", 1, ident=9)))
            assert (failed.ident, failed.rcode) == (9, 2)
            # a malformed query gets FORMERR, and the resolver keeps answering
            (formerr,) = await udp_exchange(resolver, dp.query("web")[:-3])
            assert dp.read(formerr).rcode == 1
            # the resolvers' counts, a detached one's kept: 6 answered here, 2 forwarded, SERVFAIL and FORMERR
            await pi.proxy.detach("client2")
            node = pi.proxy.proxy_stats()
            assert (node.dns_answered, node.dns_forwarded, node.dns_failed, node.dns_bind_failures) == (6, 2, 2, 0)
        finally:
            upstream.close()
            silent.close()
            tcp_server.close()
        del laptop


async def test_udp_reaches_a_replica_across_the_overlay_and_the_flow_sticks_then_expires() -> None:
    async with cluster() as (_net, pi, laptop):
        await laptop.replicas.udp_echo("web-1")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP)))
        await pi.proxy.update(table("pi", web(ON_LAPTOP)))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        answers = await udp_exchange(binds.addr[(VIP, 53, Protocol.UDP)], b"one", b"two")
        assert answers == [b"web-1:one", b"web-1:two"]
        stats = pi.proxy.stats()["default/web"]
        assert (stats.udp_flows, stats.connections["zone"], stats.bytes_out, stats.bytes_in) == (1, 1, 6, 18)
        assert laptop.proxy.stats()["default/web"].served == 1
        await until(lambda: pi.proxy.udp.active() == 0 and laptop.proxy.udp.active() == 0,
                    "idle flows forgotten on both sides", timeout=15)


async def test_udp_prefers_a_replica_on_the_same_node() -> None:
    async with cluster() as (_net, pi, laptop):
        await pi.replicas.udp_echo("web-0")
        await laptop.replicas.udp_echo("web-1")
        service = web(ON_LAPTOP, ON_PI)
        await laptop.proxy.update(table("laptop", service))
        await pi.proxy.update(table("pi", service))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        for _ in range(5):
            assert await udp_exchange(binds.addr[(VIP, 53, Protocol.UDP)], b"q") == [b"web-0:q"]
        assert pi.proxy.stats()["default/web"].connections["node"] == 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_udp_flows_are_bounded_per_listener_and_in_total_and_idle_ones_make_room() -> None:
    replicas, clock = Replicas(), FakeClock()
    await replicas.udp_echo("web-0")
    proxy = ServiceProxy(None, node_id="pi", local_endpoint=replicas.lookup, upstream_dns=[], rng=random.Random(1),
                         clock=clock, udp_idle_s=0.2, udp_max_flows=3, udp_max_flows_per_source=2)
    await proxy.start()
    try:
        await proxy.update(table("pi", web(ON_PI)))
        one, two = Binds(), Binds()
        await proxy.attach("one", "default", one)
        await proxy.attach("two", "default", two)
        a, b = one.addr[(VIP, 53, Protocol.UDP)], two.addr[(VIP, 53, Protocol.UDP)]

        def stats() -> ServiceStats:
            return proxy.stats()["default/web"]

        # a workload spraying source ports: its listener holds 2 flows, the 3rd source is dropped
        for _ in range(2):
            assert await udp_exchange(a, b"q") == [b"web-0:q"]
        refused = await send_only(a, b"q")
        await until(lambda: stats().udp_refused == 1, "the third flow of one listener refused")
        # another listener gets one more (3 in all), then the node's limit holds
        assert await udp_exchange(b, b"q") == [b"web-0:q"]
        beyond = await send_only(b, b"q")
        await until(lambda: stats().udp_refused == 2, "a flow beyond the node's limit refused")
        assert (proxy.udp.active(), stats().udp_flows, stats().udp_dropped) == (3, 3, 2)
        refused.close()
        beyond.close()
        # flows idle for udp_idle_s are forgotten: room again
        clock.now += 1
        await until(lambda: proxy.udp.active() == 0, "idle flows forgotten")
        assert await udp_exchange(a, b"q") == [b"web-0:q"]
    finally:
        await proxy.stop()
        replicas.close()


async def test_udp_flows_served_for_other_nodes_are_bounded_per_peer_and_in_total() -> None:
    replicas = Replicas()
    await replicas.udp_echo("web-0")
    proxy = ServiceProxy(None, node_id="pi", local_endpoint=replicas.lookup, upstream_dns=[], rng=random.Random(1),
                         clock=time.monotonic, udp_max_flows=3, udp_max_flows_per_source=2)
    await proxy.start()
    try:
        await proxy.update(table("pi", web(ON_PI)))
        target = Target("default", "web", "web-0", 5353)
        for flow_id in range(1, 6):  # a peer spraying flow ids: 2 served, 3 refused
            proxy.udp.on_datagram("laptop", udp_request(flow_id, target, b"x"))
        assert (proxy.udp.active(), proxy.stats()["default/web"].udp_refused) == (2, 3)
        proxy.udp.on_datagram("tv", udp_request(1, target, b"x"))  # another peer: the third flow on the node
        proxy.udp.on_datagram("tv", udp_request(2, target, b"x"))  # beyond the node's limit
        proxy.udp.on_datagram("laptop", udp_request(1, target, b"y"))  # a flow it has: carried on
        stats = proxy.stats()["default/web"]
        assert (proxy.udp.active(), stats.served, stats.udp_refused, stats.bytes_out) == (3, 3, 4, 4)
    finally:
        await proxy.stop()
        replicas.close()


async def send_only(addr: tuple[str, int], packet: bytes) -> asyncio.DatagramTransport:
    """One datagram from a new client socket (a new flow) whose answer, if any, is not waited for."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Client, remote_addr=addr)
    transport.sendto(packet)
    return transport
