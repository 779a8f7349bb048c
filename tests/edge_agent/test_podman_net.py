"""runtime.podman_net: a container of a node with services resolves through the agent and publishes every port
without a hostPort on the host's loopback at a port Podman picks; one on the host network gets neither."""

from __future__ import annotations

from typing import Any

from broker.wire import PortMapping, Protocol
from edge_agent.runtime.podman_net import with_services
from edge_agent.runtime.podman_spec import container_spec
from tests.edge_agent.builders import make_spec


def body(**more: Any) -> dict[str, Any]:
    spec = make_spec("web-0", namespace="shop", ports=(PortMapping(8080), PortMapping(9090, host_port=19090),
                                                       PortMapping(53, protocol=Protocol.UDP)), **more)
    return with_services(container_spec(spec, name="c", labels={}, stop_timeout_s=1, limits=True,
                                        log_max_bytes=None), spec)


def test_resolver_and_search_list_of_the_namespace() -> None:
    got = body()
    assert got["dns_server"] == ["127.0.0.1"]
    assert got["dns_search"] == ["shop.svc.cloudless", "svc.cloudless"]


def test_ports_without_host_port_are_published_on_loopback_at_a_random_port() -> None:
    got = {(m["container_port"], m["protocol"]): m for m in body()["portmappings"]}
    assert got[(8080, "tcp")] == {"container_port": 8080, "host_port": 0, "host_ip": "127.0.0.1", "protocol": "tcp"}
    assert got[(53, "udp")]["host_ip"] == "127.0.0.1"
    assert got[(9090, "tcp")]["host_port"] == 19090 and "host_ip" not in got[(9090, "tcp")]  # the user's, unchanged
    assert len(got) == 3


def test_host_network_gets_neither() -> None:
    spec = make_spec("web-0", ports=(PortMapping(8080),))
    plain = container_spec(spec, name="c", labels={}, stop_timeout_s=1, limits=True, log_max_bytes=None)
    host = {**plain, "netns": {"nsmode": "host"}, "portmappings": []}
    assert with_services(host, spec) == host
