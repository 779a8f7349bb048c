"""The service proxy with real overlays on loopback (tests/dataplane/servicenet.py): connections reach replicas on
the other node through the overlay and on their own node directly (preferred), follow table updates while old
connections drain, skip dead endpoints, reach host-loopback and ingress listeners, and bad peer headers are refused
with a reason."""

from __future__ import annotations

import asyncio
import random
import socket
import time

from broker.wire import IngressPort, Protocol, ServiceEndpoint
from dataplane.service_plan import STREAM_SERVICE, Target, stream_header
from dataplane.services import ServiceProxy
from tests.dataplane.servicenet import Binds, Replicas, cluster, fetch, table, until, web

VIP = "127.77.0.10"
ON_PI = ServiceEndpoint(node="pi", replica="web-0", zone="home")
ON_LAPTOP = ServiceEndpoint(node="laptop", replica="web-1", zone="home")


async def refused(addr: tuple[str, int]) -> bool:
    """The proxy accepted, found nothing to connect to and closed: the client reads no answer (an end of file, or a
    reset when the proxy closed with the client's bytes unread, as TCP does)."""
    try:
        return await fetch(addr) == b""
    except ConnectionResetError:
        return True


async def test_a_connection_reaches_a_replica_on_the_other_node_through_the_overlay() -> None:
    async with cluster() as (_net, pi, laptop):
        await laptop.replicas.who("web-1")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP)))
        await pi.proxy.update(table("pi", web(ON_LAPTOP)))
        binds = Binds()
        await pi.proxy.attach("client-1", "default", binds)
        assert await fetch(binds.tcp(VIP, 80), b"hello") == b"web-1:hello"
        stats = pi.proxy.stats()["default/web"]
        assert stats.connections == {"node": 0, "zone": 1, "any": 0}
        assert (stats.bytes_out, stats.bytes_in) == (5, 11)
        await until(lambda: laptop.proxy.stats()["default/web"].served == 1, "the laptop counted the stream")
        await until(lambda: pi.proxy.stats()["default/web"].active == 0, "the connection ended")


async def test_a_replica_on_the_clients_own_node_takes_every_connection() -> None:
    async with cluster() as (_net, pi, laptop):
        await pi.replicas.who("web-0")
        await laptop.replicas.who("web-1")
        service = web(ON_LAPTOP, ON_PI)
        await laptop.proxy.update(table("laptop", service))
        await pi.proxy.update(table("pi", service))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        answers = {await fetch(binds.tcp(VIP, 80), b"x") for _ in range(20)}
        assert answers == {b"web-0:x"}
        assert pi.proxy.stats()["default/web"].connections["node"] == 20


async def test_an_update_moves_new_connections_while_an_open_one_finishes() -> None:
    async with cluster() as (_net, pi, laptop):
        await pi.replicas.echo("web-0")
        await laptop.replicas.who("web-1")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP, ON_PI)))
        await pi.proxy.update(table("pi", web(ON_LAPTOP, ON_PI)))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        async with asyncio.timeout(15):
            reader, writer = await asyncio.open_connection(*binds.tcp(VIP, 80))
            writer.write(b"one")
            assert await reader.readexactly(9) == b"web-0:one"
            applied = await pi.proxy.update(table("pi", web(ON_LAPTOP), generation=2))  # web-0 no longer ready
            assert [(c.node, c.replica) for c in applied.removed] == [("pi", "web-0")] and applied.added == ()
            assert await fetch(binds.tcp(VIP, 80), b"new") == b"web-1:new"
            writer.write(b"two")  # the old connection is still served by the removed (but alive) replica
            assert await reader.readexactly(9) == b"web-0:two"
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()


async def test_a_dead_endpoint_sends_the_connection_to_another() -> None:
    async with cluster() as (_net, pi, laptop):
        pi.replicas.dead("web-0")
        await laptop.replicas.who("web-1")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP, ON_PI)))
        await pi.proxy.update(table("pi", web(ON_LAPTOP, ON_PI)))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        assert await fetch(binds.tcp(VIP, 80)) == b"web-1:hello"
        stats = pi.proxy.stats()["default/web"]
        assert (stats.connect_failures, stats.connections["zone"]) == (1, 1)


async def test_a_refusal_by_the_serving_node_tries_another_and_nothing_left_closes_the_client() -> None:
    async with cluster() as (_net, pi, laptop):
        await laptop.replicas.who("web-1")
        await laptop.proxy.update(table("laptop"))  # the laptop does not list web-1 (yet): it refuses
        await pi.proxy.update(table("pi", web(ON_LAPTOP)))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        assert await refused(binds.tcp(VIP, 80))
        stats = pi.proxy.stats()["default/web"]
        assert (stats.connect_failures, stats.no_endpoint, sum(stats.connections.values())) == (1, 1, 0)


async def test_a_process_workload_reaches_services_through_its_environment() -> None:
    async with cluster() as (_net, pi, laptop):
        await laptop.replicas.who("web-1")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP)))
        await pi.proxy.update(table("pi", web(ON_LAPTOP), web(ON_LAPTOP, name="other-app.v2", vip="127.77.0.11")))
        env = pi.proxy.env_for("default")
        assert env["WEB_SERVICE_HOST"] == "127.0.0.1" and env["OTHER_APP_V2_SERVICE_HOST"] == "127.0.0.1"
        assert env["WEB_SERVICE_PORT"] == env["WEB_SERVICE_PORT_HTTP"] != env["WEB_SERVICE_PORT_DNS"]
        assert await fetch(("127.0.0.1", int(env["WEB_SERVICE_PORT"])), b"env") == b"web-1:env"
        assert pi.proxy.env_for("default") == env  # the same ports every time
        assert pi.proxy.env_for("elsewhere") == {}


async def test_an_ingress_host_port_reaches_a_replica_on_the_other_node() -> None:
    async with cluster() as (_net, pi, laptop):
        await pi.replicas.who("web-0")
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        host_port = probe.getsockname()[1]
        probe.close()
        await pi.proxy.update(table("pi", web(ON_PI)))
        applied = await laptop.proxy.update(table("laptop", web(ON_PI, ingress=(IngressPort(port=80,
                                                                                           host_port=host_port),))))
        assert applied.problems == ()
        assert await fetch(("127.0.0.1", host_port), b"in") == b"web-0:in"
        await laptop.proxy.update(table("laptop", web(ON_PI), generation=2))  # no longer published: closed
        async with asyncio.timeout(10):
            try:
                await fetch(("127.0.0.1", host_port), b"in")
                raise AssertionError("the ingress port still answers")
            except ConnectionRefusedError:
                pass


async def test_bad_headers_are_refused_with_a_reason() -> None:
    async with cluster() as (net, _pi, laptop):
        await laptop.replicas.who("web-1")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP)))

        async def ask(header: bytes) -> bytes:
            reader, writer = await net.pi.open_stream("laptop", STREAM_SERVICE)
            writer.write(header)
            writer.write_eof()
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            return answer

        assert (await ask(b"\x07\x00"))[2:] == b"header version 7 (this node speaks 1)"
        assert b"ends inside service" in await ask(b"\x01\x08\x07default")
        assert b"is not an id" in await ask(b"\x01\x09\x02a/\x01b\x01c\x00\x50")
        for target, reason in [
            (Target("default", "nope", "web-1", 8080), b"no service default/nope on laptop"),
            (Target("default", "web", "web-9", 8080), b"web-9 is not a ready endpoint of default/web on laptop"),
            (Target("default", "web", "web-1", 22), b"port 22/TCP is not a target port of default/web"),
        ]:
            answer = await ask(stream_header(target))
            assert answer[0] == 1 and answer[2:] == reason
        answer = await ask(stream_header(Target("default", "web", "web-1", 8080)) + b"ok")
        assert answer == b"\x00web-1:ok"  # and a good one is served


async def test_a_binder_failure_for_one_service_leaves_the_others_and_detach_closes_everything() -> None:
    async with cluster() as (_net, pi, laptop):
        await laptop.replicas.who("web-1")
        services = (web(ON_LAPTOP), web(ON_LAPTOP, name="api", vip="127.77.0.12"))
        await laptop.proxy.update(table("laptop", *services))
        await pi.proxy.update(table("pi", *services))
        binds = Binds(fail={("127.77.0.12", 80)})
        await pi.proxy.attach("client", "default", binds)
        assert await fetch(binds.tcp(VIP, 80)) == b"web-1:hello"
        assert pi.proxy.stats()["default/api"].bind_failures == 1
        binds.fail.clear()
        await pi.proxy.update(table("pi", *services, generation=2))  # the failed one is asked for again
        assert await fetch(binds.tcp("127.77.0.12", 80)) == b"web-1:hello"
        await pi.proxy.detach("client")
        for addr in (binds.tcp(VIP, 80), binds.tcp("127.77.0.12", 80)):
            try:
                await fetch(addr)
                raise AssertionError(f"{addr} still answers after detach")
            except ConnectionRefusedError:
                pass


async def test_a_removed_service_closes_its_listener_and_an_added_one_is_bound() -> None:
    async with cluster() as (_net, pi, laptop):
        await laptop.replicas.who("web-1")
        api = web(ON_LAPTOP, name="api", vip="127.77.0.12")
        await laptop.proxy.update(table("laptop", web(ON_LAPTOP), api))
        await pi.proxy.update(table("pi", web(ON_LAPTOP)))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        assert ("127.77.0.12", 80) not in {(ip, port) for ip, port, _ in binds.addr}
        await pi.proxy.update(table("pi", api, generation=2))
        assert await fetch(binds.tcp("127.77.0.12", 80)) == b"web-1:hello"
        try:
            await fetch(binds.tcp(VIP, 80))
            raise AssertionError("the removed service still listens")
        except ConnectionRefusedError:
            pass


async def test_a_receiver_that_does_not_read_holds_the_sender_back() -> None:
    """Back-pressure through the proxy: with the replica not reading, the client cannot push 64 MiB into the proxy
    (only what the sockets' buffers hold gets through); once it reads, every byte arrives intact."""
    total = 64 * 1024 * 1024
    async with cluster() as (_net, pi, _laptop):
        release = asyncio.Event()
        received = bytearray()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            while chunk := await reader.read(1 << 20):
                received.extend(chunk)
            writer.write(b"done")
            writer.close()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        pi.replicas.servers.append(server)
        pi.replicas.addrs["web-0"] = server.sockets[0].getsockname()
        await pi.proxy.update(table("pi", web(ON_PI)))
        binds = Binds()
        await pi.proxy.attach("client", "default", binds)
        reader, writer = await asyncio.open_connection(*binds.tcp(VIP, 80))
        payload = bytes(range(256)) * (total // 256)

        async def send() -> None:
            for offset in range(0, total, 1 << 20):
                writer.write(payload[offset:offset + (1 << 20)])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        last, still = -1, 0
        while still < 10 and not sender.done():  # until the proxy has taken nothing more for 10 polls
            await asyncio.sleep(0.1)
            now = pi.proxy.stats()["default/web"].bytes_out
            still, last = (still + 1, last) if now == last else (0, now)
        assert not sender.done() and pi.proxy.stats()["default/web"].bytes_out < total // 2
        release.set()
        async with asyncio.timeout(60):
            await sender
            assert await reader.read() == b"done"
        assert len(received) == total and bytes(received) == payload
        writer.close()


async def test_without_an_overlay_only_replicas_on_this_node_are_reached() -> None:
    replicas = Replicas()
    await replicas.who("web-0")
    proxy = ServiceProxy(None, node_id="pi", local_endpoint=replicas.lookup, upstream_dns=[], rng=random.Random(1),
                         clock=time.monotonic)
    await proxy.start()
    try:
        await proxy.update(table("pi", web(ON_LAPTOP)))
        binds = Binds()
        await proxy.attach("client", "default", binds)
        assert await refused(binds.tcp(VIP, 80))  # the only endpoint is on another node
        assert proxy.stats()["default/web"].connect_failures == 1
        await proxy.update(table("pi", web(ON_LAPTOP, ON_PI), generation=2))
        assert await fetch(binds.tcp(VIP, 80)) == b"web-0:hello"
    finally:
        await proxy.stop()
        replicas.close()


async def test_the_ports_a_workload_listens_on_itself_are_left_to_it_and_a_retry_binds_only_what_is_missing() -> None:
    async with cluster() as (_net, pi, _laptop):
        await pi.replicas.who("web-0")
        await pi.proxy.update(table("pi", web(ON_PI)))
        binds = Binds(fail={(VIP, 53)})  # the UDP service port cannot be bound (yet)
        # the replica itself listens on 80/TCP and 53/UDP (the resolver's 53/TCP stays ours)
        await pi.proxy.attach("web-0", "default", binds,
                              own=frozenset({(80, Protocol.TCP), (53, Protocol.UDP)}))
        assert (VIP, 80, Protocol.TCP) not in binds.addr and ("127.0.0.1", 53, Protocol.UDP) not in binds.addr
        assert ("127.0.0.1", 53, Protocol.TCP) in binds.addr
        # a client that does not listen on them gets every listener but the one that failed
        other = Binds(fail={(VIP, 53)})
        await pi.proxy.attach("client", "default", other)
        assert {(VIP, 80, Protocol.TCP), ("127.0.0.1", 53, Protocol.UDP)} <= set(other.addr)
        before = dict(other.addr)
        other.fail.clear()
        await pi.proxy.resync("client")
        assert (VIP, 53, Protocol.UDP) in other.addr
        assert {k: v for k, v in other.addr.items() if k in before} == before  # nothing bound twice
        assert await fetch(other.tcp(VIP, 80), b"x") == b"web-0:x"


async def test_what_an_update_left_out_is_kept_until_the_next_one() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)  # the ingress host port is someone else's
    port = taken.getsockname()[1]
    proxy = ServiceProxy(None, node_id="pi", local_endpoint=Replicas().lookup, upstream_dns=[],
                         rng=random.Random(1), clock=time.monotonic, ingress_host="127.0.0.1")
    await proxy.start()
    try:
        applied = await proxy.update(table("pi", web(ON_PI, ingress=(IngressPort(port=80, host_port=port),))))
        assert len(applied.problems) == 1 and f"127.0.0.1:{port}" in applied.problems[0]
        assert proxy.proxy_stats().problems == applied.problems
        assert proxy.stats()["default/web"].bind_failures == 1
        await proxy.update(table("pi", web(ON_PI), generation=2))
        assert proxy.proxy_stats().problems == ()
    finally:
        await proxy.stop()
        taken.close()


async def test_a_clients_connection_gets_tcp_nodelay_on_a_listener_made_with_proto_0() -> None:
    """asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP; our listeners (and the agent's binder's)
    are made with proto 0, so without it Nagle held every second write of a response for the client's delayed ACK
    (~40 ms a request/response turn)."""
    proxy = ServiceProxy(None, node_id="pi", local_endpoint=lambda *_: None, upstream_dns=[], rng=random.Random(1),
                         clock=time.monotonic)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    options: list[tuple[int, int]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await proxy.tcp.client((("default", "web"), 80), reader, writer)  # no such service: closed at once
        options.append((before, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))

    server = await asyncio.start_server(serve, sock=listener)
    try:
        assert await refused(listener.getsockname()[:2])
        assert options == [(0, 1)]
    finally:
        server.close()
