"""What the service proxy decides (pure core): reading a node's ServiceTable, which listeners a workload needs, which
endpoints came and went, whether a peer may reach a local replica, the environment of a process workload, and the
bytes the proxy speaks to its peers over the overlay.

Built-in services (namespace `cloudless`; today `s3.cloudless`, the cluster's S3 gateways) are visible to workloads
of every namespace (`visible`); their endpoints are overlay members of a coordinator ("s3@<coordinator id>"), which
the proxy dials like any other node. A node that does not serve them drops them from its table (`without_builtins`).

Peer format (ours, inside an overlay stream to the `svc` service or an overlay datagram to `svc-udp`):

- A stream starts with `VERSION, len(body)` and the body: namespace, service, replica (each one length byte and the
  ASCII id) and the target port (2 bytes, big endian). The serving side answers `OK`, or `REFUSED, len, reason`.
  After `OK` the stream carries the connection's bytes both ways.
- A datagram is `VERSION, kind, flow id (8 bytes)`, then for `UDP_REQUEST` one length byte and the same body, then
  the payload; for `UDP_REPLY` just the payload. The flow id (the client side's, random) ties replies to the client.

The serving side admits a target only when its own table lists that replica, on this node, as an endpoint of that
service and the port as one of the service's target ports: a peer cannot use the overlay to reach an arbitrary
local port, and a replica that stopped being ready takes no new connections (its open ones carry on).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from broker.wire import Protocol, ServicePort, ServiceRecord, ServiceTable, valid_id
from dataplane.balance import TIERS
from dataplane.dns import vip_problem

STREAM_SERVICE = "svc"  # overlay service names (dataplane.overlay)
# Built-in services live in this namespace and are served to workloads of every namespace (`s3.cloudless`: the S3
# gateways, whose endpoints are coordinator members such as "s3@<coordinator id>", not nodes).
BUILTIN_NAMESPACE = "cloudless"
S3_SERVICE: tuple[str, str] = (BUILTIN_NAMESPACE, "s3")
S3_PORT = 80
DATAGRAM_SERVICE = "svc-udp"
VERSION = 1
OK, REFUSED = 0, 1
MAX_REASON = 200
UDP_REQUEST, UDP_REPLY = 0, 1
FLOW_ID = struct.Struct("!Q")

ServiceKey = tuple[str, str]  # (namespace, name)
ListenKey = tuple[str, int, Protocol]  # (ip, port, protocol) a listener is bound to


@dataclass(frozen=True, slots=True)
class Target:
    """What a peer asks the serving node to connect to."""

    namespace: str
    service: str
    replica: str
    target_port: int


@dataclass(frozen=True, slots=True)
class EndpointChange:
    namespace: str
    service: str
    node: str
    replica: str


@dataclass(frozen=True, slots=True)
class View:
    """A ServiceTable as read: the usable services by (namespace, name), this node's zone, what was left out."""

    services: Mapping[ServiceKey, ServiceRecord] = field(default_factory=dict)
    zone: str = ""
    problems: tuple[str, ...] = ()


def read_table(table: ServiceTable, node_id: str) -> View:
    """The services of `table` the proxy can serve; a service with a bad or taken virtual address, a port taken twice,
    or an ingress host port taken twice is left out (or that port is), with the reason in `problems`."""
    problems: list[str] = []
    if table.node_id != node_id:
        return View(problems=(f"a service table for {table.node_id!r}, this node is {node_id!r}: ignored",))
    services: dict[ServiceKey, ServiceRecord] = {}
    vips: dict[str, ServiceKey] = {}
    host_ports: set[tuple[int, Protocol]] = set()
    for record in table.services:
        key = (record.namespace, record.name)
        where = f"service {record.namespace}/{record.name}"
        if (problem := vip_problem(record.vip)) is not None:
            problems.append(f"{where}: {problem}")
            continue
        if key in services:
            problems.append(f"{where}: listed twice")
            continue
        if record.vip in vips:
            problems.append(f"{where}: vip {record.vip} is taken by {'/'.join(vips[record.vip])}")
            continue
        ports = _unique_ports(record, where, problems)
        ingress = []
        for entry in record.ingress:
            port = next((p for p in ports if p.port == entry.port), None)
            if port is None or (entry.host_port, port.protocol) in host_ports:
                problems.append(f"{where}: ingress host port {entry.host_port} for port {entry.port}: "
                                f"{'no such port' if port is None else 'host port taken'}")
                continue
            host_ports.add((entry.host_port, port.protocol))
            ingress.append(entry)
        services[key] = ServiceRecord(name=record.name, namespace=record.namespace, vip=record.vip,
                                      ports=tuple(ports), endpoints=record.endpoints, ingress=tuple(ingress))
        vips[record.vip] = key
    return View(services, table.zone, tuple(problems))


def _unique_ports(record: ServiceRecord, where: str, problems: list[str]) -> list[ServicePort]:
    seen: set[tuple[int, Protocol]] = set()
    ports = []
    for port in record.ports:
        if (port.port, port.protocol) in seen:
            problems.append(f"{where}: port {port.port}/{port.protocol} listed twice")
            continue
        seen.add((port.port, port.protocol))
        ports.append(port)
    return ports


def visible(key: ServiceKey, namespace: str) -> bool:
    """A workload of `namespace` sees the services of its namespace and the built-in ones."""
    return key[0] == namespace or key[0] == BUILTIN_NAMESPACE


def listeners_for(view: View, namespace: str) -> dict[ListenKey, tuple[ServiceKey, int]]:
    """The (vip, port, protocol) listeners a workload of `namespace` needs -> (service, service port)."""
    return {(record.vip, port.port, port.protocol): (key, port.port)
            for key, record in view.services.items() if visible(key, namespace) for port in record.ports}


def without_builtins(table: ServiceTable) -> ServiceTable:
    """`table` without the built-in services (an agent that does not serve them: `--no-s3-endpoint`)."""
    kept = tuple(r for r in table.services if r.namespace != BUILTIN_NAMESPACE)
    return table if len(kept) == len(table.services) else replace(table, services=kept)


def s3_env(local_port: Mapping[tuple[ServiceKey, int, Protocol], int]) -> dict[str, str]:
    """For a process workload: `AWS_ENDPOINT_URL_S3` at the host-loopback listener of `s3.cloudless` (boto3 and the
    AWS CLI prefer it to `AWS_ENDPOINT_URL`, which a storage secret sets to `http://s3.cloudless`: a name only
    containers resolve)."""
    port = local_port.get((S3_SERVICE, S3_PORT, Protocol.TCP))
    return {} if port is None else {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}


def ingress_for(view: View, host: str) -> dict[ListenKey, tuple[ServiceKey, int]]:
    """The host-port listeners this node publishes -> (service, service port)."""
    wanted: dict[ListenKey, tuple[ServiceKey, int]] = {}
    for key, record in view.services.items():
        for entry in record.ingress:
            for port in record.ports:
                if port.port == entry.port:
                    wanted[(host, entry.host_port, port.protocol)] = (key, port.port)
    return wanted


def endpoint_changes(before: View, after: View) -> tuple[tuple[EndpointChange, ...], tuple[EndpointChange, ...]]:
    """(added, removed) endpoints between two views, for events."""
    def endpoints(view: View) -> set[EndpointChange]:
        return {EndpointChange(ns, name, e.node, e.replica)
                for (ns, name), record in view.services.items() for e in record.endpoints}
    old, new = endpoints(before), endpoints(after)
    return tuple(sorted(new - old, key=_order)), tuple(sorted(old - new, key=_order))


def _order(change: EndpointChange) -> tuple[str, str, str, str]:
    return (change.namespace, change.service, change.node, change.replica)


def admit(view: View, target: Target, node_id: str, protocol: Protocol) -> str | None:
    """Why a peer may not reach `target` on this node (None: it may); see the module docstring."""
    record = view.services.get((target.namespace, target.service))
    if record is None:
        return f"no service {target.namespace}/{target.service} on {node_id}"
    if not any(e.node == node_id and e.replica == target.replica for e in record.endpoints):
        return f"{target.replica} is not a ready endpoint of {target.namespace}/{target.service} on {node_id}"
    if not any(p.target_port == target.target_port and p.protocol == protocol for p in record.ports):
        return f"port {target.target_port}/{protocol} is not a target port of {target.namespace}/{target.service}"
    return None


def env_name(service: str) -> str:
    return service.upper().replace("-", "_").replace(".", "_")


def env_vars(records: Iterable[ServiceRecord], local_port: Mapping[tuple[ServiceKey, int, Protocol], int]
             ) -> dict[str, str]:
    """Kubernetes-style variables for a process workload: `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT` (the first
    port) and `<SVC>_SERVICE_PORT_<NAME>` for named ports, pointing at the proxy's host-loopback listeners."""
    env: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.name):
        name = env_name(record.name)
        ports = [(p, local_port.get(((record.namespace, record.name), p.port, p.protocol))) for p in record.ports]
        ports = [(p, local) for p, local in ports if local is not None]
        if not ports:
            continue
        env[f"{name}_SERVICE_HOST"] = "127.0.0.1"
        env[f"{name}_SERVICE_PORT"] = str(ports[0][1])
        for port, local in ports:
            if port.name:
                env[f"{name}_SERVICE_PORT_{env_name(port.name)}"] = str(local)
    return env


# ---- the peer format ---------------------------------------------------------------------------------------------

def encode_target(target: Target) -> bytes:
    """The body naming `target` (ValueError for a name that is no id: the caller's table was checked)."""
    body = b""
    for part in (target.namespace, target.service, target.replica):
        if not valid_id(part):
            raise ValueError(f"{part[:80]!r} is not an id")
        body += bytes([len(part)]) + part.encode()
    return body + struct.pack("!H", target.target_port)


def stream_header(target: Target) -> bytes:
    body = encode_target(target)
    return bytes([VERSION, len(body)]) + body


def decode_target(body: bytes) -> Target | str:
    """The target a body names, or why it names none."""
    parts: list[str] = []
    offset = 0
    for field_name in ("namespace", "service", "replica"):
        if offset >= len(body) or offset + 1 + body[offset] > len(body):
            return f"the header ends inside {field_name}"
        raw = body[offset + 1:offset + 1 + body[offset]]
        offset += 1 + body[offset]
        text = raw.decode("ascii", errors="replace")
        if not valid_id(text):
            return f"{field_name} {text[:80]!r} is not an id"
        parts.append(text)
    if len(body) != offset + 2:
        return f"the header has {len(body) - offset} bytes where the 2-byte target port belongs"
    port = struct.unpack_from("!H", body, offset)[0]
    if port == 0:
        return "target port 0"
    return Target(parts[0], parts[1], parts[2], port)


def refusal(reason: str) -> bytes:
    raw = reason.encode()[:MAX_REASON]
    return bytes([REFUSED, len(raw)]) + raw


def udp_request(flow: int, target: Target, payload: bytes) -> bytes:
    body = encode_target(target)
    return bytes([VERSION, UDP_REQUEST]) + FLOW_ID.pack(flow) + bytes([len(body)]) + body + payload


def udp_reply(flow: int, payload: bytes) -> bytes:
    return bytes([VERSION, UDP_REPLY]) + FLOW_ID.pack(flow) + payload


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    kind: int
    flow: int
    target: Target | None  # for UDP_REQUEST
    payload: bytes


def decode_udp(data: bytes) -> UdpDatagram | str:
    """A peer's service datagram, or why it is not one."""
    if len(data) < 2 + FLOW_ID.size or data[0] != VERSION:
        return "not a service datagram (short or another version)"
    kind, (flow,) = data[1], FLOW_ID.unpack_from(data, 2)
    rest = data[2 + FLOW_ID.size:]
    if kind == UDP_REPLY:
        return UdpDatagram(kind, flow, None, rest)
    if kind != UDP_REQUEST or not rest or len(rest) < 1 + rest[0]:
        return f"datagram kind {kind} or its header is malformed"
    target = decode_target(rest[1:1 + rest[0]])
    if isinstance(target, str):
        return target
    return UdpDatagram(kind, flow, target, rest[1 + rest[0]:])


@dataclass
class Counters:
    """One service's counters as the proxy keeps them (mutable; ServiceProxy.stats() copies them)."""

    connections: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in TIERS})
    active: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    connect_failures: int = 0
    no_endpoint: int = 0
    served: int = 0
    bind_failures: int = 0
    udp_flows: int = 0
    udp_dropped: int = 0
    udp_refused: int = 0  # flows not opened: the proxy's flow limits were reached (dataplane.service_udp)

    def out(self, n: int) -> None:
        self.bytes_out += n

    def into(self, n: int) -> None:
        self.bytes_in += n
