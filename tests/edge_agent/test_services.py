"""edge_agent.services with the real ServiceProxy and a FakeRuntime: the table fenced like the peer directory, the
upstream resolvers from resolv.conf, process replicas reaching an endpoint through their <SVC>_SERVICE_* variables,
containers attached (a binder into their namespace), detached when they stop and attached again when they restart or
a bind failed, and the counters as metrics. The real namespaces are in test_netns_podman.py and
test_services_agent.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import wire
from broker.client import Message, MqttClient
from broker.wire import Protocol, ServiceEndpoint, ServicePort, ServiceRecord, ServiceTable, topics
from edge_agent.metrics import Counters, Sample, ServiceSamples, render
from edge_agent.netns import BindSpec, Bound
from edge_agent.overlay import AgentOverlay
from edge_agent.runtime.base import Endpoint, Instance
from edge_agent.runtime.fake import FakeRuntime
from edge_agent.runtime.podman import published_endpoint
from edge_agent.services import (
    NO_DATAPLANE,
    RETRY_ATTACH_S,
    SWITCHED_OFF,
    AgentServices,
    ServiceSettings,
    consider_table,
    local_ports,
    upstream_servers,
)
from tests.edge_agent.builders import NOW, make_spec

NODE = "pi-1"
VIP = "127.77.41.7"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeMqtt:
    """What AgentServices uses of the MQTT client: subscribe (the handler is kept to deliver messages)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Message], None]] = {}

    async def subscribe(self, topic_filter: str, handler: Callable[[Message], None], *, qos: int = 1) -> int:
        self.handlers[topic_filter] = handler
        return 0

    def deliver(self, table: ServiceTable) -> None:
        topic = topics.node_services(table.node_id)
        self.handlers[topic](Message(topic=topic, payload=wire.encode(table), qos=1, retain=True))


class NetnsRuntime(FakeRuntime):
    """FakeRuntime whose instances have a network namespace (as Podman's) and published ports."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(node_id=NODE, clock=clock)
        self.published: dict[tuple[int, Protocol], Endpoint] = {}  # target port -> where the host reaches it
        self.host_network: set[str] = set()  # replicas on the host's network (no namespace of their own)
        self.netns_asked = 0

    async def endpoint(self, instance_id: str, container_port: int,
                       protocol: Protocol = Protocol.TCP) -> Endpoint | None:
        return self.published.get((container_port, protocol))

    async def netns_pid(self, instance_id: str) -> int | None:
        self.netns_asked += 1
        inst = self.instances.get(instance_id)
        if inst is None or inst.replica_id in self.host_network:
            return None
        return 4242 if inst.state.value == "running" else None


class Binds:
    """A binder standing in for edge_agent.netns: binds in this namespace (VIPs from 127/8 route to lo here too);
    the resolver's :53 fails while `dns_fails` (a bind failure the agent retries)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[BindSpec]]] = []
        self.dns_fails = True

    async def __call__(self, pid: int, specs: Sequence[BindSpec]) -> list[Bound]:
        self.calls.append((pid, list(specs)))
        out: list[Bound] = []
        for s in specs:
            if s.port == 53:
                out.append("port 53 taken (test)" if self.dns_fails else _bound(s.ip, 0, s.proto))
            else:
                out.append(_bound(s.ip, s.port, s.proto))
        return out


def _bound(ip: str, port: int, proto: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    return sock


def table(*, generation: int = 1, epoch: int = 1, endpoints: tuple[ServiceEndpoint, ...] | None = None,
          vip: str = VIP) -> ServiceTable:
    eps = endpoints if endpoints is not None else (ServiceEndpoint(NODE, "web-0"),)
    record = ServiceRecord("web", "default", vip, ports=(ServicePort(80, 8080, name="http"),), endpoints=eps)
    return ServiceTable(node_id=NODE, generation=generation, epoch=epoch, ts=NOW, services=(record,))


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """The replica itself: a TCP server on the host answering 'hello from web-0'."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from web-0\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def services(runtime: FakeRuntime, mqtt: FakeMqtt, clock: Clock, tmp_path: Path, *, enabled: bool = True,
             bind: Callable[[int, Sequence[BindSpec]], Awaitable[list[Bound]]] | None = None,
             max_epoch: int = 0, builtins: bool = True) -> AgentServices:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    overlay = cast(AgentOverlay, type("NoOverlay", (), {"overlay": None})())
    kw: dict[str, Any] = {"bind": bind} if bind is not None else {}
    return AgentServices(node_id=NODE, mqtt=cast(MqttClient, mqtt), runtime=runtime, overlay=overlay, clock=clock,
                         settings=ServiceSettings(enabled=enabled, resolv_conf=resolv, builtins=builtins),
                         max_epoch=lambda: max_epoch,
                         **kw)


async def running(runtime: FakeRuntime, rid: str) -> Instance:
    inst = await runtime.create(make_spec(rid), 1)
    return await runtime.start(inst.instance_id)


async def fetch(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


# ---- decisions ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "max_epoch", "incoming", "applied"), [
    (None, 0, (1, 1), True),
    ((2, 5), 2, (2, 6), True),
    ((2, 5), 2, (2, 5), False),
    ((2, 5), 2, (2, 4), False),
    ((2, 5), 2, (3, 1), True),  # a new leader's first table
    (None, 3, (2, 9), False),  # fenced by the epoch of the agent's desired state
], ids=["first", "newer", "same", "older", "new-epoch", "stale-leader"])
def test_consider_table(current: tuple[int, int] | None, max_epoch: int, incoming: tuple[int, int],
                        applied: bool) -> None:
    cur = table(epoch=current[0], generation=current[1]) if current else None
    why = consider_table(cur, max_epoch, table(epoch=incoming[0], generation=incoming[1]))
    assert (why is None) is applied


@pytest.mark.parametrize(("resolv", "resolved", "expected"), [
    ("nameserver 10.0.0.1\nnameserver 127.0.0.53\n", None, [("10.0.0.1", 53)]),
    ("# comment\nnameserver 127.0.0.53\noptions edns0\n", "nameserver 9.9.9.9\n", [("9.9.9.9", 53)]),
    ("nameserver 127.0.0.1\n", None, [("127.0.0.1", 53)]),  # only the host's own: reachable from the agent
    ("nameserver fe80::1%eth0\nnameserver bogus\n", None, [("fe80::1", 53)]),
    ("search example.org\n", None, []),
], ids=["skip-loopback", "systemd-resolved", "only-loopback", "v6-scope-and-junk", "none"])
def test_upstream_servers(resolv: str, resolved: str | None, expected: list[tuple[str, int]]) -> None:
    assert upstream_servers(resolv, resolved) == expected


def test_local_ports_are_this_nodes_endpoints_by_target_port() -> None:
    t = table(endpoints=(ServiceEndpoint(NODE, "web-0"), ServiceEndpoint("laptop", "web-1")))
    assert local_ports(t, NODE) == {("web-0", 8080, Protocol.TCP)}
    assert local_ports(None, NODE) == set()


# ---- the adapter --------------------------------------------------------------------------------------------

async def test_switched_off_or_without_dataplane_nothing_runs(tmp_path: Path) -> None:
    clock, mqtt = Clock(), FakeMqtt()
    off = services(FakeRuntime(node_id=NODE, clock=clock), mqtt, clock, tmp_path, enabled=False)
    await off.start()
    assert (off.enabled, off.disabled, mqtt.handlers) == (False, SWITCHED_OFF, {})
    spec = make_spec("client-0")
    assert await off.with_service_env(spec) is spec and off.samples() == ServiceSamples()
    bare = services(FakeRuntime(node_id=NODE, clock=clock), mqtt, clock, tmp_path)
    bare._dataplane_available = lambda: False
    await bare.start()
    assert (bare.enabled, bare.disabled) == (False, NO_DATAPLANE)


async def test_a_process_replica_reaches_a_local_endpoint_through_its_variables(tmp_path: Path,
                                                                             backend: int) -> None:
    clock, mqtt = Clock(), FakeMqtt()
    runtime = NetnsRuntime(clock)
    runtime.published[(8080, Protocol.TCP)] = Endpoint("127.0.0.1", backend)
    svc = services(runtime, mqtt, clock, tmp_path)
    await svc.start()
    try:
        assert svc.upstream == [("192.0.2.53", 53)]
        mqtt.deliver(table())
        await running(runtime, "web-0")
        svc.sync(await runtime.list())
        await svc.apply()
        assert svc.local_endpoint("web-0", 8080, Protocol.TCP) == ("127.0.0.1", backend)
        spec = await svc.with_service_env(make_spec("client-0", env={"WEB_SERVICE_PORT_HTTP": "mine"}))
        assert spec.env["WEB_SERVICE_HOST"] == "127.0.0.1"
        assert spec.env["WEB_SERVICE_PORT_HTTP"] == "mine"  # the replica's own environment wins
        assert await fetch("127.0.0.1", int(spec.env["WEB_SERVICE_PORT"])) == b"hello from web-0\n"
        report = svc.samples()
        (sample,) = report.per_service
        assert (sample.service, sample.namespace, sample.connections.get("node")) == ("web", "default", 1)
        assert (report.running, report.problems, report.udp_flows_open) == (True, 0, 0)
    finally:
        await svc.stop()


@pytest.mark.parametrize("builtins", [True, False], ids=["default", "no-s3-endpoint"])
async def test_a_process_replica_gets_the_s3_endpoint_unless_the_node_opts_out(tmp_path: Path, builtins: bool) -> None:
    clock, mqtt = Clock(), FakeMqtt()
    svc = services(FakeRuntime(node_id=NODE, clock=clock), mqtt, clock, tmp_path, builtins=builtins)
    await svc.start()
    try:
        s3 = ServiceRecord("s3", "cloudless", "127.77.0.99", ports=(ServicePort(80, 80, name="http"),),
                           endpoints=(ServiceEndpoint("s3@coord-1", "builtin"),))
        mqtt.deliver(ServiceTable(node_id=NODE, generation=1, epoch=1, ts=NOW, services=(s3,)))
        env = (await svc.with_service_env(make_spec("job-0", namespace="prod"))).env
        if builtins:
            assert env["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{env['S3_SERVICE_PORT']}"
        else:
            assert "AWS_ENDPOINT_URL_S3" not in env and "S3_SERVICE_PORT" not in env
    finally:
        await svc.stop()


async def test_a_process_replica_created_right_after_a_table_gets_its_variables(tmp_path: Path) -> None:
    clock, mqtt = Clock(), FakeMqtt()
    runtime = FakeRuntime(node_id=NODE, clock=clock)
    svc = services(runtime, mqtt, clock, tmp_path)
    await svc.start()
    try:
        mqtt.deliver(table())  # stored; the worker has not run yet
        env = (await svc.with_service_env(make_spec("client-0"))).env
        assert env["WEB_SERVICE_HOST"] == "127.0.0.1" and int(env["WEB_SERVICE_PORT_HTTP"]) > 0
        mqtt.deliver(table(generation=2, vip="127.77.41.8"))  # a newer one: applied first too
        assert svc.proxy is not None
        await svc.with_service_env(make_spec("client-1"))
        assert svc.proxy.view.services[("default", "web")].vip == "127.77.41.8"
    finally:
        await svc.stop()


class UdpEcho(asyncio.DatagramProtocol):
    """A UDP replica: answers `udp:<datagram>`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"udp:" + data, addr)


async def udp_ask(port: int, data: bytes) -> bytes:
    """One datagram to 127.0.0.1:port and its answer."""
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, got: bytes, addr: tuple[str, int]) -> None:
            answers.put_nowait(got)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Client,
                                                                             remote_addr=("127.0.0.1", port))
    try:
        async with asyncio.timeout(10):
            while True:  # UDP: asked again until answered
                transport.sendto(data)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        return await answers.get()
    finally:
        transport.close()


def test_podman_endpoints_are_looked_up_by_protocol() -> None:
    # with_services publishes 53/tcp and 53/udp on different random host ports
    network = {"Ports": {"53/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40001"}],
                         "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "40002"}],
                         "80/tcp": [{"HostIp": "", "HostPort": "40003"}]}}
    assert published_endpoint(network, 53, Protocol.TCP) == Endpoint("127.0.0.1", 40001)
    assert published_endpoint(network, 53, Protocol.UDP) == Endpoint("127.0.0.1", 40002)
    assert published_endpoint(network, 80, Protocol.UDP) is None
    assert published_endpoint(network, 80, Protocol.TCP) == Endpoint("127.0.0.1", 40003)


async def test_a_udp_port_sharing_its_number_with_a_tcp_one_reaches_the_udp_endpoint(tmp_path: Path,
                                                                                    backend: int) -> None:
    clock, mqtt = Clock(), FakeMqtt()
    runtime = NetnsRuntime(clock)
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    runtime.published[(5353, Protocol.TCP)] = Endpoint("127.0.0.1", backend)
    runtime.published[(5353, Protocol.UDP)] = Endpoint("127.0.0.1", udp.get_extra_info("sockname")[1])
    record = ServiceRecord("dns", "default", VIP, ports=(ServicePort(53, 5353, name="tcp"),
                                                         ServicePort(53, 5353, name="udp", protocol=Protocol.UDP)),
                           endpoints=(ServiceEndpoint(NODE, "dns-0"),))
    svc = services(runtime, mqtt, clock, tmp_path)
    await svc.start()
    try:
        mqtt.deliver(ServiceTable(node_id=NODE, generation=1, epoch=1, ts=NOW, services=(record,)))
        await running(runtime, "dns-0")
        svc.sync(await runtime.list())
        await svc.apply()
        assert svc.local_endpoint("dns-0", 5353, Protocol.UDP) == udp.get_extra_info("sockname")
        assert svc.local_endpoint("dns-0", 5353, Protocol.TCP) == ("127.0.0.1", backend)
        env = (await svc.with_service_env(make_spec("client-0"))).env
        assert await fetch("127.0.0.1", int(env["DNS_SERVICE_PORT_TCP"])) == b"hello from web-0\n"
        assert await udp_ask(int(env["DNS_SERVICE_PORT_UDP"]), b"ping") == b"udp:ping"
        (sample,) = svc.samples().per_service
        assert (sample.udp_flows, sample.udp_refused) == (1, 0)
    finally:
        await svc.stop()
        udp.close()


async def test_tables_are_fenced(tmp_path: Path) -> None:
    clock, mqtt = Clock(), FakeMqtt()
    svc = services(NetnsRuntime(clock), mqtt, clock, tmp_path, max_epoch=2)
    await svc.start()
    try:
        mqtt.deliver(table(epoch=1, generation=9))
        assert svc.table is None  # an older leader's
        mqtt.deliver(table(epoch=2, generation=3))
        mqtt.deliver(table(epoch=2, generation=2, vip="127.77.41.8"))
        assert svc.table is not None and (svc.table.generation, svc.table.services[0].vip) == (3, VIP)
        mine = topics.node_services(NODE)  # a body naming another node on this node's topic: refused by the codec
        foreign = ServiceTable(node_id="other", generation=1, epoch=5, ts=NOW)
        mqtt.handlers[mine](Message(topic=mine, payload=wire.encode(foreign), qos=1, retain=True))
        assert svc.table.generation == 3
    finally:
        await svc.stop()


async def test_containers_are_attached_detached_and_attached_again(tmp_path: Path, backend: int) -> None:
    clock, mqtt, binds = Clock(), FakeMqtt(), Binds()
    runtime = NetnsRuntime(clock)
    runtime.published[(8080, Protocol.TCP)] = Endpoint("127.0.0.1", backend)
    svc = services(runtime, mqtt, clock, tmp_path, bind=binds)
    await svc.start()
    try:
        mqtt.deliver(table())
        web = await running(runtime, "web-0")
        client = await running(runtime, "client-0")
        svc.sync(await runtime.list())
        await svc.apply()
        assert {pid for pid, _ in binds.calls} == {4242}
        asked = {(s.ip, s.port, s.proto) for _, specs in binds.calls for s in specs}
        assert asked == {(VIP, 80, "tcp"), ("127.0.0.1", 53, "udp"), ("127.0.0.1", 53, "tcp")}
        assert svc.samples().dns_bind_failures == 4  # the resolver's :53, UDP and TCP, in both containers
        assert await fetch(VIP, 80) == b"hello from web-0\n"  # the client container's listener, served here

        # the resolver could not be bound: asked again, but only after RETRY_ATTACH_S
        calls = len(binds.calls)
        await svc.apply()
        assert len(binds.calls) == calls
        binds.dns_fails = False
        clock.now += RETRY_ATTACH_S
        await svc.apply()
        assert len(binds.calls) > calls
        assert all(a.failed_at is None for a in svc.attached.values())

        # the client container stops: its listeners close with it
        await runtime.stop(client.instance_id, 1)
        await runtime.stop(web.instance_id, 1)
        svc.sync(await runtime.list())
        await svc.apply()
        assert svc.attached == {}
        with pytest.raises(OSError):
            await fetch(VIP, 80)

        # started again (a new network namespace): attached again
        clock.now += 1
        await runtime.start(client.instance_id)
        svc.sync(await runtime.list())
        await svc.apply()
        assert [a.instance_id for a in svc.attached.values()] == [client.instance_id]
    finally:
        await svc.stop()


async def test_a_container_on_the_host_network_is_never_attached(tmp_path: Path) -> None:
    clock, mqtt, binds = Clock(), FakeMqtt(), Binds()
    runtime = NetnsRuntime(clock)
    runtime.host_network.add("hostnet-0")
    svc = services(runtime, mqtt, clock, tmp_path, bind=binds)
    await svc.start()
    try:
        mqtt.deliver(table())
        await running(runtime, "hostnet-0")
        for _ in range(3):
            svc.sync(await runtime.list())
            await svc.apply()
        assert (svc.attached, binds.calls, runtime.netns_asked) == ({}, [], 1)  # asked once per run, nothing bound
    finally:
        await svc.stop()


def test_service_metrics_render() -> None:
    from edge_agent.metrics import ServiceSample

    sample = Sample(node_id=NODE, profile="vps", runtime="podman", cpu_percent=None, memory_used_bytes=None,
                    memory_total_bytes=None, battery_percent=None, charging=None, temperatures_c={},
                    schedulable=True, mqtt_connected=True, replicas=(), counters=Counters(), state_writes=0,
                    desired_generation=None, desired_epoch=None,
                    services=ServiceSamples(
                        per_service=(ServiceSample("web", "default", {"node": 3, "any": 1}, active=2, bytes_out=10,
                                                   bytes_in=20, connect_failures=1, no_endpoint=4, bind_failures=5,
                                                   udp_flows=6, udp_dropped=7, udp_refused=8),),
                        running=True, dns_queries={"answered": 11, "forwarded": 12, "failed": 13},
                        dns_bind_failures=14, udp_flows_open=15, problems=16))
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(render(sample)) for s in fam.samples}
    who = (("namespace", "default"), ("service", "web"))
    assert got[("cloudless_service_connections_total", (*who, ("tier", "node")))] == 3
    assert got[("cloudless_service_connections_total", (*who, ("tier", "any")))] == 1
    assert got[("cloudless_service_active_connections", who)] == 2
    assert got[("cloudless_service_bytes_total", (("direction", "in"), *who))] == 20
    assert got[("cloudless_service_failures_total", (("kind", "no_endpoint"), *who))] == 4
    assert got[("cloudless_service_failures_total", (("kind", "bind"), *who))] == 5
    assert got[("cloudless_service_failures_total", (("kind", "udp_dropped"), *who))] == 7
    assert got[("cloudless_service_failures_total", (("kind", "udp_flow_limit"), *who))] == 8
    assert got[("cloudless_service_udp_flows_total", who)] == 6
    assert got[("cloudless_service_dns_queries_total", (("outcome", "answered"),))] == 11
    assert got[("cloudless_service_dns_queries_total", (("outcome", "forwarded"),))] == 12
    assert got[("cloudless_service_dns_queries_total", (("outcome", "failed"),))] == 13
    assert got[("cloudless_service_dns_bind_failures_total", ())] == 14
    assert got[("cloudless_service_udp_flows_open", ())] == 15
    assert got[("cloudless_service_table_problems", ())] == 16
    # services switched off: no node-wide values (not zeros that look like a healthy proxy)
    off = [line.split()[0] for line in render(replace(sample, services=ServiceSamples())).splitlines()
           if not line.startswith("#")]
    assert not [name for name in off if name.startswith("cloudless_service_")]

