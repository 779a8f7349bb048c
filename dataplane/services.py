"""The service proxy of one node (adapter): listeners where workloads connect to services, a connection balanced to
a ready endpoint (dataplane.balance) and spliced to it — on this node straight over TCP, on another node through an
overlay stream — and the serving end of those streams. Decisions are in dataplane.service_plan; names in
dataplane.dns (served by dataplane.service_dns); the TCP connection path in dataplane.service_tcp, UDP flows in
dataplane.service_udp.

Where clients connect:
- **attachments**: a workload's network namespace. The agent hands a `Binder` that binds sockets inside it; the
  proxy asks it for every service port of the workload's namespace at (vip, port) and for the resolver at
  127.0.0.1:53 (UDP and TCP), and serves them from this event loop (a socket keeps its namespace).
- **host loopback** (`env_for`): one listener per (namespace, service, port) on 127.0.0.1 at an ephemeral port,
  stable for the proxy's lifetime, for process workloads that only get environment variables.
- **ingress**: `ingress_host:host_port` for the services this node publishes.

`update(table)` takes effect for new connections at once. An open connection is never cut by an update: a removed
endpoint's connections finish (drain); a removed service's listeners close, its open connections carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from broker.wire import Protocol, ServiceRecord, ServiceTable
from dataplane.service_dns import DnsServer, Resolver
from dataplane.service_plan import (
    BUILTIN_NAMESPACE,
    DATAGRAM_SERVICE,
    STREAM_SERVICE,
    Counters,
    EndpointChange,
    ListenKey,
    ServiceKey,
    View,
    endpoint_changes,
    env_vars,
    ingress_for,
    listeners_for,
    read_table,
    s3_env,
    visible,
    without_builtins,
)
from dataplane.service_tcp import TcpPath
from dataplane.service_udp import MAX_FLOWS, MAX_FLOWS_PER_SOURCE, UdpFlows

if TYPE_CHECKING:  # the overlay needs aioquic; a node without it still serves same-node services
    from dataplane.overlay import Overlay

log = logging.getLogger(__name__)

DNS_PORT = 53
LocalEndpoint = Callable[[str, int, Protocol], tuple[str, int] | None]  # (replica, target port, protocol)


class BindRequest(NamedTuple):
    ip: str
    port: int
    protocol: Protocol


Binder = Callable[[list[BindRequest]], Awaitable[list[socket.socket | str]]]


@dataclass(frozen=True, slots=True)
class Applied:
    """What an update did: what was left out and why, and the endpoints that came and went (for events)."""

    problems: tuple[str, ...]
    added: tuple[EndpointChange, ...]
    removed: tuple[EndpointChange, ...]


@dataclass(frozen=True, slots=True)
class ServiceStats:
    connections: dict[str, int]  # by locality tier: node, zone, any
    active: int
    bytes_out: int  # client -> endpoint
    bytes_in: int  # endpoint -> client
    connect_failures: int  # an endpoint that did not take a connection (another was tried)
    no_endpoint: int  # clients closed: nothing (more) to try
    served: int  # connections from other nodes to a replica here
    bind_failures: int
    udp_flows: int  # UDP flows opened (client side)
    udp_dropped: int  # datagrams dropped (too large, no endpoint, no connection, a flow limit)
    udp_refused: int  # flows not opened: a flow limit (dataplane.service_udp) was reached


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """The node's proxy as a whole: its resolvers (every attachment's, since the proxy started), its UDP flows, and
    what the last table it applied left out."""

    dns_answered: int
    dns_forwarded: int
    dns_failed: int
    dns_bind_failures: int
    udp_flows_open: int
    problems: tuple[str, ...]


class _Listener(NamedTuple):
    route: tuple[ServiceKey, int]  # the service and its port this listener serves
    close: Callable[[], None]


@dataclass
class _Attachment:
    namespace: str
    binder: Binder
    # the ports the workload listens on itself: a listener of ours on VIP:port would collide with its own wildcard
    # bind (EADDRINUSE either way round), so those are left to it (docs/services.md: use `port` != a listened port)
    own: frozenset[tuple[int, Protocol]] = frozenset()
    listeners: dict[ListenKey, _Listener] = field(default_factory=dict)
    dns: DnsServer | None = None
    dns_bound: set[Protocol] = field(default_factory=set)


class ServiceProxy:
    def __init__(self, overlay: Overlay | None, *, node_id: str, local_endpoint: LocalEndpoint,
                 upstream_dns: Sequence[tuple[str, int]], rng: random.Random, clock: Callable[[], float],
                 ingress_host: str = "0.0.0.0", connect_timeout_s: float = 5.0, max_attempts: int = 3,
                 dns_timeout_s: float = 2.0, udp_idle_s: float = 60.0, udp_max_flows: int = MAX_FLOWS,
                 udp_max_flows_per_source: int = MAX_FLOWS_PER_SOURCE, builtins: bool = True) -> None:
        self.overlay = overlay
        self.builtins = builtins  # serve the built-in services (`s3.cloudless`) to this node's workloads
        self.node_id = node_id
        self.local_endpoint = local_endpoint
        self.upstream_dns = list(upstream_dns)
        self.rng = rng
        self.clock = clock
        self.ingress_host = ingress_host
        self.dns_timeout_s = dns_timeout_s
        self.view = View()
        self.dns_bind_failures = 0  # resolvers that could not be bound in a workload's namespace
        self.problems: tuple[str, ...] = ()  # what the last table applied left out (Applied.problems)
        self._dns_gone = (0, 0, 0)  # answered, forwarded, failed by the resolvers of detached attachments
        self._counters: dict[ServiceKey, Counters] = {}
        self._attachments: dict[str, _Attachment] = {}
        self._host: dict[tuple[ServiceKey, int, Protocol], tuple[int, _Listener]] = {}
        self._ingress: dict[ListenKey, _Listener] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.udp = UdpFlows(self, idle_s=udp_idle_s, max_flows=udp_max_flows,
                            max_per_source=udp_max_flows_per_source)
        self.tcp = TcpPath(self, connect_timeout_s=connect_timeout_s, max_attempts=max_attempts)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.overlay is not None:
            self.overlay.serve(STREAM_SERVICE, self.tcp.serve)
            self.overlay.on_datagram(DATAGRAM_SERVICE, self.udp.on_datagram)
        self.udp.start()

    async def stop(self) -> None:
        async with self._lock:
            for key in list(self._attachments):
                self._detach(key)
            for _port, listener in self._host.values():
                listener.close()
            for listener in self._ingress.values():
                listener.close()
            self._host.clear()
            self._ingress.clear()
        await self.udp.stop()
        tasks = [*self._tasks, *self.tcp.connections]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # ---- the table -----------------------------------------------------------------------------------------

    async def update(self, table: ServiceTable) -> Applied:
        """Make the proxy serve `table` (see the module docstring)."""
        view = read_table(table if self.builtins else without_builtins(table), self.node_id)
        if table.node_id != self.node_id:
            return Applied(view.problems, (), ())
        for problem in view.problems:
            log.warning("services: %s", problem)
        before, self.view = self.view, view  # new connections use it from now on, before any listener moves
        problems = list(view.problems)
        async with self._lock:
            if self.view is view:  # a later update that overtook this one while it waited has synced already
                problems += await self._sync_ingress()
                for attachment in list(self._attachments.values()):
                    await self._sync_attachment(attachment)
                self.problems = tuple(problems)
        added, removed = endpoint_changes(before, view)
        return Applied(tuple(problems), added, removed)

    def record(self, key: ServiceKey) -> ServiceRecord | None:
        return self.view.services.get(key)

    def counters(self, key: ServiceKey) -> Counters:
        return self._counters.setdefault(key, Counters())

    def stats(self) -> dict[str, ServiceStats]:
        """Per service ("<namespace>/<name>"): what its connections did since the proxy started."""
        return {f"{ns}/{name}": ServiceStats(dict(c.connections), c.active, c.bytes_out, c.bytes_in,
                                             c.connect_failures, c.no_endpoint, c.served, c.bind_failures,
                                             c.udp_flows, c.udp_dropped, c.udp_refused)
                for (ns, name), c in sorted(self._counters.items())}

    def proxy_stats(self) -> ProxyStats:
        """The node-wide counters (ProxyStats)."""
        answered, forwarded, failed = self._dns_gone
        for attachment in self._attachments.values():
            if attachment.dns is not None:
                resolver = attachment.dns.resolver
                answered, forwarded, failed = (answered + resolver.answered, forwarded + resolver.forwarded,
                                               failed + resolver.failed)
        return ProxyStats(answered, forwarded, failed, self.dns_bind_failures, self.udp.active(), self.problems)

    # ---- attachments (a workload's network namespace) ------------------------------------------------------

    async def attach(self, key: str, namespace: str, binder: Binder,
                     own: frozenset[tuple[int, Protocol]] = frozenset()) -> None:
        """Serve the services of `namespace` and the resolver inside a workload's network namespace (see above),
        leaving alone the ports the workload listens on itself (`own`)."""
        async with self._lock:
            if key in self._attachments:
                self._detach(key)
            attachment = _Attachment(namespace, binder, own=own)
            self._attachments[key] = attachment
            await self._sync_attachment(attachment)

    async def resync(self, key: str) -> None:
        """Bind again what an attachment is missing (a bind that failed), keeping what it holds."""
        async with self._lock:
            attachment = self._attachments.get(key)
            if attachment is not None:
                await self._sync_attachment(attachment)

    async def detach(self, key: str) -> None:
        async with self._lock:
            self._detach(key)

    def _detach(self, key: str) -> None:
        attachment = self._attachments.pop(key, None)
        if attachment is None:
            return
        for listener in attachment.listeners.values():
            listener.close()
        if attachment.dns is not None:
            attachment.dns.close()
            resolver, (answered, forwarded, failed) = attachment.dns.resolver, self._dns_gone
            self._dns_gone = (answered + resolver.answered, forwarded + resolver.forwarded, failed + resolver.failed)

    async def _sync_attachment(self, attachment: _Attachment) -> None:
        wanted = {k: route for k, route in listeners_for(self.view, attachment.namespace).items()
                  if (k[1], k[2]) not in attachment.own}
        for key in [k for k, listener in attachment.listeners.items() if wanted.get(k) != listener.route]:
            attachment.listeners.pop(key).close()
        missing = [k for k in wanted if k not in attachment.listeners]
        dns_missing = [p for p in (Protocol.UDP, Protocol.TCP)
                       if p not in attachment.dns_bound and (DNS_PORT, p) not in attachment.own]
        requests = [BindRequest(*k) for k in missing] + [BindRequest("127.0.0.1", DNS_PORT, p) for p in dns_missing]
        if not requests:
            return
        results = await self._bind(attachment.binder, requests)
        for key, result in zip(missing, results[:len(missing)], strict=True):
            route = wanted[key]
            if isinstance(result, str):
                self.counters(route[0]).bind_failures += 1
                log.warning("services: cannot listen on %s:%d/%s for %s/%s in %s: %s", *key, *route[0],
                            attachment.namespace, result)
                continue
            try:
                attachment.listeners[key] = await self._listen(result, route, key[2])
            except OSError as exc:  # a socket the binder gave that cannot serve (wrong type, closed)
                result.close()
                self.counters(route[0]).bind_failures += 1
                log.warning("services: cannot serve %s:%d/%s in %s: %s", *key, attachment.namespace, exc)
        for protocol, result in zip(dns_missing, results[len(missing):], strict=True):
            await self._start_dns(attachment, protocol, result)

    async def _bind(self, binder: Binder, requests: list[BindRequest]) -> list[socket.socket | str]:
        try:
            results = list(await binder(requests))
        except Exception as exc:  # the agent's binder failed as a whole: every request failed, retried next update
            log.warning("services: binder failed for %d socket(s): %s", len(requests), exc)
            return [f"binder failed: {exc}"] * len(requests)
        if len(results) != len(requests):
            for result in results:
                if isinstance(result, socket.socket):
                    result.close()
            return [f"binder answered {len(results)} results for {len(requests)} requests"] * len(requests)
        return results

    async def _start_dns(self, attachment: _Attachment, protocol: Protocol, result: socket.socket | str) -> None:
        if isinstance(result, str):
            self.dns_bind_failures += 1
            log.warning("services: no resolver (%s) in %s: %s", protocol, attachment.namespace, result)
            return
        if attachment.dns is None:
            namespace = attachment.namespace
            attachment.dns = DnsServer(Resolver(
                namespace, lambda: [r for k, r in self.view.services.items() if visible(k, namespace)],
                self.upstream_dns, timeout_s=self.dns_timeout_s))
        try:
            if protocol == Protocol.UDP:
                await attachment.dns.serve_udp(result)
            else:
                await attachment.dns.serve_tcp(result)
        except OSError as exc:
            result.close()
            self.dns_bind_failures += 1
            log.warning("services: cannot serve the resolver (%s) in %s: %s", protocol, attachment.namespace, exc)
            return
        attachment.dns_bound.add(protocol)

    async def _listen(self, sock: socket.socket, route: tuple[ServiceKey, int], protocol: Protocol) -> _Listener:
        sock.setblocking(False)
        if protocol == Protocol.UDP:
            return _Listener(route, await self.udp.listen(sock, route))
        server = await asyncio.start_server(functools.partial(self.tcp.client, route), sock=sock)
        return _Listener(route, server.close)

    # ---- host loopback (process workloads) and ingress -----------------------------------------------------

    def env_for(self, namespace: str) -> dict[str, str]:
        """Environment variables for a process workload of `namespace` (module docstring: host loopback)."""
        # built-in services first: a service of the workload's own namespace with the same name wins the variables
        records = sorted((r for k, r in self.view.services.items() if visible(k, namespace)),
                         key=lambda r: r.namespace != BUILTIN_NAMESPACE)
        for record in records:
            for port in record.ports:
                key = ((record.namespace, record.name), port.port, port.protocol)
                if key not in self._host:
                    self._host[key] = self._host_listener(key[0], port.port, port.protocol)
        wanted = {((r.namespace, r.name), p.port, p.protocol) for r in records for p in r.ports}
        local = {k: port for k, (port, _) in self._host.items() if k in wanted}  # not a service gone since
        return {**env_vars(records, local), **s3_env(local)}

    def _host_listener(self, service: ServiceKey, port: int, protocol: Protocol) -> tuple[int, _Listener]:
        kind = socket.SOCK_DGRAM if protocol == Protocol.UDP else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.bind(("127.0.0.1", 0))
        if protocol == Protocol.TCP:
            sock.listen(128)  # connections wait in the backlog until the server below runs
        local_port: int = sock.getsockname()[1]
        closing: list[Callable[[], None]] = []

        async def run() -> None:
            listener = await self._listen(sock, (service, port), protocol)
            closing.append(listener.close)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def close() -> None:
            task.cancel()
            for fn in closing:
                fn()
            sock.close()

        return local_port, _Listener((service, port), close)

    async def _sync_ingress(self) -> list[str]:
        problems: list[str] = []
        wanted = ingress_for(self.view, self.ingress_host)
        for key in [k for k, listener in self._ingress.items() if wanted.get(k) != listener.route]:
            self._ingress.pop(key).close()
        for key, route in wanted.items():
            if key in self._ingress:
                continue
            host, port, protocol = key
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if protocol == Protocol.UDP
                                     else socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError:
                    sock.close()
                    raise
            except OSError as exc:
                self.counters(route[0]).bind_failures += 1
                problems.append(f"ingress {host}:{port}/{protocol} for {route[0][0]}/{route[0][1]}: {exc}")
                continue
            self._ingress[key] = await self._listen(sock, route, protocol)
        return problems
