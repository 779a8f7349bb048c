"""A big cluster in memory (issue 17): a real `Coordinator` with a SQLite store, N simulated nodes that speak the
real wire contract through the pair harness's in-memory broker, and the real REST app on aiohttp's test client.

    async with fleet_memory.cluster(tmp_path, nodes=5000) as fc:
        await fc.heartbeat_all()
        await fc.apply(fleet_memory.workload("web", 2500))
        await fc.round()            # one reconcile round (in its own task, as the engine's loop runs it)
        await fc.report_ready()     # every node runs what its retained desired state says, and reports it ready
        resp = await fc.http.get("/v1/nodes", headers=fleet_memory.AUTH)

Time is a `FleetClock` the test moves (`fc.advance(s)`): the coordinator, its membership verdicts and the nodes'
timestamps all read it, so "silent for 45 s" takes no wall time. The nodes are not agents: each is a bus client
with a last will that publishes what an agent publishes (NodeStatus with facts, Heartbeat, ObservedState, with
the QoS and retain flags of `topics.NODE_CHANNELS`) and reads its desired state from the broker's retained copy,
as an agent that subscribed would. Publishing is sliced (`batch` messages, then a yield to the loop), so the
harness never holds the event loop for long itself: a loop guard (tests.coordinator.loop_guard) measures the
coordinator, not the simulator.

Used by several helpers to measure: keep this API stable; add to it rather than change it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient, TestServer

from broker import wire
from broker.acl import topic_matches
from broker.client import Message
from broker.wire import (
    DesiredState,
    Heartbeat,
    NodeFacts,
    NodeStatus,
    ObservedState,
    Presence,
    ReplicaObserved,
    ReplicaState,
    ReplicaUsage,
    topics,
)
from coordinator.api import Api
from coordinator.http import token_digest
from coordinator.membership import MembershipConfig
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.store import SqliteStore
from tests.pair.fakebus import FakeBroker, FakeBusClient, Handler

ADMIN = "fleet-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
IMAGE = "localhost/cloudless/busybox:latest"
START = 1_800_000_000.0  # the fleet clock's start (any fixed time: runs are reproducible)
BATCH = 200  # messages published per slice before the harness yields to the loop
ZONES = ("zone-a", "zone-b", "zone-c", "zone-d")
GiB = 1024**3

T = TypeVar("T")


def workload(name: str, replicas: int, *, namespace: str = "default", cpu: str = "10m", memory: str = "8Mi",
             **spec: object) -> dict[str, object]:
    """A workload document that passes the default admission policy."""
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name, "namespace": namespace},
            "spec": {"image": IMAGE, "command": ["sleep", "300"], "replicas": replicas,
                     "resources": {"requests": {"cpu": cpu, "memory": memory},
                                   "limits": {"cpu": cpu, "memory": memory}},
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
                                         "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                     **spec}}


def node_name(i: int) -> str:
    return f"node-{i:05d}"


@dataclass
class FleetClock:
    """The time every part of the fleet reads; only the test moves it."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FleetBusClient(FakeBusClient):
    """A FakeBusClient that tells its broker when it subscribes, so the broker routes without a scan of every
    client (thousands of nodes subscribe to nothing here)."""

    broker: FleetBroker

    async def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> int:
        self.broker.listeners[self.client_id] = self
        self.broker.routes.clear()
        return await super().subscribe(topic_filter, handler, qos=qos)


class FleetBroker(FakeBroker):
    """The pair harness's broker with the same semantics (retained store, wildcard matching with broker.acl's
    matcher, asynchronous delivery, wills), routing by a table of topic -> subscriptions built on first use, as a
    real broker's subscription trie does: what the coordinator publishes costs it what a publish costs, not a
    scan of the fake's subscriptions."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: dict[str, FakeBusClient] = {}
        self.routes: dict[str, list[tuple[FakeBusClient, str]]] = {}  # topic -> (client, its matching filter)
        self.keep_log = False  # the publish log of a 5,000-node fleet is large and nobody reads it

    def client(self, client_id: str, *, will: tuple[str, bytes] | None = None) -> FakeBusClient:
        c = FleetBusClient(self, client_id, will)
        self.clients.append(c)
        return c

    def route(self, sender: str, topic: str, payload: bytes, retain: bool) -> None:
        if self.keep_log:
            self.log.append((sender, topic))
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        targets = self.routes.get(topic)
        if targets is None:
            targets = self.routes[topic] = [(c, f) for c in self.listeners.values() for f in c.subs
                                            if topic_matches(topic, f)]
        if targets:
            loop = asyncio.get_running_loop()
            for c, f in targets:
                handler = c.subs.get(f)
                if c.connected and handler is not None:
                    loop.call_soon(handler, Message(topic, payload, 1, False))


@dataclass
class SimNode:
    """One simulated node: what it last applied and reported."""

    node_id: str
    client: FakeBusClient
    facts: NodeFacts
    seq: int = 0
    silent: bool = False  # stopped heartbeating (a power cut without a will, a dead link)
    applied: DesiredState | None = None
    reported: tuple[int, int, tuple[str, ...]] | None = None  # (generation, epoch, replica ids) last reported


def facts_for(i: int, *, profile: str = "vps") -> NodeFacts:
    return NodeFacts(arch="x86_64", os="linux", os_release="Debian 12", hostname=node_name(i), cpu_count=4,
                     memory_bytes=8 * GiB, disk_bytes=64 * GiB, runtime="podman", podman_version="4.3.1",
                     rootless=True, profile=profile, zone=ZONES[i % len(ZONES)],
                     labels={"fleet": "memory", "rack": f"r{i % 50}"}, agent_version="0.1.0",
                     abilities=("containers", "port-remap", "volumes", "images"))


@dataclass
class FleetCluster:
    coord: Coordinator
    http: TestClient[Any, Any]
    bus: FleetBroker
    store: SqliteStore
    clock: FleetClock
    nodes: dict[str, SimNode] = field(default_factory=dict)
    batch: int = BATCH

    # ---- time and rounds -----------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def in_task(self, work: Callable[[], Awaitable[T]], name: str) -> T:
        """Run coordinator work in a task of its own, named: the loop guard names it as the culprit (and a test may
        exempt its own task, which only drives the simulator and reads responses)."""
        async def run() -> T:
            return await work()
        return await asyncio.create_task(run(), name=name)

    async def round(self, *, advance: float = 0.0) -> None:
        """One reconcile round, under the engine's lock, as its loop runs it (after moving the clock on)."""
        self.advance(advance)

        async def one() -> None:
            async with self.coord.ops.lock:
                await self.coord.reconcile()
        await self.in_task(one, "fleet round")

    async def settle(self) -> None:
        """Past the coordinator's settle time after connecting (and the nodes' reconnect window), then a round:
        from here rounds schedule and replace."""
        self.advance(max(3.0, self.coord.cfg.membership.will_settle_s + 0.1))
        await self.heartbeat_all()
        await self.round()

    async def publish_dashboard(self) -> None:
        """The dashboard mirror as a round publishes it (coordinator.outbox)."""
        async def publish() -> None:
            run: Callable[[], object] = self.coord.outbox.publish_dashboard
            result = run()
            if isinstance(result, Awaitable):  # an engine that publishes it in slices
                await result
        await self.in_task(publish, "fleet dashboard")

    # ---- what the nodes send -------------------------------------------------------------------------------

    async def _sliced(self, items: Iterable[T], send: Callable[[T], bool]) -> int:
        """`send` each item, yielding to the loop every `batch` items; returns how many `send` said it sent."""
        n = 0
        for i, item in enumerate(items, 1):
            n += send(item)
            if i % self.batch == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)  # the handlers of the last slice run before this returns
        await asyncio.sleep(0)
        return n

    def _publish(self, node: SimNode, channel: topics.Channel, msg: object) -> None:
        spec = topics.NODE_CHANNELS[channel]
        node.client.publish_nowait(topics.node_topic(node.node_id, channel), wire.encode(msg), qos=spec.qos,
                                   retain=spec.retain)

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if not n.silent and n.client.connected]

    async def join(self, nodes: Iterable[SimNode] | None = None) -> int:
        """Connect (with a last will) and publish each node's online status with its facts."""
        def send(n: SimNode) -> bool:
            if not n.client.connected:
                n.client._connected = True  # FakeBusClient.start without its retained replay (nothing subscribed)
            self._publish(n, topics.Channel.STATUS, NodeStatus(node_id=n.node_id, presence=Presence.ONLINE,
                                                               ts=self.clock(), facts=n.facts))
            return True
        return await self._sliced(list(self.nodes.values()) if nodes is None else nodes, send)

    async def heartbeat_all(self) -> int:
        """Every live node's heartbeat (usage of each replica it runs); returns how many were sent."""
        def send(n: SimNode) -> bool:
            n.seq += 1
            running = n.applied.replicas if n.applied is not None else ()
            self._publish(n, topics.Channel.HEARTBEAT, Heartbeat(
                node_id=n.node_id, seq=n.seq, ts=self.clock(), cpu_percent=7.5, memory_used_bytes=2 * GiB,
                memory_total_bytes=8 * GiB, disk_used_bytes=10 * GiB, disk_total_bytes=64 * GiB,
                replicas=tuple(ReplicaUsage(replica_id=r.replica_id, cpu_percent=0.5, memory_bytes=4 * 1024**2)
                               for r in running[:256]),
                max_epoch=n.applied.epoch if n.applied is not None else None))
            return True
        return await self._sliced(self.live(), send)

    def desired(self, node_id: str) -> DesiredState | None:
        """The node's desired state as the broker retains it (what an agent subscribed to it would get)."""
        payload = self.bus.retained.get(topics.node_desired(node_id))
        if not payload:
            return None
        msg = wire.decode(payload)
        return msg if isinstance(msg, DesiredState) else None

    async def report_ready(self) -> int:
        """Every live node applies its retained desired state and reports each replica running and ready (only
        the nodes whose report changes publish, as agents do); returns how many reported."""
        def send(n: SimNode) -> bool:
            d = self.desired(n.node_id)
            if d is None:
                return False
            key = (d.generation, d.epoch, tuple(r.replica_id for r in d.replicas))
            if key == n.reported:
                return False
            n.applied, n.reported = d, key
            now = self.clock()
            self._publish(n, topics.Channel.OBSERVED, ObservedState(
                node_id=n.node_id, generation=d.generation, epoch=d.epoch, ts=now,
                replicas=tuple(ReplicaObserved(replica_id=r.replica_id, workload=r.workload,
                                               state=ReplicaState.RUNNING, spec_hash=r.spec_hash, ready=True,
                                               started_at=now, container_id=f"c-{r.replica_id}")
                               for r in d.replicas)))
            return True
        return await self._sliced(self.live(), send)

    def silence(self, node_ids: Iterable[str]) -> None:
        """These nodes stop heartbeating and reporting without a will (power cut, dead uplink)."""
        for n in node_ids:
            self.nodes[n].silent = True

    async def crash(self, node_ids: Iterable[str]) -> None:
        """These nodes' connections drop abnormally: the broker publishes their last wills."""
        for i, n in enumerate(node_ids):
            self.nodes[n].silent = True
            await self.nodes[n].client.abort()
            if i % self.batch == self.batch - 1:
                await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def lose(self, node_ids: Iterable[str]) -> None:
        """These nodes go silent, and time passes (with the others heartbeating) until the coordinator's rounds
        have marked them suspect, then lost (membership: heartbeat TTL, then the grace period)."""
        cfg = self.coord.cfg.membership
        self.silence(node_ids)
        for wait in (cfg.heartbeat_ttl_s + 1.0, cfg.lost_after_s + 1.0):
            # time moves in steps of half the TTL with the live nodes heartbeating after each: the engine's own loop
            # may run a round between a step and those heartbeats, and must then find the live nodes heard within
            # the TTL (a single 46 s step made it call thousands of live nodes suspect)
            left = wait
            while left > 0:
                step = min(left, cfg.heartbeat_ttl_s / 2)
                self.advance(step)
                await self.heartbeat_all()
                left -= step
            await self.round()

    # ---- what the admin does -------------------------------------------------------------------------------

    async def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        """PUT the workload through the REST API; returns the response body (asserts 200/201)."""
        meta = doc["metadata"]
        resp = await self.http.put(f"/v1/workloads/{meta.get('namespace', 'default')}/{meta['name']}", json=doc,
                                   headers=AUTH)
        body: dict[str, Any] = await resp.json()
        assert resp.status in (200, 201), body
        return body

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        resp = await self.http.get(path, params=params, headers=AUTH)
        return resp.status, await resp.json()

    # ---- what the test reads -------------------------------------------------------------------------------

    def placed(self, workload: str | None = None) -> dict[str, str]:
        """replica id -> node, for placed replicas (of one workload)."""
        return {r.replica_id: r.node for r in self.coord.replicas.values()
                if r.node and (workload is None or r.workload == workload)}

    def ready(self, workload: str | None = None) -> int:
        """Replicas the coordinator sees ready on their node, at their workload's current spec."""
        n = 0
        for r in self.coord.replicas.values():
            if workload is not None and r.workload != workload:
                continue
            o = self.coord.observed_of(r)
            w = self.coord.workloads.get(f"{r.namespace}/{r.workload}")
            n += bool(o is not None and o.ready and w is not None and o.spec_hash == w.spec_hash)
        return n


async def converge(fc: FleetCluster, want_ready: int, *, rounds: int = 20, workload: str | None = None) -> int:
    """Rounds and ready reports until `want_ready` replicas are ready (a bounded number of rounds: no wall time);
    returns the rounds it took. Raises AssertionError when it does not get there."""
    for i in range(1, rounds + 1):
        await fc.round()
        await fc.report_ready()
        await fc.heartbeat_all()
        if fc.ready(workload) >= want_ready:
            return i
    raise AssertionError(f"{fc.ready(workload)} of {want_ready} replicas ready after {rounds} rounds")


@asynccontextmanager
async def cluster(tmp_path: Path, *, nodes: int = 100, tick_s: float = 3600.0,
                  membership: MembershipConfig | None = None, batch: int = BATCH,
                  settle: bool = True, joined: bool = True) -> AsyncIterator[FleetCluster]:
    """A started coordinator, `nodes` joined nodes with one heartbeat each, the REST app. The engine's own loop
    runs a round when woken (a node's observed state, a membership event, an API write) or every `tick_s`
    (long by default: the test drives rounds with `round()`). `settle`: move past the connect settle time and run
    a first round before handing over. `joined=False`: the nodes exist but have not connected yet (the test runs
    the join itself: `join()`, `heartbeat_all()`, `settle()`)."""
    clock = FleetClock()
    bus = FleetBroker()
    store = SqliteStore(tmp_path / "fleet-state.db")
    coord = Coordinator(CoordinatorConfig(coordinator_id="fleet", tick_s=tick_s,
                                          membership=membership or MembershipConfig()),
                        store=store, mqtt=bus.client("coordinator@fleet"), clock=clock)  # type: ignore[arg-type]
    fc: FleetCluster | None = None
    await coord.start()
    client: TestClient[Any, Any] = TestClient(TestServer(Api(coord, token_digests={
        token_digest(ADMIN): ("admin", "admin")}).app()))
    await client.start_server()
    try:
        fc = FleetCluster(coord=coord, http=client, bus=bus, store=store, clock=clock, batch=batch)
        for i in range(nodes):
            nid = node_name(i)
            will = wire.encode(NodeStatus(node_id=nid, presence=Presence.OFFLINE, ts=0.0, schedulable=False))
            fc.nodes[nid] = SimNode(nid, bus.client(nid, will=(topics.node_status(nid), will)), facts_for(i))
        if joined:
            await fc.join()
            await fc.heartbeat_all()
            if settle:
                await fc.settle()
        yield fc
    finally:
        await client.close()
        await coord.stop()
        await store.close()
