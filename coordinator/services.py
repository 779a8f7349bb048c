"""Services as the coordinator keeps them (pure core): which services exist, their stable virtual addresses, their
endpoints and their health, the table each node is sent, the overlay pairs they need, and what changed.

Theory of operation.
- **Services.** A workload with `spec.service` backs the service it names (default: its own name) in its
  namespace. Several workloads may back one service (a canary with weights); they must declare the same service
  ports, else the later ones (by workload key) are left out with a reason (`ServiceView.problems`).
- **Virtual addresses.** Each service gets one address from `VIP_NETWORK` (inside 127.0.0.0/8: it is local in every
  network namespace, so a workload's own namespace can hold a listener on it without root). The address is chosen
  once (a hash of the name, then the next free one) and kept — in the store, by the engine — while the service
  exists; `allocate` never moves an existing one.
- **Endpoints.** Every replica of a backing workload is listed with its health: an endpoint is *ready* when the
  replica is assigned, its node is online, and the node reports it ready with the current spec. Only ready
  endpoints go to the nodes (readiness gates membership); `get`/`describe` show all with the reason.
- **Tables.** A node's table holds every service of every namespace it runs replicas of, and the services it
  publishes as ingress (with the host ports, only in that node's table). Nodes that run nothing get an empty table.
- **Overlay.** A node needs an overlay connection to every other node that holds a ready endpoint of a service in
  its table (`pairs`); the engine hands these to coordinator.overlay as derived wants.
- **Changes.** `endpoint_changes(before, after)` lists endpoints that became ready or went away, as events.
- **Built-in services** (`Builtin`: the S3 gateway as `s3.cloudless`) are served by overlay members of the
  coordinator (`s3@<coordinator id>`), not by workloads: they get an address like any service, their endpoints are
  those members (always ready while registered), and they go into the table of every node that runs replicas (a
  workload of any namespace may use them), so those nodes are paired with the members. A workload that names the
  same service is left out with a reason.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from broker.wire import IngressPort, ServiceEndpoint, ServicePort, ServiceRecord
from coordinator.spec_service import ServiceSpec

VIP_NETWORK: Final = ipaddress.IPv4Network("127.77.0.0/16")
DOMAIN: Final = "svc.cloudless"
BUILTIN_NAMESPACE: Final = "cloudless"  # the built-in services' namespace (s3.cloudless); no workload may use it
MAX_SERVICES_PER_TABLE = 1024  # what one ServiceTable carries (wire cap)
MAX_ENDPOINTS = 1024  # per service record (wire cap)

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Backing:
    """One workload behind a service, as its current document says."""

    workload: str  # namespace/name
    namespace: str
    service: str
    weight: int
    ports: tuple[ServicePort, ...]
    ingress: tuple[tuple[int, int, tuple[str, ...], tuple[tuple[str, str], ...]], ...] = ()  # port, hostPort,
    # nodes, selector items


@dataclass(frozen=True, slots=True)
class Builtin:
    """A service the coordinator's own members serve (see the module docstring)."""

    ports: tuple[ServicePort, ...]
    members: tuple[str, ...]  # overlay members, e.g. "s3@<coordinator id>"


BUILTIN_REPLICA = "builtin"  # the replica name of a built-in service's endpoints


@dataclass(frozen=True, slots=True)
class ReplicaFacts:
    """What the engine knows of one replica of a backing workload."""

    replica: str
    workload: str  # namespace/name
    node: str | None
    ready: bool  # assigned, and its node reports it ready with the current spec
    node_online: bool


@dataclass(frozen=True, slots=True)
class EndpointView:
    node: str
    replica: str
    workload: str
    zone: str
    weight: int
    ready: bool
    reason: str = ""  # why not ready


@dataclass(frozen=True, slots=True)
class ServiceView:
    namespace: str
    name: str
    vip: str
    ports: tuple[ServicePort, ...]
    workloads: tuple[str, ...]
    endpoints: tuple[EndpointView, ...]
    ingress: tuple[tuple[int, int, tuple[str, ...]], ...] = ()  # (port, hostPort, nodes it is published on)
    problems: tuple[str, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.{DOMAIN}"

    def ready(self) -> tuple[EndpointView, ...]:
        return tuple(e for e in self.endpoints if e.ready)

    def record(self, ingress: tuple[IngressPort, ...] = ()) -> ServiceRecord:
        return ServiceRecord(name=self.name, namespace=self.namespace, vip=self.vip, ports=self.ports,
                             endpoints=tuple(ServiceEndpoint(e.node, e.replica, zone=e.zone, weight=e.weight)
                                             for e in self.ready()[:MAX_ENDPOINTS]),
                             ingress=ingress)


@dataclass(frozen=True, slots=True)
class EndpointEvent:
    namespace: str
    service: str
    replica: str
    node: str
    ready: bool  # True: became an endpoint; False: left
    remaining: int  # ready endpoints after the change
    warning: bool
    message: str


def backing_of(workload: str, namespace: str, name: str, service: ServiceSpec,
               container_ports: Iterable[tuple[int, str, object]]) -> Backing:
    """A workload's service part as the registry uses it. `container_ports`: (containerPort, name, protocol)."""
    declared = list(container_ports)
    names = {(port, proto): pname for port, pname, proto in declared}
    if service.ports:
        ports = tuple(ServicePort(p.port, p.target, name=p.name or names.get((p.target, p.protocol), ""),
                                  protocol=p.protocol) for p in service.ports)
    else:
        ports = tuple(ServicePort(port, port, name=pname, protocol=proto)  # type: ignore[arg-type]
                      for port, pname, proto in declared)
    ingress = tuple((i.port, i.host_port, i.nodes, tuple(sorted(i.node_selector.items()))) for i in service.ingress)
    return Backing(workload=workload, namespace=namespace, service=service.name or name, weight=service.weight,
                   ports=ports, ingress=ingress)


def group(backings: Iterable[Backing]) -> tuple[dict[ServiceKey, list[Backing]], dict[ServiceKey, list[str]]]:
    """Backings per service, in workload order; a backing whose ports differ from the service's first one is left
    out with a reason."""
    out: dict[ServiceKey, list[Backing]] = {}
    problems: dict[ServiceKey, list[str]] = {}
    for b in sorted(backings, key=lambda b: b.workload):
        key = (b.namespace, b.service)
        first = out.get(key)
        if first and sorted(first[0].ports, key=_port_key) != sorted(b.ports, key=_port_key):
            problems.setdefault(key, []).append(
                f"workload {b.workload} is left out: its service ports differ from {first[0].workload}'s "
                f"({_ports_text(b.ports)} vs {_ports_text(first[0].ports)})")
            continue
        out.setdefault(key, []).append(b)
    return out, problems


def _port_key(p: ServicePort) -> tuple[int, str]:
    return (p.port, p.protocol.value)


def _ports_text(ports: Iterable[ServicePort]) -> str:
    return ", ".join(f"{p.port}/{p.protocol}" for p in sorted(ports, key=_port_key)) or "none"


# ---- virtual addresses -----------------------------------------------------------------------------------------


def vip_candidate(key: ServiceKey, attempt: int = 0) -> str:
    """The `attempt`-th address tried for a service: a hash of its name, skipping the network's first and last."""
    digest = hashlib.blake2b(f"{key[0]}/{key[1]}/{attempt}".encode(), digest_size=4).digest()
    usable = VIP_NETWORK.num_addresses - 2
    return str(VIP_NETWORK.network_address + 1 + int.from_bytes(digest, "big") % usable)


def valid_vip(value: str) -> bool:
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return addr in VIP_NETWORK and addr not in (VIP_NETWORK.network_address, VIP_NETWORK.broadcast_address)


def allocate(wanted: Iterable[ServiceKey], existing: Mapping[ServiceKey, str]) -> tuple[dict[ServiceKey, str],
                                                                                          dict[ServiceKey, str],
                                                                                          list[ServiceKey]]:
    """(every wanted service's address, the new ones, the services whose address is released). An existing address
    is never moved; a new one takes the first free candidate (never one released in the same call)."""
    wanted = sorted(set(wanted))
    keep = {k: v for k, v in existing.items() if k in set(wanted) and valid_vip(v)}
    taken = set(existing.values())  # an address released this round is not handed out again in the same one
    new: dict[ServiceKey, str] = {}
    for key in wanted:
        if key in keep:
            continue
        for attempt in range(VIP_NETWORK.num_addresses * 4):
            vip = vip_candidate(key, attempt)
            if vip not in taken:
                break
        else:  # 65,534 services in use: nothing is free (the API refuses to get here first)
            continue
        new[key] = vip
        taken.add(vip)
    released = sorted(k for k in existing if k not in keep)
    return {**keep, **new}, new, released


# ---- the registry -----------------------------------------------------------------------------------------------


@dataclass
class ServiceBook:
    """This round's services: built by `build`, read by the outbox (tables), the overlay (pairs), the API."""

    views: dict[ServiceKey, ServiceView] = field(default_factory=dict)
    by_namespace: dict[str, list[ServiceKey]] = field(default_factory=dict)
    ingress_at: dict[str, list[ServiceKey]] = field(default_factory=dict)  # node -> services it publishes
    builtin: list[ServiceKey] = field(default_factory=list)  # in the table of every node that runs replicas
    # each service's record without ingress, built once a round and shared by every table that carries it (a
    # round builds thousands of tables on a big fleet: O(tables + services), not O(tables x endpoints))
    _plain: dict[ServiceKey, ServiceRecord] = field(default_factory=dict, repr=False, compare=False)

    def table(self, node_id: str, namespaces: Iterable[str]) -> tuple[ServiceRecord, ...]:
        """The records `node_id` is sent: the services of `namespaces`, and those it publishes as ingress."""
        keys: set[ServiceKey] = set()
        runs_replicas = False
        for ns in namespaces:
            runs_replicas = True
            keys.update(self.by_namespace.get(ns, ()))
        if runs_replicas:
            keys.update(self.builtin)
        published = set(self.ingress_at.get(node_id, ()))
        records = []
        for key in sorted(keys | published):
            view = self.views[key]
            if key in published:
                records.append(view.record(ingress_of(view, node_id)))
            else:
                plain = self._plain.get(key)
                if plain is None:
                    plain = self._plain[key] = view.record()
                records.append(plain)
            if len(records) >= MAX_SERVICES_PER_TABLE:
                break
        return tuple(records)


def build(groups: Mapping[ServiceKey, list[Backing]], problems: Mapping[ServiceKey, list[str]],
          vips: Mapping[ServiceKey, str], replicas: Iterable[ReplicaFacts], *, zone_of: Callable[[str], str],
          ingress_nodes: Callable[[Backing, tuple[str, ...], tuple[tuple[str, str], ...]], tuple[str, ...]],
          builtins: Mapping[ServiceKey, Builtin] | None = None) -> ServiceBook:
    """Every service with a virtual address, its endpoints (all replicas of its backing workloads, with health) and
    its ingress (the nodes each ingress rule selects); then the built-in ones, which replace a workload's service
    of the same name."""
    per_workload: dict[str, list[ReplicaFacts]] = {}
    for r in replicas:
        per_workload.setdefault(r.workload, []).append(r)
    book = ServiceBook()
    for key, backings in sorted(groups.items()):
        vip = vips.get(key)
        if vip is None:
            continue
        endpoints = []
        ingress: dict[tuple[int, int], set[str]] = {}
        for b in backings:
            for r in sorted(per_workload.get(b.workload, ()), key=lambda r: r.replica):
                if r.node is None:
                    continue
                reason = ("" if r.ready and r.node_online else "node not online" if not r.node_online
                          else "not ready")
                endpoints.append(EndpointView(node=r.node, replica=r.replica, workload=b.workload,
                                              zone=zone_of(r.node), weight=b.weight, ready=not reason, reason=reason))
            for port, host_port, nodes, selector in b.ingress:
                ingress.setdefault((port, host_port), set()).update(ingress_nodes(b, nodes, selector))
        view = ServiceView(namespace=key[0], name=key[1], vip=vip, ports=backings[0].ports,
                           workloads=tuple(b.workload for b in backings), endpoints=tuple(endpoints),
                           ingress=tuple((p, h, tuple(sorted(ns))) for (p, h), ns in sorted(ingress.items())),
                           problems=tuple(problems.get(key, ())))
        book.views[key] = view
        book.by_namespace.setdefault(key[0], []).append(key)
        for node in sorted({n for _p, _h, nodes in view.ingress for n in nodes}):
            book.ingress_at.setdefault(node, []).append(key)
    for key, builtin in sorted((builtins or {}).items()):
        _add_builtin(book, key, builtin, vips.get(key), groups.get(key, ()))
    return book


def _add_builtin(book: ServiceBook, key: ServiceKey, builtin: Builtin, vip: str | None,
                 shadowed: Iterable[Backing]) -> None:
    if vip is None:
        return
    problems = tuple(f"workload {b.workload} is left out: {key[1]}.{key[0]} is a built-in service"
                     for b in shadowed)
    old = book.views.get(key)
    if old is not None:  # a workload's service of that name: replaced (and no longer published as ingress)
        for node in {n for _p, _h, nodes in old.ingress for n in nodes}:
            book.ingress_at[node].remove(key)
    else:
        book.by_namespace.setdefault(key[0], []).append(key)
    book.views[key] = ServiceView(
        namespace=key[0], name=key[1], vip=vip, ports=builtin.ports, workloads=(),
        endpoints=tuple(EndpointView(node=m, replica=BUILTIN_REPLICA, workload="", zone="", weight=1, ready=True)
                        for m in builtin.members[:MAX_ENDPOINTS]),
        problems=problems)
    book.builtin.append(key)


def ingress_of(view: ServiceView, node_id: str) -> tuple[IngressPort, ...]:
    return tuple(IngressPort(port, host_port) for port, host_port, nodes in view.ingress if node_id in nodes)


def pairs(book: ServiceBook, tables: Mapping[str, tuple[ServiceRecord, ...]]) -> dict[tuple[str, str], str]:
    """Overlay pairs the services need: each node with every other node holding a ready endpoint in its table
    ({(a, b) ordered: why})."""
    out: dict[tuple[str, str], str] = {}
    for node_id, records in tables.items():
        for rec in records:
            for ep in rec.endpoints:
                if ep.node != node_id:
                    key = (node_id, ep.node) if node_id < ep.node else (ep.node, node_id)
                    out.setdefault(key, f"service {rec.name}.{rec.namespace}")
    return out


def endpoint_changes(before: ServiceBook | None, after: ServiceBook) -> list[EndpointEvent]:
    """Endpoints that became ready, or stopped being ready, between two rounds (the first round reports none:
    nothing changed, the coordinator only started)."""
    if before is None:
        return []
    events = []
    for key in sorted({*before.views, *after.views}):
        old = {e.replica: e for e in before.views[key].ready()} if key in before.views else {}
        new_view = after.views.get(key)
        new = {e.replica: e for e in new_view.ready()} if new_view is not None else {}
        all_eps = {e.replica: e for e in new_view.endpoints} if new_view is not None else {}
        ns, name = key
        for rid in sorted(new.keys() - old.keys()):
            e = new[rid]
            events.append(EndpointEvent(ns, name, rid, e.node, True, len(new), False,
                                        f"endpoint {rid} on {e.node} ready ({len(new)} ready)"))
        for rid in sorted(old.keys() - new.keys()):
            e = old[rid]
            why = all_eps[rid].reason if rid in all_eps else "replica gone"
            events.append(EndpointEvent(ns, name, rid, e.node, False, len(new), not new,
                                        f"endpoint {rid} on {e.node} removed ({why}); {len(new)} ready"
                                        + ("; the service has no ready endpoint: connections are refused"
                                           if not new else "")))
    return events
