"""Services on this device (adapter): the agent's wiring of `dataplane.services.ServiceProxy`.

- **Start** unless switched off (`--no-services`) or the proxy cannot load here; then the agent logs why and runs its
  workloads without services. It needs no aioquic: the proxy uses the agent's overlay
  when it runs (endpoints on other nodes are reached through it) and serves same-node endpoints without it.
- **In**: the coordinator's ServiceTable on `node/<id>/services` (retained, qos 1), fenced like the peer directory
  (`consider_table`): a table from an epoch lower than the highest seen — this agent's desired-state epoch or a
  table's — is ignored, and within an epoch only a higher generation applies.
- **Endpoints here**: `local_endpoint(replica, target_port, protocol)` answers from a map refreshed from the
  runtime (`Runtime.endpoint`: Podman's published 127.0.0.1 port of that protocol — `runtime.podman_net` publishes
  53/tcp and 53/udp on different host ports — or the process's own port) whenever the table or the running instances
  change; a restarted replica is looked up again.
- **Containers**: every running container of a runtime that can say where its network namespace is (Podman's
  `netns_pid`) is attached to the proxy with a binder that binds inside that namespace (`edge_agent.netns`): its
  127.0.0.1:53 resolver and one listener per service port of its namespace. A container that stops is detached; a
  restarted one (new namespace) is attached again. A bind that failed is retried after RETRY_ATTACH_S.
- **Processes**: a process-runtime replica gets `ServiceProxy.env_for(namespace)` merged under its own environment
  when it is created (`with_service_env`, which first hands the proxy a table the worker has not applied yet):
  `<SVC>_SERVICE_HOST/_PORT` pointing at host-loopback listeners. As in Kubernetes, only the services known at that
  moment are in it.
- **Built-in services** (`s3.cloudless`: the cluster's S3 gateways, reached over the overlay) are served to every
  namespace's workloads — and `AWS_ENDPOINT_URL_S3` to processes — unless `ServiceSettings.builtins` is off
  (`--no-s3-endpoint`).
- **Upstream DNS** for every other name: the host's /etc/resolv.conf (`upstream_servers`).

All of it runs in one worker task (`_apply`), so a slow nsenter never holds up the agent's reconcile loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, runtime_checkable
from typing import Protocol as Role

from broker import wire
from broker.client import Message, MqttClient
from broker.errors import WireError
from broker.wire import Protocol, ReplicaSpec, ServiceTable, topics
from edge_agent.errors import RuntimeError_
from edge_agent.metrics import ServiceSample, ServiceSamples
from edge_agent.netns import BindSpec, Bound, bind_in_netns
from edge_agent.overlay import AgentOverlay
from edge_agent.runtime.base import Instance, InstanceState, Runtime

if TYPE_CHECKING:
    from dataplane.services import Binder, BindRequest, ServiceProxy

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_CONF = Path("/run/systemd/resolve/resolv.conf")  # systemd-resolved's real servers (Podman reads it too)
RETRY_ATTACH_S = 10.0
SWITCHED_OFF = "switched off on this node (--no-services); restart the agent without it to run them"
NO_DATAPLANE = ("the service proxy (dataplane.services) cannot load here; workloads run without service names "
                "(reinstall the agent: its package is incomplete)")

EndpointKey = tuple[str, int, Protocol]  # (replica id, target port, protocol)
NetnsBind = Callable[[int, Sequence[BindSpec]], Awaitable[list[Bound]]]  # edge_agent.netns.bind_in_netns


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    enabled: bool = True
    # serve the built-in services (`s3.cloudless`, when the cluster runs an S3 gateway) to this node's workloads; on by
    # default: a workload needs a storage key (a secret) to do anything with it, and a node that serves it costs
    # nothing until a workload connects (--no-s3-endpoint)
    builtins: bool = True
    resolv_conf: Path = RESOLV_CONF


@runtime_checkable
class NetnsRuntime(Role):
    """A runtime whose instances have their own network namespace (Podman)."""

    async def netns_pid(self, instance_id: str) -> int | None: ...


# ---- decisions (pure) ---------------------------------------------------------------------------------------

def have_dataplane() -> bool:
    """The proxy loads (it needs no aioquic: without the overlay a node serves its own endpoints, e.g. a process
    replica's <SVC>_SERVICE_* on Termux, and reaches no other node's)."""
    try:
        importlib.import_module("dataplane.services")
    except ImportError:
        return False
    return True


def consider_table(current: ServiceTable | None, max_epoch: int, incoming: ServiceTable) -> str | None:
    """Why `incoming` is not applied (None: apply it). `max_epoch`: the highest epoch this agent has seen."""
    if incoming.epoch < max_epoch:
        return f"epoch {incoming.epoch} is lower than {max_epoch} (fenced: stale leader)"
    if current is not None and incoming.epoch == current.epoch and incoming.generation <= current.generation:
        return f"generation {incoming.generation} is not newer than {current.generation}"
    return None


def nameservers(text: str) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order (invalid lines skipped)."""
    found = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                found.append(str(ipaddress.ip_address(parts[1].split("%", 1)[0])))
    return found


def upstream_servers(resolv_conf: str, resolved_conf: str | None = None) -> list[tuple[str, int]]:
    """Where names that are not services are forwarded. The host's non-loopback servers; a host whose resolv.conf
    names only its own loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) gets systemd-resolved's real
    servers when it has them, else those loopback servers: the agent forwards from the host's own network
    namespace, where they answer (a container could not reach them, which is why Podman skips them)."""
    servers = nameservers(resolv_conf)
    outside = [s for s in servers if not ipaddress.ip_address(s).is_loopback]
    if outside:
        return [(s, 53) for s in outside]
    resolved = [s for s in nameservers(resolved_conf or "") if not ipaddress.ip_address(s).is_loopback]
    return [(s, 53) for s in (resolved or servers)]


def local_ports(table: ServiceTable | None, node_id: str) -> set[EndpointKey]:
    """(replica, target port, protocol) of every endpoint on this node the table names."""
    if table is None:
        return set()
    return {(e.replica, p.target_port, p.protocol) for r in table.services for e in r.endpoints if e.node == node_id
            for p in r.ports}


def attachment_key(inst: Instance) -> str:
    """One key per run of a container: a restart gives it a new network namespace, hence a new attachment."""
    return f"{inst.instance_id}@{inst.started_at or 0:.3f}"


def service_samples(stats: dict[str, object]) -> tuple[ServiceSample, ...]:
    """The proxy's per-service stats ("<ns>/<svc>" -> ServiceStats) as metric samples."""
    out = []
    for key, st in sorted(stats.items()):
        namespace, _, name = key.partition("/")
        out.append(ServiceSample(
            service=name, namespace=namespace, connections=dict(getattr(st, "connections", {})),
            active=int(getattr(st, "active", 0)), bytes_out=int(getattr(st, "bytes_out", 0)),
            bytes_in=int(getattr(st, "bytes_in", 0)), connect_failures=int(getattr(st, "connect_failures", 0)),
            no_endpoint=int(getattr(st, "no_endpoint", 0)), bind_failures=int(getattr(st, "bind_failures", 0)),
            served=int(getattr(st, "served", 0)), udp_flows=int(getattr(st, "udp_flows", 0)),
            udp_dropped=int(getattr(st, "udp_dropped", 0)), udp_refused=int(getattr(st, "udp_refused", 0))))
    return tuple(out)


# ---- the adapter ----------------------------------------------------------------------------------------------

@dataclass
class _Attached:
    instance_id: str
    namespace: str
    failed_at: float | None = None  # a bind of this attachment failed then: re-attach after RETRY_ATTACH_S


class AgentServices:
    """Services of one agent. `await start()` after the overlay started; `sync(instances)` after every reconcile
    round; `await stop()` before the overlay stops."""

    def __init__(self, *, node_id: str, mqtt: MqttClient, runtime: Runtime, overlay: AgentOverlay,
                 clock: Callable[[], float], settings: ServiceSettings, max_epoch: Callable[[], int] = lambda: 0,
                 dataplane_available: Callable[[], bool] = have_dataplane,
                 bind: NetnsBind = bind_in_netns,
                 spec_of: Callable[[str], ReplicaSpec | None] = lambda _replica: None) -> None:
        self.node_id = node_id
        self.mqtt = mqtt
        self.runtime = runtime
        self.overlay = overlay
        self.clock = clock
        self.settings = settings
        self._agent_epoch = max_epoch
        self._dataplane_available = dataplane_available
        self._bind = bind
        self._spec_of = spec_of  # a replica's desired spec (its own ports are left to it)
        self.proxy: ServiceProxy | None = None
        self.disabled = ""  # why services do not run here ("" while they do)
        self.table: ServiceTable | None = None
        self.max_epoch = 0  # the highest table epoch seen
        self.upstream: list[tuple[str, int]] = []
        self.endpoints: dict[EndpointKey, tuple[tuple[str, float | None], tuple[str, int]]] = {}
        self.attached: dict[str, _Attached] = {}
        self._applied: ServiceTable | None = None
        self._instances: list[Instance] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._round = asyncio.Lock()  # one round at a time (the worker's, or a caller's)
        self._no_netns: set[str] = set()  # attachment keys of containers without a namespace of their own
        self._unreachable: set[tuple[EndpointKey, tuple[str, float | None]]] = set()  # warned once per run

    @property
    def enabled(self) -> bool:
        return self.proxy is not None

    def why_not(self) -> str | None:
        if not self.settings.enabled:
            return SWITCHED_OFF
        if not self._dataplane_available():
            return NO_DATAPLANE
        return None

    async def start(self) -> None:
        why = self.why_not()
        if why is None:
            try:
                await self._start_proxy()
            except Exception as exc:  # the agent's job is the workloads: it runs on without services
                why = f"the service proxy did not start: {exc}"
                log.error("services: %s", why)
        if why is not None:
            self.disabled = why
            log.info("services: not running: %s", why)
            return
        await self.mqtt.subscribe(topics.node_services(self.node_id), self._on_table, qos=1)
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def _start_proxy(self) -> None:
        from dataplane.services import ServiceProxy

        self.upstream = await asyncio.to_thread(self._read_upstream)
        if self.upstream:
            log.info("services: other names forwarded to %s", ", ".join(f"{h}:{p}" for h, p in self.upstream))
        else:
            log.warning("services: no upstream DNS server in %s: workloads resolve service names only",
                        self.settings.resolv_conf)
        proxy = ServiceProxy(self.overlay.overlay, node_id=self.node_id, local_endpoint=self.local_endpoint,
                             upstream_dns=self.upstream, rng=random.Random(), clock=self.clock,
                             builtins=self.settings.builtins)
        await proxy.start()
        self.proxy = proxy
        if self.overlay.overlay is None:
            log.info("services: the overlay does not run here: only endpoints on this node are reachable")

    def _read_upstream(self) -> list[tuple[str, int]]:
        def read(path: Path) -> str | None:
            try:
                return path.read_text(errors="replace")[:65536]
            except OSError:
                return None

        return upstream_servers(read(self.settings.resolv_conf) or "", read(RESOLVED_CONF))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = None

    # ---- in: the table and the instances ---------------------------------------------------------------------

    def _on_table(self, message: Message) -> None:
        try:
            incoming = wire.decode_node_message(message.topic, message.payload)
            if not isinstance(incoming, ServiceTable):
                raise WireError(f"expected a service table, got {type(incoming).__name__}")
        except WireError as exc:
            log.warning("services: ignored a message on %s: %s", message.topic, exc)
            return
        why = consider_table(self.table, max(self.max_epoch, self._agent_epoch()), incoming)
        if why is not None:
            log.info("services: table generation %d not applied: %s", incoming.generation, why)
            return
        self.table, self.max_epoch = incoming, max(self.max_epoch, incoming.epoch)
        log.info("services: table generation %d (epoch %d): %d services", incoming.generation, incoming.epoch,
                 len(incoming.services))
        self._wake.set()

    def sync(self, instances: Sequence[Instance]) -> None:
        """The runtime's instances after a reconcile round: attach, detach, look endpoints up (in the worker)."""
        self._instances = list(instances)
        self._wake.set()

    async def _worker(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_ATTACH_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.apply()
            except Exception:  # a runtime or binder failure this round: logged, the next round retries
                log.exception("services: round failed")

    async def apply(self) -> None:
        """One round: refresh the endpoints on this node, hand a new table to the proxy, sync attachments."""
        async with self._round:
            if self.proxy is not None:
                await self._apply(self.proxy)

    async def _apply(self, proxy: ServiceProxy) -> None:
        table = self.table
        await self._refresh_endpoints(table)
        await self._apply_table(proxy, table)
        await self._sync_attachments(proxy)

    async def _apply_table(self, proxy: ServiceProxy, table: ServiceTable | None) -> None:
        """Hand `table` to the proxy unless it has it already (under `_round`)."""
        if table is None or table is self._applied:
            return
        applied = await proxy.update(table)
        self._applied = table
        for change in applied.added:
            log.info("services: %s/%s endpoint %s on %s came", change.namespace, change.service, change.replica,
                     change.node)
        for change in applied.removed:
            log.info("services: %s/%s endpoint %s on %s went", change.namespace, change.service,
                     change.replica, change.node)

    # ---- endpoints on this node ------------------------------------------------------------------------------

    def local_endpoint(self, replica: str, target_port: int, protocol: Protocol) -> tuple[str, int] | None:
        found = self.endpoints.get((replica, target_port, protocol))
        return found[1] if found is not None else None

    async def _refresh_endpoints(self, table: ServiceTable | None) -> None:
        running = {i.replica_id: i for i in self._instances if i.state is InstanceState.RUNNING}
        fresh: dict[EndpointKey, tuple[tuple[str, float | None], tuple[str, int]]] = {}
        for key in sorted(local_ports(table, self.node_id)):
            inst = running.get(key[0])
            if inst is None:
                continue
            run = (inst.instance_id, inst.started_at)
            known = self.endpoints.get(key)
            if known is not None and known[0] == run:
                fresh[key] = known
                continue
            try:
                ep = await self.runtime.endpoint(inst.instance_id, key[1], key[2])
            except RuntimeError_ as exc:
                log.warning("services: where replica %s listens on %d/%s: %s", key[0], key[1], key[2], exc)
                continue
            if ep is None and (key, run) not in self._unreachable:
                self._unreachable.add((key, run))
                log.warning("services: replica %s port %d/%s cannot be reached from the agent (declare it in the "
                            "workload's ports)", key[0], key[1], key[2])
            if ep is not None:
                fresh[key] = (run, (ep.host, ep.port))
        self.endpoints = fresh
        current = {(i.instance_id, i.started_at) for i in running.values()}
        self._unreachable = {u for u in self._unreachable if u[1] in current}

    # ---- containers: attachments -----------------------------------------------------------------------------

    async def _sync_attachments(self, proxy: ServiceProxy) -> None:
        if not isinstance(self.runtime, NetnsRuntime):
            return  # processes share the host's network: they get environment variables instead
        now = self.clock()
        wanted = {attachment_key(i): i for i in self._instances if i.state is InstanceState.RUNNING}
        for key in [k for k in self.attached if k not in wanted]:
            await proxy.detach(key)
            del self.attached[key]
            log.debug("services: detached %s", key)
        self._no_netns &= set(wanted)
        for key, inst in wanted.items():
            if key in self._no_netns:
                continue
            have = self.attached.get(key)
            if have is not None:
                if have.failed_at is not None and now - have.failed_at >= RETRY_ATTACH_S:
                    await proxy.resync(key)  # only what is missing: the resolver and the bound listeners stay
                continue
            try:
                pid = await self.runtime.netns_pid(inst.instance_id)
            except RuntimeError_ as exc:
                log.warning("services: replica %s: no network namespace: %s", inst.replica_id, exc)
                continue
            if pid is None:  # host network (or stopped meanwhile: the next round sees it gone)
                self._no_netns.add(key)
                continue
            attached = self.attached[key] = _Attached(inst.instance_id, inst.namespace)
            await proxy.attach(key, inst.namespace, self._binder(pid, attached, inst.replica_id),
                               own=self._own_ports(inst.replica_id))

    def _own_ports(self, replica_id: str) -> frozenset[tuple[int, Protocol]]:
        """The container ports a replica listens on itself (from its desired spec)."""
        spec = self._spec_of(replica_id)
        return frozenset((p.container_port, p.protocol) for p in spec.ports) if spec is not None else frozenset()

    def _binder(self, pid: int, attached: _Attached, replica: str) -> Binder:
        async def bind(requests: list[BindRequest]) -> list[socket.socket | str]:
            specs = [BindSpec(r.ip, r.port, "udp" if r.protocol == Protocol.UDP else "tcp") for r in requests]
            results = await self._bind(pid, specs)
            failed = [f"{s.proto} {s.ip}:{s.port}: {r}" for s, r in zip(specs, results, strict=True)
                      if isinstance(r, str)]
            attached.failed_at = self.clock() if failed else None
            if failed:
                log.warning("services: replica %s: %d of %d sockets not bound: %s", replica, len(failed),
                            len(specs), "; ".join(failed[:3]))
            return results

        return bind

    # ---- processes: environment --------------------------------------------------------------------------

    async def with_service_env(self, spec: ReplicaSpec) -> ReplicaSpec:
        """`spec` with the service variables of its namespace under its own environment (its own win). A table
        that came but the worker has not applied yet is applied first: a replica created right after the table
        that names its services gets their variables."""
        if self.proxy is None:
            return spec
        async with self._round:  # a process runtime has no attachments: a round holding it is short
            if self.proxy is None:
                return spec
            try:
                await self._apply_table(self.proxy, self.table)
            except Exception:  # the replica starts with the services the proxy has; the worker retries the table
                log.exception("services: the table could not be applied before creating %s", spec.replica_id)
            env = self.proxy.env_for(spec.namespace)
        return replace(spec, env={**env, **spec.env}) if env else spec

    # ---- metrics -------------------------------------------------------------------------------------------

    def samples(self) -> ServiceSamples:
        if self.proxy is None:
            return ServiceSamples()
        node = self.proxy.proxy_stats()
        return ServiceSamples(
            per_service=service_samples(dict(self.proxy.stats())), running=True,
            dns_queries={"answered": node.dns_answered, "forwarded": node.dns_forwarded, "failed": node.dns_failed},
            dns_bind_failures=node.dns_bind_failures, udp_flows_open=node.udp_flows_open, problems=len(node.problems))
