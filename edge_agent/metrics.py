"""The agent's Prometheus metrics: a pure renderer of the text exposition format and a tiny loopback listener.

Why not prometheus-client here (the coordinator uses it): importing it costs the agent ~10.5 MiB RSS, a third of
its budget on a 512 MB device. The agent's metrics are few and simple, so it writes the text exposition format
0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/) itself; a test parses the output with
prometheus-client's own parser.

The listener is off or loopback-only by default (phones: off — see `default_listen`): metrics describe the owner's
device and are not meant for the network unless the operator says so (`--metrics-listen 0.0.0.0:9471`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from broker.wire import Heartbeat, ReplicaSpec
from edge_agent.errors import ConfigError
from edge_agent.runtime.base import Instance, InstanceState

log = logging.getLogger(__name__)
DEFAULT_PORT = 9471
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 8  # served at once; more are closed at once (Prometheus scrapes one at a time)


@dataclass
class Counters:
    """Event counters the agent increments as things happen (the rest is read at scrape time)."""

    mqtt_connects: int = 0  # successful (re)connections; reconnects = connects - 1
    probe_failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (replica, liveness|readiness)
    state_write_errors: int = 0

    def probe_failed(self, replica_id: str, kind: str) -> None:
        key = (replica_id, kind)
        self.probe_failures[key] = self.probe_failures.get(key, 0) + 1

    def forget_replicas_except(self, replica_ids: set[str]) -> None:
        """Drop the counters of replicas this node no longer runs (the map would grow with every replica ever)."""
        for key in [k for k in self.probe_failures if k[0] not in replica_ids]:
            del self.probe_failures[key]


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    replica_id: str
    running: bool
    ready: bool
    restarts: int
    cpu_percent: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceSample:
    """One service's counters as the agent's service proxy keeps them (edge_agent.services)."""

    service: str
    namespace: str
    connections: Mapping[str, int]  # by locality tier: node, zone, any
    active: int = 0
    bytes_out: int = 0  # client -> endpoint
    bytes_in: int = 0  # endpoint -> client
    connect_failures: int = 0
    no_endpoint: int = 0
    bind_failures: int = 0
    served: int = 0  # connections from other nodes to a replica here
    udp_flows: int = 0  # UDP flows opened (client side)
    udp_dropped: int = 0  # datagrams dropped (too large, no endpoint, a flow limit)
    udp_refused: int = 0  # UDP flows not opened: a flow limit was reached


@dataclass(frozen=True, slots=True)
class ServiceSamples:
    """What the agent's service proxy reports (edge_agent.services): per service, and for the node while it runs."""

    per_service: tuple[ServiceSample, ...] = ()
    running: bool = False  # the node-wide values below are reported only while the proxy runs
    dns_queries: Mapping[str, int] = field(default_factory=dict)  # by outcome: answered, forwarded, failed
    dns_bind_failures: int = 0  # resolvers that could not be bound in a workload's namespace
    udp_flows_open: int = 0
    problems: int = 0  # what the last table applied here left out (an ingress port not bound, a VIP taken)


@dataclass(frozen=True, slots=True)
class StorageSample:
    """The node's share of the object store (edge_agent.storage); absent when it offers none."""

    quota_bytes: int
    used_bytes: int
    chunks: int
    corrupt_listed: int  # corrupt chunks the status reports now
    scrub_passes: int  # full passes finished since the agent started
    scrub_checked: int  # chunks re-hashed, all passes
    scrub_bytes: int
    scrub_corrupt: int  # corrupt (or unreadable) copies the scrub found and removed
    scrub_progress: float  # how far the current pass is, 0-1 (chunk ids are uniform hashes: the position says it)
    buffered_bytes: int  # chunk bytes the chunk server's requests hold now
    busy_refused: int  # requests answered busy: the node-wide buffer was full


@dataclass(frozen=True, slots=True)
class Sample:
    """Everything one scrape reports (built by the agent, rendered here)."""

    node_id: str
    profile: str
    runtime: str
    cpu_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    battery_percent: float | None
    charging: bool | None
    temperatures_c: Mapping[str, float]
    schedulable: bool
    mqtt_connected: bool
    replicas: tuple[ReplicaSample, ...]
    counters: Counters
    state_writes: int
    desired_generation: int | None
    desired_epoch: int | None
    services: ServiceSamples = ServiceSamples()
    storage: StorageSample | None = None


def replica_samples(wanted: Sequence[ReplicaSpec], instances: Sequence[Instance], ready: Mapping[str, bool],
                    restarts: Mapping[str, int], heartbeat: Heartbeat | None) -> tuple[ReplicaSample, ...]:
    """One sample per wanted replica: running, ready (without a verdict yet: running and no readiness probe),
    restarts, and its usage as of the last heartbeat."""
    usage = {u.replica_id: u for u in heartbeat.replicas} if heartbeat else {}
    running = {i.replica_id for i in instances if i.state is InstanceState.RUNNING}
    return tuple(
        ReplicaSample(replica_id=s.replica_id, running=s.replica_id in running,
                      ready=ready.get(s.replica_id, s.replica_id in running and s.readiness is None),
                      restarts=restarts.get(s.replica_id, 0),
                      cpu_percent=usage[s.replica_id].cpu_percent if s.replica_id in usage else None,
                      memory_bytes=usage[s.replica_id].memory_bytes if s.replica_id in usage else None)
        for s in wanted)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str,
               samples: Iterable[tuple[Mapping[str, str], float | None]]) -> None:
        rows = [(labels, v) for labels, v in samples if v is not None]
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, v in rows:
            assert v is not None
            lbl = ",".join(f'{k}="{_esc(val)}"' for k, val in labels.items())
            self.lines.append(f"{name}{{{lbl}}} {_num(v)}" if lbl else f"{name} {_num(v)}")


def render(s: Sample) -> str:
    """The text exposition of one sample (pure)."""
    d = _Doc()
    one: Mapping[str, str] = {}
    d.family("cloudless_agent_info", "gauge", "Constant 1, labelled with the node's identity",
             [({"node": s.node_id, "profile": s.profile, "runtime": s.runtime}, 1)])
    d.family("cloudless_agent_cpu_usage_percent", "gauge", "Whole-device CPU use (all cores = 100)",
             [(one, s.cpu_percent)])
    d.family("cloudless_agent_memory_used_bytes", "gauge", "Device memory in use", [(one, s.memory_used_bytes)])
    d.family("cloudless_agent_memory_total_bytes", "gauge", "Device memory", [(one, s.memory_total_bytes)])
    d.family("cloudless_agent_battery_percent", "gauge", "Battery charge (absent without a battery)",
             [(one, s.battery_percent)])
    d.family("cloudless_agent_battery_charging", "gauge", "1 while on the charger",
             [(one, None if s.charging is None else float(s.charging))])
    d.family("cloudless_agent_temperature_celsius", "gauge", "Temperature sensors",
             [({"sensor": k}, v) for k, v in sorted(s.temperatures_c.items())])
    d.family("cloudless_agent_schedulable", "gauge", "1 when no gate (battery, heat) holds work back",
             [(one, float(s.schedulable))])
    d.family("cloudless_agent_mqtt_connected", "gauge", "1 while connected to the broker",
             [(one, float(s.mqtt_connected))])
    d.family("cloudless_agent_mqtt_reconnects_total", "counter", "Broker reconnections after the first connection",
             [(one, max(0, s.counters.mqtt_connects - 1))])
    d.family("cloudless_agent_local_state_writes_total", "counter", "Atomic writes of the local state files",
             [(one, s.state_writes)])
    d.family("cloudless_agent_local_state_write_errors_total", "counter", "Local state writes that failed",
             [(one, s.counters.state_write_errors)])
    d.family("cloudless_agent_desired_generation", "gauge", "Generation of the desired state being applied",
             [(one, s.desired_generation)])
    d.family("cloudless_agent_desired_epoch", "gauge", "Leadership epoch of the desired state being applied",
             [(one, s.desired_epoch)])
    reps = sorted(s.replicas, key=lambda r: r.replica_id)
    d.family("cloudless_agent_replicas", "gauge", "Replicas this node should run, by state",
             [({"state": st}, sum(1 for r in reps if (r.running and r.ready, r.running) == key))
              for st, key in (("ready", (True, True)), ("running", (False, True)), ("stopped", (False, False)))])
    d.family("cloudless_agent_replica_restarts_total", "counter", "Restarts the agent performed, per replica",
             [({"replica": r.replica_id}, r.restarts) for r in reps])
    d.family("cloudless_agent_replica_cpu_usage_percent", "gauge", "Replica CPU use (one core = 100)",
             [({"replica": r.replica_id}, r.cpu_percent) for r in reps])
    d.family("cloudless_agent_replica_memory_bytes", "gauge", "Replica memory use",
             [({"replica": r.replica_id}, r.memory_bytes) for r in reps])
    d.family("cloudless_agent_probe_failures_total", "counter", "Failed health probes, per replica and probe",
             [({"replica": rid, "probe": kind}, n) for (rid, kind), n in sorted(s.counters.probe_failures.items())])
    _services(d, s.services)
    _storage(d, s.storage)
    return "\n".join(d.lines) + "\n"


def _storage(d: _Doc, st: StorageSample | None) -> None:
    one: Mapping[str, str] = {}

    def row(value: float | None) -> list[tuple[Mapping[str, str], float | None]]:
        return [(one, value if st is not None else None)]

    d.family("cloudless_agent_storage_quota_bytes", "gauge", "Disk space this node offers the object store",
             row(st.quota_bytes if st else None))
    d.family("cloudless_agent_storage_used_bytes", "gauge", "Bytes the chunks held here take",
             row(st.used_bytes if st else None))
    d.family("cloudless_agent_storage_chunks", "gauge", "Chunks held here", row(st.chunks if st else None))
    d.family("cloudless_agent_storage_corrupt_reported", "gauge",
             "Chunks found corrupt here that the node's status reports (until stored here again)",
             row(st.corrupt_listed if st else None))
    d.family("cloudless_agent_storage_scrub_passes_total", "counter", "Full scrub passes finished",
             row(st.scrub_passes if st else None))
    d.family("cloudless_agent_storage_scrub_checked_total", "counter", "Chunks the scrub re-hashed",
             row(st.scrub_checked if st else None))
    d.family("cloudless_agent_storage_scrub_read_bytes_total", "counter", "Bytes the scrub read",
             row(st.scrub_bytes if st else None))
    d.family("cloudless_agent_storage_scrub_corrupt_total", "counter",
             "Corrupt or unreadable copies the scrub found (and removed)", row(st.scrub_corrupt if st else None))
    d.family("cloudless_agent_storage_scrub_progress_ratio", "gauge", "How far the current scrub pass is (0-1)",
             row(st.scrub_progress if st else None))
    d.family("cloudless_agent_storage_buffered_bytes", "gauge",
             "Chunk bytes the chunk server's requests hold in memory now", row(st.buffered_bytes if st else None))
    d.family("cloudless_agent_storage_busy_total", "counter",
             "Chunk requests answered busy because the node-wide buffer was full", row(st.busy_refused if st else None))


def _services(d: _Doc, report: ServiceSamples) -> None:
    services = report.per_service

    def who(v: ServiceSample, **more: str) -> dict[str, str]:
        return {"service": v.service, "namespace": v.namespace, **more}

    d.family("cloudless_service_connections_total", "counter",
             "Client connections balanced to an endpoint, by locality tier (node, zone, any)",
             [(who(v, tier=tier), n) for v in services for tier, n in sorted(v.connections.items())])
    d.family("cloudless_service_active_connections", "gauge", "Client connections open now",
             [(who(v), v.active) for v in services])
    d.family("cloudless_service_bytes_total", "counter", "Bytes through the service proxy (out: client to endpoint)",
             [(who(v, direction=k), n) for v in services for k, n in (("out", v.bytes_out), ("in", v.bytes_in))])
    d.family("cloudless_service_failures_total", "counter",
             "connect: an endpoint refused or timed out (another was tried); no_endpoint: a client closed with "
             "nothing to try; bind: a listener that could not be bound in a workload's namespace; udp_dropped: a "
             "datagram dropped (too large, no endpoint, a flow limit); udp_flow_limit: a UDP flow not opened (the "
             "node's or its source's flow limit)",
             [(who(v, kind=k), n) for v in services
              for k, n in (("connect", v.connect_failures), ("no_endpoint", v.no_endpoint), ("bind", v.bind_failures),
                           ("udp_dropped", v.udp_dropped), ("udp_flow_limit", v.udp_refused))])
    d.family("cloudless_service_served_total", "counter", "Connections from other nodes to a replica on this node",
             [(who(v), v.served) for v in services])
    d.family("cloudless_service_udp_flows_total", "counter", "UDP flows opened by clients of the service",
             [(who(v), v.udp_flows) for v in services])
    node: Mapping[str, str] = {}
    on = report.running
    d.family("cloudless_service_dns_queries_total", "counter",
             "Queries the workloads' resolvers took, by outcome (answered: a service name; forwarded: upstream "
             "answered; failed: malformed, or no upstream answered)",
             [({"outcome": k}, n) for k, n in sorted(report.dns_queries.items())] if on else [])
    d.family("cloudless_service_dns_bind_failures_total", "counter",
             "Resolvers that could not be bound in a workload's namespace (127.0.0.1:53 taken)",
             [(node, report.dns_bind_failures if on else None)])
    d.family("cloudless_service_udp_flows_open", "gauge", "UDP flows open now (client and served)",
             [(node, report.udp_flows_open if on else None)])
    d.family("cloudless_service_table_problems", "gauge",
             "What the last service table applied here left out (an ingress port not bound, a VIP taken): the "
             "agent's log says what",
             [(node, report.problems if on else None)])


# ---- listener (adapter) -----------------------------------------------------------------------------------------

def default_listen(*, phone: bool) -> str:
    """Loopback by default; off on phones (battery and privacy: nothing listens unless asked)."""
    return "off" if phone else f"127.0.0.1:{DEFAULT_PORT}"


def parse_listen(text: str) -> tuple[str, int] | None:
    """`off`, `HOST:PORT` or `[V6]:PORT` -> (host, port) or None; errors name the flag."""
    text = text.strip()
    if text.lower() == "off":
        return None
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ConfigError(f"--metrics-listen: expected HOST:PORT or off, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--metrics-listen: bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-listen: port {port} out of range 0..65535")
    return host, port


class MetricsListener:
    """A minimal HTTP/1.0 server: GET /metrics answers the exposition, anything else 404/405; one request per
    connection, bounded request size and read time, so a stray client can neither hang nor grow the agent."""

    def __init__(self, render_now: Callable[[], str]) -> None:
        self._render = render_now
        self._server: asyncio.Server | None = None
        self._open = 0
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        self.host = host
        sock = self._server.sockets[0] if self._server.sockets else None
        self.port = int(sock.getsockname()[1]) if sock is not None else port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:  # a flood of idle connections costs at most this many handlers
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if path != "/metrics":
                status, body, ctype = "404 Not Found", b"only /metrics is served here\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
            else:
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                body = self._render().encode()
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            async with asyncio.timeout(READ_TIMEOUT_S):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
