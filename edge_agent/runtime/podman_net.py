"""What a container needs to take part in services (pure core): its resolver and a host address per port.

- **Names**: the container's resolv.conf says `nameserver 127.0.0.1` and `search <ns>.svc.cloudless svc.cloudless`
  (Podman's `dns_server`/`dns_search`). Inside the container's own network namespace 127.0.0.1:53 is the agent's
  resolver (`edge_agent.services` binds it there through `edge_agent.netns`), which answers service names and
  forwards every other name to the host's upstream servers. `web` and `web.<ns>` resolve through the search list.
- **Reachability**: every container port without a hostPort is published on the host's 127.0.0.1 at a random port
  (`host_port` 0: Podman picks one), so the agent reaches a replica's target port from the host — a rootless
  container behind slirp4netns cannot be reached any other way. `PodmanRuntime.endpoint` reads the port back.

A container on the host's network (`security.hostNetwork`) has neither: it uses the host's resolver, and its ports
are the host's already.
"""

from __future__ import annotations

from typing import Any

from broker.wire import ReplicaSpec
from broker.wire.messages import Protocol as PortProtocol

Json = dict[str, Any]

SERVICE_DOMAIN = "svc.cloudless"
RESOLVER = "127.0.0.1"


def dns_search(namespace: str) -> list[str]:
    return [f"{namespace}.{SERVICE_DOMAIN}", SERVICE_DOMAIN]


def on_host_network(body: Json) -> bool:
    return bool((body.get("netns") or {}).get("nsmode") == "host")


def with_services(body: Json, spec: ReplicaSpec) -> Json:
    """`body` (a SpecGenerator from `podman_spec.container_spec`) with the resolver and the loopback publications
    described in the module docstring. Returns a new dict; `body` is not changed."""
    if on_host_network(body):
        return body
    taken = {(m["container_port"], m.get("protocol", "tcp")) for m in body.get("portmappings") or ()}
    published = [
        {"container_port": p.container_port, "host_port": 0, "host_ip": "127.0.0.1",
         "protocol": "udp" if p.protocol is PortProtocol.UDP else "tcp"}
        for p in spec.ports if not p.host_port
    ]
    published = [m for m in published if (m["container_port"], m["protocol"]) not in taken]
    return {**body, "portmappings": [*(body.get("portmappings") or ()), *published],
            "dns_server": [RESOLVER], "dns_search": dns_search(spec.namespace)}
