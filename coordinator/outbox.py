"""What the coordinator publishes each round (adapter): every node's desired state, the secrets sealed into it,
and the human-readable dashboard mirror with Home Assistant discovery.

Desired state is level-triggered: each node's full set of replicas, retained, with a generation that grows
whenever this process publishes a different set (persisted in the store, so a new leader goes on from it) and
the leadership epoch. Only what changed since the last publish goes out; `forget_sent` (after a broker
reconnect, or a new term) sends everything again, under the same generation where nothing changed, so agents
restart nothing (and a reconnect is no fan-out of new generations: issue 17). The mirror is diffed the same way;
a topic no longer produced is cleared (empty retained).

A round's work is proportional to what changed (issue 17: at 5,000 nodes, recomputing every node's desired state
every round was half the coordinator's CPU). A node's desired state is recomputed when it may have changed: a
replica put on, moved off or changed on it (the replica table's change set), a workload record of one of its
replicas replaced (apply, scale, rollout, rollback), a secret it consumes (re-sealed boxes), or `mark_node`. A
background sweep bounds what a missed mark can cost: `SWEEP_NODES` nodes a round, in passes over every node that
start at most every `SWEEP_PERIOD_S`. No round holds the loop for thousands of nodes: a full resend (reconnect,
new epoch) goes out `RESEND_NODES` nodes a round, and past `PUBLISH_NODES` changed nodes the rest wait for the
next round (`backlog`: the engine runs it soon). Generations of one round are stored in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

from broker import wire
from broker.client import MqttClient
from broker.errors import MqttError, WireError
from broker.wire import DesiredState, PeerDirectory, ReplicaSpec, ServiceRecord, ServiceTable, topics
from coordinator import dashboard, model
from coordinator.cluster import Cluster
from coordinator.delivery import SecretDelivery
from coordinator.metrics import Metrics
from coordinator.model import WorkloadRecord
from coordinator.operations import Recorder
from coordinator.overlay import OverlayBook
from coordinator.store import Store, StoreError, put

log = logging.getLogger(__name__)

SWEEP_NODES = 256  # nodes the background resync re-checks per round...
SWEEP_PERIOD_S = 30.0  # ... in passes over every node that start at most this often
RESEND_NODES = 300  # nodes of a full resend (reconnect, new epoch) sent per round
STEP_NODES = 100  # nodes published in one step of the event loop
PUBLISH_NODES = 400  # changed nodes whose desired state one round recomputes (the rest the next round)
LOOK_NODES = 1000  # nodes whose service table or peer directory is compared with what was sent, in one step
DASH_CALLS = 2  # slices of the dashboard mirror one round publishes while it has a backlog


class Outbox:
    """`secrets` is the secrets service (coordinator.secrets) when the daemon runs one, else None."""

    def __init__(self, cluster: Cluster, journal: Recorder, *, mqtt: MqttClient, store: Store,
                 metrics: Metrics, clock: Callable[[], float], secrets: Any = None) -> None:
        self.cluster = cluster
        self.journal = journal
        self.mqtt = mqtt
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.secrets = secrets
        self.nodegen: dict[str, int] = {}  # node -> the last desired-state generation published (as stored)
        # node -> the content last published under nodegen[node] (kept across reconnects: resending the same
        # content keeps its generation), and the nodes it went out to since the last connect or epoch
        self._content: dict[str, tuple[ReplicaSpec, ...]] = {}
        self._sent: set[str] = set()
        self._replica_changes = cluster.replicas.watch()
        # nodes whose desired state may have changed, oldest mark first (a round past PUBLISH_NODES takes the
        # oldest, so no node waits behind ones marked again every round)
        self._dirty: dict[str, None] = {}
        self._workloads_seen: dict[str, WorkloadRecord] = {}
        self._epoch: int | None = None
        self._sweep: list[str] = []  # the background resync's nodes still to check in this pass
        self._swept_at = float("-inf")
        self._resend: list[str] = []  # nodes still to send again (a reconnect, a new epoch)
        self.mirror = dashboard.Mirror(cluster)  # the dashboard mirror and HA discovery, kept incrementally
        self._delivery: SecretDelivery | None = None
        self._undeliverable: set[tuple[str, str, str]] = set()
        self.refused: dict[str, str] = {}  # node -> why its desired state could not be sent
        # peer directories (coordinator.overlay): what was last sent per node, and its generation (in memory: the
        # epoch grows with every start or term, and agents fence on it first)
        self._peers_sent: dict[str, object] = {}
        self.peersgen: dict[str, int] = {}
        # service tables (coordinator.services), the same way
        self._services_sent: dict[str, tuple[str, tuple[ServiceRecord, ...]]] = {}
        self.servicesgen: dict[str, int] = {}
        # nodes cleared (deleted) while a publish pass of tables or directories was yielding: one set per pass
        self._passes: list[set[str]] = []

    def forget_sent(self) -> None:
        """Send everything again (the broker may have lost its retained store, or a new term began): desired state
        over the next rounds, RESEND_NODES nodes a round, each under its generation where its content is unchanged."""
        self._sent.clear()
        self._resend = sorted(self._known_nodes(), reverse=True)
        self.mirror.forget()
        self._peers_sent.clear()
        self._services_sent.clear()

    async def publish_peers(self, book: OverlayBook, now: float, epoch: int) -> None:
        """Every node's peer directory that changed (retained, only to that node's topic). One that cannot be
        built or sent is logged and tried again next round; the others go out. In steps of the loop: a fleet's
        first directories are thousands of messages (issue 17)."""
        with self._pass() as cleared:
            await self._publish_peers(book, now, epoch, cleared)

    async def _publish_peers(self, book: OverlayBook, now: float, epoch: int, cleared: set[str]) -> None:
        pace = _Steps()
        for node_id in sorted(n for n in book.nodes() if book.wants_directory(n)):
            await pace.looked()
            if node_id in cleared:  # deleted while this pass yielded: clear_node emptied its topic, keep it so
                continue
            relays, peers, revoked = book.directory(node_id)
            content = (relays, peers, revoked)
            if self._peers_sent.get(node_id) == content:
                continue
            gen = self.peersgen.get(node_id, 0) + 1
            try:
                payload = wire.encode(PeerDirectory(node_id=node_id, generation=gen, epoch=epoch, ts=now,
                                                    relays=relays, peers=peers, revoked=revoked))
                self.mqtt.publish_nowait(topics.node_peers(node_id), payload, qos=1, retain=True)
            except (WireError, MqttError) as exc:
                log.warning("peer directory for %s not sent: %s", node_id, exc)
                continue
            self.metrics.mqtt("out", "peers", len(payload))
            self.peersgen[node_id] = gen
            self._peers_sent[node_id] = content
            await pace.sent()

    async def publish_services(self, tables: dict[str, tuple[ServiceRecord, ...]], zone_of: Callable[[str], str],
                               now: float, epoch: int) -> None:
        """Every node's service table that changed (retained, only to that node's topic); a node whose table was
        sent before and is no longer computed (deleted) is left to clear_node. One that cannot be sent is logged and
        tried again next round; the others go out. In steps of the loop: when a fleet joins, every node's first
        table goes out (5,000 encoded and published in one step held the loop for 150 ms: issue 17). A table is
        looked at again only when it or the node's zone is not what was sent (the registry shares one table
        object among the nodes of the same namespaces: identity decides most of them)."""
        with self._pass() as cleared:
            await self._publish_services(tables, zone_of, now, epoch, cleared)

    async def _publish_services(self, tables: dict[str, tuple[ServiceRecord, ...]], zone_of: Callable[[str], str],
                                now: float, epoch: int, cleared: set[str]) -> None:
        pace = _Steps()
        sent = self._services_sent
        for node_id in sorted(tables):
            await pace.looked()
            if node_id in cleared:  # deleted while this pass yielded (the tables given are from before)
                continue
            records, zone = tables[node_id], zone_of(node_id)
            last = sent.get(node_id)
            if last is not None and last[1] is records and last[0] == zone:
                continue
            content = (zone, records)
            if last == content:
                sent[node_id] = content  # equal, not the same object: next time identity says it
                continue
            gen = self.servicesgen.get(node_id, 0) + 1
            try:
                payload = wire.encode(ServiceTable(node_id=node_id, generation=gen, epoch=epoch, ts=now, zone=zone,
                                                   services=records))
                self.mqtt.publish_nowait(topics.node_services(node_id), payload, qos=1, retain=True)
            except (WireError, MqttError) as exc:
                log.warning("service table for %s not sent: %s", node_id, exc)
                continue
            self.metrics.mqtt("out", "services", len(payload))
            self.servicesgen[node_id] = gen
            sent[node_id] = content
            await pace.sent()

    @contextlib.contextmanager
    def _pass(self) -> Iterator[set[str]]:
        """A publish pass that yields to the loop: the nodes clear_node empties meanwhile (review 5, L2: one
        republished after its clear left a retained table on a deleted node's topic, for a re-enrolled node to find)."""
        cleared: set[str] = set()
        self._passes.append(cleared)
        try:
            yield cleared
        finally:
            self._passes.remove(cleared)

    def desired_for(self, node_id: str) -> tuple[ReplicaSpec, ...]:
        sealed = self._delivery.sealed_for if self._delivery is not None else None
        return self.cluster.desired_for(node_id, sealed)

    def mark_node(self, node_id: str) -> None:
        """This node's desired state may have changed in a way the replica table does not show: recompute it."""
        self._dirty.setdefault(node_id, None)

    @property
    def backlog(self) -> int:
        """Nodes still to be looked at: a resend after a reconnect or a new epoch, or more changed nodes than one
        round takes (the engine runs another round soon)."""
        return len(self._resend) + len(self._dirty)

    def _known_nodes(self) -> set[str]:
        return self.cluster.replicas.nodes() | set(self._content) | set(self.nodegen)

    def _changed_nodes(self, resealed: set[str]) -> set[str]:
        """The nodes whose desired state may differ from what they were sent (see the module's doc): the oldest
        PUBLISH_NODES marks, and on their own budget (even when marks overflow) the sweep and the resend."""
        marks = self._dirty
        changed, _ = self._replica_changes.take()
        for node in sorted(changed):
            marks.setdefault(node, None)
        seen, workloads = self._workloads_seen, self.cluster.workloads
        for key, w in workloads.items():  # records are replaced, never edited: identity says "unchanged"
            if seen.get(key) is not w:
                seen[key] = w
                for r in self.cluster.replicas.of_workload(key):
                    if r.node:
                        marks.setdefault(r.node, None)
        for key in [k for k in seen if k not in workloads]:
            del seen[key]
        for node in sorted(resealed):  # boxes re-sealed (a new version, a renewed key) or dropped
            marks.setdefault(node, None)
        marks.pop("", None)
        nodes: set[str] = set()
        for node in list(itertools.islice(marks, PUBLISH_NODES)):  # many marked: the rest next round, in turn
            del marks[node]
            nodes.add(node)
        now = self.clock()
        if not self._sweep and now - self._swept_at >= SWEEP_PERIOD_S:  # a new pass, at most once a period
            self._sweep, self._swept_at = sorted(self._known_nodes(), reverse=True), now
        nodes.update(_take(self._sweep, SWEEP_NODES))
        nodes.update(_take(self._resend, RESEND_NODES))
        return nodes

    async def publish_desired(self, now: float, epoch: int) -> None:
        """The desired state of every node whose state may have changed (call only while leading, with the broker
        connected); the generations it moved on are stored in one transaction."""
        resealed = await self._deliver_secrets()
        if epoch != self._epoch:  # every node again, under the new epoch
            if self._epoch is not None:
                self.forget_sent()
            self._epoch = epoch
        writes: list[tuple[str, int]] = []
        try:
            for i, node_id in enumerate(sorted(self._changed_nodes(resealed)), 1):
                if i % STEP_NODES == 0:
                    await asyncio.sleep(0)  # the loop serves others between steps (heartbeats, REST, keep-alive)
                # each node on its own: one node's desired state that cannot be built or sent (the wire refuses
                # it, over its cap or with a string it cannot carry) is an event and a condition on that node, and
                # every other node still gets its own (issue 16: one such node used to stop every round)
                try:
                    gen = self._publish_node(node_id, now, epoch)
                except (WireError, ValueError, TypeError, KeyError) as exc:
                    self._refuse(node_id, f"{type(exc).__name__}: {exc}")
                else:
                    self._accept(node_id)
                    if gen is not None:
                        writes.append((node_id, gen))
        finally:
            if writes:
                await self.store.txn([put(model.nodegen_key(n), str(g).encode()) for n, g in writes])

    def _publish_node(self, node_id: str, now: float, epoch: int) -> int | None:
        """Send the node's desired state if it differs from what it was sent (or it was not sent since the last
        connect); returns the generation to store when it moved on, else None."""
        specs = self.desired_for(node_id)
        same = self._content.get(node_id) == specs and node_id in self.nodegen
        if same and node_id in self._sent:
            return None
        # a new generation whenever this process publishes a different set (or the first time): agents keep
        # every replica whose spec hash is unchanged, so a higher generation never restarts anything; the same
        # set again (a reconnect, a new epoch) keeps its generation, which agents take as nothing new
        gen = self.nodegen[node_id] if same else self.nodegen.get(node_id, 0) + 1
        msg = DesiredState(node_id=node_id, generation=gen, epoch=epoch, issued_at=now, replicas=specs)
        payload = wire.encode(msg)
        try:
            self.mqtt.publish_nowait(topics.node_desired(node_id), payload, qos=1, retain=True)
            self.metrics.mqtt("out", "desired", len(payload))
        except MqttError as exc:
            log.warning("desired state for %s not sent: %s", node_id, exc)
            self._dirty.setdefault(node_id, None)  # tried again next round
            return None
        self._content[node_id] = specs
        self._sent.add(node_id)
        if gen == self.nodegen.get(node_id):
            return None
        self.nodegen[node_id] = gen
        return gen

    def _refuse(self, node_id: str, why: str) -> None:
        """Said once per distinct reason (an event, the log), kept as the node's condition until it clears."""
        message = f"desired state not sent, the node keeps its last one: {why}"[:1000]
        if self.refused.get(node_id) != message:
            log.warning("node %s: %s", node_id, message)
            self.journal.event("Warning", "DesiredStateRefused", f"node/{node_id}", message)
        self.refused[node_id] = message
        self.cluster.problems[f"node/{node_id}"] = message

    def _accept(self, node_id: str) -> None:
        if self.refused.pop(node_id, None) is not None:
            self.cluster.problems.pop(f"node/{node_id}", None)
            self.journal.event("Normal", "DesiredStateSent", f"node/{node_id}", "desired state delivered again")

    async def _deliver_secrets(self) -> set[str]:
        """Seal what the nodes' replicas consume; returns the nodes whose boxes changed (their desired state is
        re-checked), not every consumer: those would be every round's work (issue 17)."""
        wants = self.cluster.secret_wants()
        if not wants and self._delivery is None:
            return set()
        if self.secrets is None:
            for node, ns, name in sorted(wants - self._undeliverable):
                self.journal.event("Warning", "SecretUndeliverable", f"node/{node}", f"secret {ns}/{name}: this "
                                   "coordinator runs no secrets service, so nothing can be delivered")
            self._undeliverable = wants
            return set()
        if self._delivery is None:
            self._delivery = SecretDelivery(self.secrets, self.store, clock=self.clock)
        try:
            fresh = await self._delivery.refresh(wants)
        except StoreError as exc:  # boxes may be half updated: every consumer is re-checked (in turn)
            log.warning("secret delivery skipped this round: %s", exc)
            return {node for node, _, _ in wants}
        for (node, ns, name), why in sorted(fresh.items()):
            self.journal.event("Warning", "SecretUndeliverable", f"node/{node}", f"{ns}/{name}: {why}")
        return set(self._delivery.changed)

    async def publish_dashboard(self) -> None:
        """The human-readable mirror and Home Assistant discovery: only what changed, retained. A publish that
        fails makes the next calls send everything again (which topics went out is not known). Up to
        DASH_CALLS slices of the mirror (each bounded by dashboard.MAX_TOPICS), with the loop serving others
        between them; what is left waits for the next round (`mirror.backlog`)."""
        for i in range(DASH_CALLS):
            if not self.mqtt.connected:
                return
            if i:
                if not self.mirror.backlog:
                    return
                await asyncio.sleep(0)
            for topic, payload in self.mirror.changes().items():
                try:
                    self.mqtt.publish_nowait(topic, payload.encode(), qos=topics.DASH_SPEC.qos, retain=True)
                except MqttError:
                    self.mirror.forget()
                    return

    def clear_node(self, node_id: str) -> None:
        """A deleted node: empty its retained presence, observed state, mirror and Home Assistant entities."""
        gone = [topics.node_status(node_id), topics.node_observed(node_id), topics.node_overlay(node_id),
                topics.node_peers(node_id), topics.node_services(node_id), *dashboard.cleared_topics(node_id)]
        self._peers_sent.pop(node_id, None)
        self._services_sent.pop(node_id, None)
        for cleared in self._passes:
            cleared.add(node_id)
        self.mirror.drop(node_id)
        for topic in gone:
            self.mqtt.publish_nowait(topic, b"", qos=1, retain=True)


class _Steps:
    """Ends a step of the loop every STEP_NODES messages published or LOOK_NODES nodes compared."""

    def __init__(self) -> None:
        self.looks = 0
        self.sends = 0

    async def looked(self) -> None:
        self.looks += 1
        if self.looks % LOOK_NODES == 0:
            await asyncio.sleep(0)

    async def sent(self) -> None:
        self.sends += 1
        if self.sends % STEP_NODES == 0:
            await asyncio.sleep(0)


def _take(queue: list[str], n: int) -> list[str]:
    """The last `n` items of a work queue (kept in reverse order), removed from it (n <= 0: none)."""
    cut = max(0, len(queue) - max(0, n))
    taken = queue[cut:]
    del queue[cut:]
    return taken
