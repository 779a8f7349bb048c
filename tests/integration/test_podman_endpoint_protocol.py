"""A container port published for TCP and UDP under the same number (a DNS server's 53/tcp and 53/udp) has a host
port for each, on different random host ports when the agent runs services (podman_net.with_services): the
runtime's `endpoint` answers the one of the protocol asked for, against real Podman (rootful and rootless)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.wire import PortMapping, Protocol
from edge_agent.runtime.podman import PodmanRuntime
from tests.integration.podman_env import PodmanTarget, podman_target
from tests.integration.test_podman_runtime import http_get, make_spec, new_node, run

pytestmark = pytest.mark.integration
__all__ = ["podman_target"]  # the fixture, imported for pytest


@pytest.fixture
async def rt(podman_target: PodmanTarget) -> AsyncIterator[PodmanRuntime]:
    runtime = podman_target.runtime(new_node(), services=True)
    try:
        yield runtime
    finally:
        await runtime.close()
        podman_target.cleanup(runtime.node_id)


async def test_a_port_published_for_tcp_and_udp_is_looked_up_by_protocol(rt: PodmanRuntime) -> None:
    inst = await run(rt, make_spec(command=("httpd", "-f", "-p", "5353", "-h", "/www"), args=(),
                                   ports=(PortMapping(5353), PortMapping(5353, protocol=Protocol.UDP))))
    tcp = await rt.endpoint(inst.instance_id, 5353, Protocol.TCP)
    udp = await rt.endpoint(inst.instance_id, 5353, Protocol.UDP)
    assert tcp is not None and udp is not None
    assert tcp.host == udp.host == "127.0.0.1" and tcp.port != udp.port
    assert "cloudless test image" in http_get(f"http://127.0.0.1:{tcp.port}/")  # the TCP one is the httpd's
    assert await rt.endpoint(inst.instance_id, 5353) == tcp  # TCP unless told (probes)
