"""The gateway's endpoint for workloads (cloudless.gateway_endpoint): which stream headers it admits (pure), and the
adapter over real sockets — a loopback TCP connection plays the overlay stream, a real aiohttp app on the unix socket
plays the S3 app — splicing an admitted stream (the Host header the client sent passes through), refusing a bad one
with the reason, bounding the streams one node holds open, and registering the built-in service while it runs."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from cloudless.gateway_endpoint import S3_PORTS, WorkloadEndpoint, admit
from dataplane.service_plan import OK, REFUSED, S3_SERVICE, VERSION, Target, encode_target, stream_header

S3_TARGET = Target("cloudless", "s3", "builtin", 80)


@pytest.mark.parametrize(("version", "body", "problem"), [
    (VERSION, encode_target(S3_TARGET), None),
    (2, encode_target(S3_TARGET), "header version 2"),
    (VERSION, b"\x03abc", "the header ends inside service"),
    (VERSION, encode_target(Target("default", "web", "w1", 80)), "no service default/web here"),
    (VERSION, encode_target(Target("cloudless", "s3", "builtin", 9000)), "port 9000 is not a port of s3.cloudless"),
], ids=["s3", "version", "malformed", "other-service", "other-port"])
def test_only_s3_cloudless_on_port_80_is_admitted(version: int, body: bytes, problem: str | None) -> None:
    result = admit(version, body)
    if problem is None:
        assert result == S3_TARGET
    else:
        assert isinstance(result, str) and problem in result


class FakeOverlay:
    def __init__(self) -> None:
        self.services: dict[str, Any] = {}

    def serve(self, service: str, handler: Any) -> None:
        self.services[service] = handler


class FakeRegistry:
    def __init__(self) -> None:
        self.builtins: dict[tuple[str, str], Any] = {}


class Rig:
    def __init__(self, endpoint: WorkloadEndpoint, port: int, registry: FakeRegistry, wakes: list[int]) -> None:
        self.endpoint, self.port, self.registry, self.wakes = endpoint, port, registry, wakes
        self.release = asyncio.Event()

    async def stream(self, header: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(header)
        return reader, writer


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    release = asyncio.Event()

    async def hello(request: web.Request) -> web.Response:
        if request.path == "/hold":
            await release.wait()
        return web.Response(text=f"host={request.host} path={request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    registry, wakes, overlay = FakeRegistry(), [], FakeOverlay()
    endpoint = WorkloadEndpoint(registry=registry, member="s3@coord-1",  # type: ignore[arg-type]
                                wake=lambda: wakes.append(1), max_per_peer=1)
    await endpoint.start(runner, overlay)  # type: ignore[arg-type]
    handler = overlay.services["svc"]
    server = await asyncio.start_server(lambda r, w: handler("pi", r, w), "127.0.0.1", 0)
    r = Rig(endpoint, server.sockets[0].getsockname()[1], registry, wakes)
    r.release = release
    try:
        yield r
    finally:
        release.set()
        server.close()
        await endpoint.stop()
        await runner.cleanup()


async def test_an_admitted_stream_reaches_the_app_with_the_clients_host_header(rig: Rig) -> None:
    assert rig.registry.builtins[S3_SERVICE].members == ("s3@coord-1",) and rig.registry.builtins[S3_SERVICE].ports \
        == S3_PORTS and rig.wakes
    assert rig.endpoint.dir is not None and stat.S_IMODE(rig.endpoint.dir.stat().st_mode) == 0o700
    request = b"GET /photos/a.txt HTTP/1.1\r\nHost: s3.cloudless\r\nConnection: close\r\n\r\n"
    reader, writer = await rig.stream(stream_header(S3_TARGET) + request)
    assert (await reader.readexactly(1))[0] == OK
    response = await asyncio.wait_for(reader.read(), 30)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"host=s3.cloudless path=/photos/a.txt")
    writer.close()


async def test_a_bad_header_is_refused_with_the_reason_and_nothing_reaches_the_app(rig: Rig) -> None:
    reader, writer = await rig.stream(stream_header(Target("default", "web", "w1", 80)) + b"GET / HTTP/1.1\r\n\r\n")
    assert (await reader.readexactly(1))[0] == REFUSED
    reason = await reader.readexactly((await reader.readexactly(1))[0])
    assert b"no service default/web here" in reason
    assert await asyncio.wait_for(reader.read(), 30) == b""  # closed
    writer.close()
    reader, writer = await rig.stream(b"\x07")  # a header cut short: refused once the peer's end is seen
    writer.write_eof()
    assert (await asyncio.wait_for(reader.readexactly(1), 30))[0] == REFUSED
    writer.close()
    assert rig.endpoint.served == 0 and rig.endpoint.refused == 2


async def test_one_node_holds_at_most_its_share_of_streams_and_stop_unregisters(rig: Rig) -> None:
    held_reader, held = await rig.stream(stream_header(S3_TARGET) + b"GET /hold HTTP/1.1\r\nHost: s3.cloudless\r\n\r\n")
    assert (await held_reader.readexactly(1))[0] == OK
    reader, writer = await rig.stream(stream_header(S3_TARGET))
    assert (await reader.readexactly(1))[0] == REFUSED
    assert b"busy" in await reader.readexactly((await reader.readexactly(1))[0])
    writer.close()
    rig.release.set()
    assert (await asyncio.wait_for(held_reader.readuntil(b"path=/hold"), 30)).startswith(b"HTTP/1.1 200")
    held.close()
    wakes = len(rig.wakes)
    await rig.endpoint.stop()
    assert S3_SERVICE not in rig.registry.builtins and len(rig.wakes) == wakes + 1 and rig.endpoint.dir is None


async def test_a_workload_of_any_namespace_reaches_the_gateway_through_its_nodes_proxy_and_the_overlay() -> None:
    """Two real overlays through a relay (tests/dataplane/servicenet.py): the laptop's overlay plays the gateway's
    member (its `svc` streams go to a WorkloadEndpoint in front of a real aiohttp app), the pi's service proxy is the
    agent's. A container of namespace `shop` (its binder) and a process (its environment) both reach the app."""
    from broker.wire import Protocol, ServiceEndpoint, ServiceRecord
    from tests.dataplane.servicenet import Binds, cluster, table

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"s3 app: host={request.host}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    record = ServiceRecord(name="s3", namespace="cloudless", vip="127.77.0.20", ports=S3_PORTS,
                           endpoints=(ServiceEndpoint(node="laptop", replica="builtin"),))
    request = b"GET /photos HTTP/1.1\r\nHost: s3.cloudless\r\nConnection: close\r\n\r\n"
    async with cluster() as (net, pi, _laptop):
        endpoint = WorkloadEndpoint(registry=None, member="laptop", wake=lambda: None)
        await endpoint.start(runner, net.laptop)
        try:
            await pi.proxy.update(table("pi", record))
            binds = Binds()
            await pi.proxy.attach("shop-client", "shop", binds)

            async def get(addr: tuple[str, int]) -> bytes:
                reader, writer = await asyncio.open_connection(*addr)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                return answer

            assert (await get(binds.tcp("127.77.0.20", 80))).endswith(b"s3 app: host=s3.cloudless")
            env = pi.proxy.env_for("shop")
            url = env["AWS_ENDPOINT_URL_S3"]
            assert url.startswith("http://127.0.0.1:") and env["S3_SERVICE_PORT"] == url.rsplit(":", 1)[1]
            assert (await get(("127.0.0.1", int(url.rsplit(":", 1)[1])))).endswith(b"s3 app: host=s3.cloudless")
            assert endpoint.served == 2

            # a node that opts out (--no-s3-endpoint) serves it to nobody
            pi.proxy.builtins = False
            await pi.proxy.update(table("pi", record, generation=2))
            other = Binds()
            await pi.proxy.attach("other", "shop", other)
            assert ("127.77.0.20", 80, Protocol.TCP) not in other.addr and other.addr  # its resolver only
            assert "AWS_ENDPOINT_URL_S3" not in pi.proxy.env_for("shop")
        finally:
            await endpoint.stop()
            await runner.cleanup()
