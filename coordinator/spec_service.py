"""The Workload document's `service` part: the workload's replicas become endpoints of a named service, reached by
name (`<service>.<namespace>.svc.cloudless`, or `<service>` from the same namespace) on a stable virtual address,
balanced per connection across ready replicas with locality, and optionally published on host ports of chosen nodes
(ingress). Pure; see `coordinator.spec` for how the field tables are parsed, dumped and turned into a JSON Schema.

    spec:
      ports:
        - {name: http, containerPort: 8080}
      service:
        name: web            # default: the workload's name
        ports:               # default: every container port, as the same number
          - {port: 80, targetPort: 8080}
        weight: 3            # this workload's share when several workloads back one service (canary: 3 vs 1)
        ingress:
          - {port: 80, hostPort: 8080, nodes: [vps]}

Several workloads of one namespace may name the same service; they must then declare the same service ports (the
registry leaves out, with a reason, a workload whose ports differ from the first one's)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from broker.wire.messages import Protocol as PortProtocol
from coordinator.spec_kinds import Checked, Choice, Int, ListOf, MapOf, Obj, Str, spec_field
from coordinator.spec_values import LABEL_KEY, LABEL_VALUE, NAME, PORT

DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SERVICE_NAME = Str(63, 1, DNS_LABEL, "service name (a DNS label: lower-case letters, digits, '-')")
PORT_NAME = Str(15, 1, DNS_LABEL, "port name (a DNS label: lower-case letters, digits, '-'; max 15)")


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and re.fullmatch(DNS_LABEL, value) is not None


@dataclass(frozen=True, slots=True)
class ServicePortSpec(Checked):
    """A port of the service: clients connect to `port`; traffic goes to container port `targetPort` of a replica
    (default: the same number). `name` (default: the container port's name) is what SRV records carry
    (`_<name>._tcp.<service>.<namespace>.svc.cloudless`)."""

    port: int = field(metadata=spec_field(PORT))
    target_port: int = field(default=0, metadata=spec_field(Int(0, 65535)))
    name: str = field(default="", metadata=spec_field(PORT_NAME))
    protocol: PortProtocol = field(default=PortProtocol.TCP, metadata=spec_field(Choice(PortProtocol)))

    @property
    def target(self) -> int:
        return self.target_port or self.port


@dataclass(frozen=True, slots=True)
class IngressSpec(Checked):
    """Publish service port `port` on `hostPort` (every interface) of the nodes named in `nodes` and/or matching
    `nodeSelector`; connections there are balanced to endpoints anywhere in the cluster, over the overlay."""

    port: int = field(metadata=spec_field(PORT))
    host_port: int = field(metadata=spec_field(PORT))
    nodes: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(NAME, 64)))
    node_selector: dict[str, str] = field(default_factory=dict, metadata=spec_field(MapOf(LABEL_KEY, LABEL_VALUE)))

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not self.nodes and not self.node_selector:
            yield "nodes", "name the nodes to publish on (nodes: [...]) or select them (nodeSelector: {...})"


@dataclass(frozen=True, slots=True)
class ServiceSpec(Checked):
    """The service this workload's ready replicas are endpoints of."""

    name: str = field(default="", metadata=spec_field(SERVICE_NAME))
    ports: tuple[ServicePortSpec, ...] = field(default=(), metadata=spec_field(ListOf(Obj(ServicePortSpec), 64)))
    weight: int = field(default=1, metadata=spec_field(Int(1, 100)))
    ingress: tuple[IngressSpec, ...] = field(default=(), metadata=spec_field(ListOf(Obj(IngressSpec), 16)))


def service_problems(service: ServiceSpec, *, workload: str, namespace: str,
                     container_ports: list[tuple[int, PortProtocol]]) -> Iterator[tuple[str, str]]:
    """The cross-field rules between `spec.service` and the rest of the document (paths relative to the document)."""
    if not service.name and not is_dns_label(workload):
        yield "spec.service.name", (f"the workload name {workload!r} is not a DNS label (lower-case letters, digits, "
                                    "'-'): name the service")
    if not is_dns_label(namespace):
        yield "metadata.namespace", (f"{namespace!r} is not a DNS label (lower-case letters, digits, '-'): a "
                                     "service's name includes its namespace")
    if not service.ports and not container_ports:
        yield "spec.service", "the workload declares no ports (spec.ports) for the service to carry"
    declared = set(container_ports)
    seen: dict[tuple[int, PortProtocol], int] = {}
    names: dict[str, int] = {}
    for i, p in enumerate(service.ports):
        if (p.target, p.protocol) not in declared:
            yield (f"spec.service.ports[{i}].targetPort",
                   f"{p.target}/{p.protocol} is not one of spec.ports (declare it there as a containerPort)")
        if (p.port, p.protocol) in seen:
            yield f"spec.service.ports[{i}].port", f"duplicate service port {p.port}/{p.protocol}"
        seen[(p.port, p.protocol)] = i
        if p.name and p.name in names:
            yield f"spec.service.ports[{i}].name", f"duplicate port name {p.name!r}"
        names[p.name] = i
    ports = {p for p, _ in seen} if service.ports else {p for p, _ in container_ports}
    host_ports: set[int] = set()
    for i, ing in enumerate(service.ingress):
        if ing.port not in ports:
            yield f"spec.service.ingress[{i}].port", f"{ing.port} is not a port of the service ({sorted(ports)})"
        if ing.host_port in host_ports:
            yield f"spec.service.ingress[{i}].hostPort", f"duplicate hostPort {ing.host_port}"
        host_ports.add(ing.host_port)
