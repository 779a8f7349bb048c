"""The coordinator engine (adapter): store + MQTT + the cores, in one reconcile loop.

Every decision comes from a core — `membership` (who is up), `lifecycle` (what each workload needs),
`scheduler` (where a replica goes), `translate` (what a node is told) — and this class only gathers their
inputs, persists their outputs in one store transaction per round, publishes each node's full desired state
(retained, generation + epoch) when it changed, and records events. API calls mutate through the same lock,
so a round always sees a consistent picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from broker import wire
from broker.client import MqttClient
from broker.errors import MqttError, WireError
from broker.wire import (
    CoordinatorStatus,
    NodeStatus,
    Presence,
    RelayInfo,
    ReplicaObserved,
    ReplicaSpec,
    topics,
)
from coordinator import gc_pace, membership, model
from coordinator.cluster import Cluster
from coordinator.inbox import Inbox
from coordinator.journal import Journal, retained
from coordinator.judging import MembershipJudge
from coordinator.leadership import Leadership, SoloLeadership
from coordinator.link import LinkClock, LoopWatch
from coordinator.membership import MembershipConfig, NodeInfo, NodeState
from coordinator.metrics import Metrics
from coordinator.model import Event, NodeAdmin, ReplicaRecord, WorkloadRecord
from coordinator.operations import Operations
from coordinator.outbox import Outbox
from coordinator.overlay import OverlayBook, Want
from coordinator.overlay_ops import PAIRS_PREFIX, OverlayOps, pair_key, pairs_from_store
from coordinator.placing import Placer
from coordinator.placing import let_others_run as _let_others_run
from coordinator.plan_apply import PlanApplier
from coordinator.policy import Policy
from coordinator.replica_table import ReplicaTable, workload_of
from coordinator.scheduler import SchedulerConfig, Snapshot
from coordinator.services_ops import VIPS_PREFIX, ServiceRegistry
from coordinator.store import Store, StoreError, put
from coordinator.store import delete as delete_op

log = logging.getLogger(__name__)

MAX_HONOURED_EPOCH = 2**40  # past any real epoch (an etcd revision, a restart counter), well within the wire cap
DASH_INTERVAL_S = 2.0  # the dashboard mirror is throttled: it costs little even with many nodes
FOLLOWER_REFRESH_S = 1.0  # how often a follower re-reads the store to serve fresh reads
SETTLE_S = 2.0  # after (re)connecting: let retained node state arrive before judging replicas
MORE_PAUSE_S = 0.05  # between two bounded rounds when work is left over (the loop serves others meanwhile)
EVENTS_PER_STEP = 50  # membership events journaled in one step of a round (~0.1-0.2 ms each, logged too)
STEP_REPLICAS = 1000  # replicas' worth of workloads reconciled in one step of a round
SWEEP_REPLICAS = 500  # about this many replicas' worth of workloads re-checked each round, changed or not...
SWEEP_PERIOD_S = 10.0  # ... in passes over every workload that start at most this often


def _revoked_at(value: bytes) -> float:
    try:
        return float(json.loads(value).get("at", 0.0))
    except (ValueError, TypeError, AttributeError):
        return 0.0


_REPLICA_FIELDS = tuple(f.name for f in fields(ReplicaRecord))


def replica_json(r: ReplicaRecord) -> bytes:
    """model.to_json(r), byte for byte, without dataclasses.asdict's deep copy (a 2,500-replica apply wrote 5,000
    records in a round, and asdict was a third of it)."""
    return json.dumps({name: getattr(r, name) for name in _REPLICA_FIELDS}, sort_keys=True,
                      separators=(",", ":")).encode()




@dataclass(frozen=True)
class CoordinatorConfig:
    coordinator_id: str = "main"
    tick_s: float = 0.5
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    api_url: str = ""
    seed: int = 0
    policies: tuple[Policy, ...] | None = None  # None: the secure default set
    relays: tuple[RelayInfo, ...] = ()  # the overlay relays every node holds a link to (coordinator.overlay)


class Coordinator:
    """The engine. `cluster` is the picture the cores decide from, `journal` the store writes and events of a
    round, `ops` what the REST layer asks (apply, scale, rollback, node administration, commands)."""

    def __init__(self, cfg: CoordinatorConfig, *, store: Store, mqtt: MqttClient,
                 clock: Callable[[], float] = time.time, leadership: Leadership | None = None,
                 secrets: Any = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.store = store
        self.mqtt = mqtt
        self.clock = clock
        self.leadership: Leadership = leadership or SoloLeadership()
        self.solo = isinstance(self.leadership, SoloLeadership)
        self._leading = False  # this process acted as leader in its last round
        self._refreshed_at = 0.0
        self._store_down = False
        self._state_read = False
        self.epoch = 0
        self.cluster = Cluster()
        self._lock = asyncio.Lock()
        self.journal = Journal(store, clock=clock, lock=self._lock, recording=lambda: self.acting)
        self.metrics = Metrics(self)
        self.placer = Placer(self.cluster, self.journal, self.metrics, membership=cfg.membership,
                             scheduler=cfg.scheduler, seed=cfg.seed, save_replica=self._save_replica)
        # desired state seals the secrets a node's replicas consume (`secrets`: coordinator.secrets' service, when
        # the daemon runs one) to that node's enrolled key
        self.outbox = Outbox(self.cluster, self.journal, mqtt=mqtt, store=store, metrics=self.metrics, clock=clock,
                             secrets=secrets)
        self.overlay = OverlayBook(relays=cfg.relays, present=self._overlay_present)
        self.ops = Operations(self.cluster, self.journal, bus=mqtt, clock=clock, lock=self._lock, wake=self.wake,
                              policies=cfg.policies, on_node_deleted=self._node_deleted,
                              on_revoked=self._revoked)
        self.services = ServiceRegistry(self.cluster, self.journal, clock=clock)
        self.overlay_ops = OverlayOps(self.overlay, self.cluster, self.journal, commander=self.ops, clock=clock,
                                      lock=self._lock, wake=self.wake)
        self.inbox = Inbox(self.cluster, self.journal, metrics=self.metrics, clock=clock, cfg=cfg.membership,
                           wake=self.wake, resolve=self.ops.resolve, overlay=self.overlay,
                           acting=lambda: self.acting)
        # what the next round looks at (issue 17: rounds work on what changed): workloads whose replicas changed
        # (the table's change set), whose nodes changed (Cluster.touch_node), whose record was replaced, that are
        # not settled (something in flux, or a deadline running), and a slice of the rest (the sweep)
        self._replica_changes = self.cluster.replicas.watch()
        self._node_changes = self.cluster.watch_nodes()
        self._workloads_seen: dict[str, WorkloadRecord] = {}
        self._unsettled: set[str] = set()
        self._sweep: list[str] = []
        self._swept_at = float("-inf")
        self._more = False  # the round left work for the next one
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dash_at = 0.0
        self._settle_until = 0.0
        self.link = LinkClock(started_at=clock())
        self.applier = PlanApplier(self.cluster, self.journal, self.ops, self.link,
                                   lost_after_s=cfg.membership.lost_after_s, save_replica=self._save_replica)
        self.judge = MembershipJudge(self.cluster, cfg.membership, link=self.link,
                                     connected=lambda: self.mqtt.connected)
        self.monotonic = monotonic  # the loop's own pace (a stall is measured on it, never on the wall clock)
        self._loop_watch = LoopWatch.watchdog(cfg.tick_s)  # turned by _watchdog and by each turn of _loop
        self._watch_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the watchdog's (tests: fake time)
        self._watch_task: asyncio.Task[None] | None = None
        self.stalls = 0  # loop stalls noticed (each treated like a broker outage)
        self.rounds = 0
        self.metrics_leader_changes = 0
        self.ready = False
        self.last_round_s = 0.0
        self.round_failures = 0  # rounds failed in a row (0: the last one completed)
        self.round_error = ""  # why the last failed round failed
        self.epoch_behind = 0  # the highest epoch nodes honour, when above this coordinator's (0: none is)
        self._gc_paced = False  # this engine holds one of coordinator.gc_pace's installs

    @property
    def workloads(self) -> dict[str, WorkloadRecord]:
        return self.cluster.workloads

    @property
    def replicas(self) -> ReplicaTable:
        return self.cluster.replicas

    @property
    def members(self) -> dict[str, NodeInfo]:
        return self.cluster.members

    @property
    def evaluations(self) -> int:
        """membership.evaluate calls so far (coordinator.judging: a round with no deadline due makes none)."""
        return self.judge.evaluations

    @property
    def secrets(self) -> Any:
        return self.outbox.secrets

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._gc_paced:  # full collections walk only what is new since the last (a fleet's state is frozen)
            gc_pace.install()
            self._gc_paced = True
        await self._load()
        self.mqtt.on_connect(self._on_connected)
        self.mqtt.on_disconnect(self._on_disconnected)
        for channel, handler in self.inbox.handlers():
            await self.mqtt.subscribe(topics.node_channel_filter(channel), handler, qos=1)
        await self.mqtt.start()
        self._task = asyncio.create_task(self._loop())
        self._watch_task = asyncio.create_task(self._watchdog(), name="coordinator loop watchdog")

    async def stop(self) -> None:
        for task in (self._task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(MqttError, TimeoutError):  # a broker that is gone must not fail the shutdown
            async with asyncio.timeout(2):
                await self.mqtt.publish(topics.coord_status(self.cfg.coordinator_id), wire.encode(CoordinatorStatus(
                    coordinator_id=self.cfg.coordinator_id, presence=Presence.OFFLINE, ts=self.clock(),
                    api_url=self.cfg.api_url)), qos=1, retain=True)
        try:
            await self.mqtt.stop()
        finally:
            if self._gc_paced:
                self._gc_paced = False
                gc_pace.uninstall()

    async def _load(self) -> None:
        if self.solo:
            entry = await self.store.get(model.EPOCH_KEY)
            self.epoch = (int(entry.value) if entry else 0) + 1
            await self.store.txn([put(model.EPOCH_KEY, str(self.epoch).encode())])
            assert isinstance(self.leadership, SoloLeadership)
            self.leadership.epoch = self.epoch
        await self._read_state()
        log.info("loaded %d workloads, %d replicas; leadership epoch %d", len(self.workloads), len(self.replicas),
                 self.epoch)
        self.ready = True

    async def _read_state(self) -> None:
        """(Re)load everything the store holds. A follower does this to serve fresh reads; a new leader to start
        from what the previous one committed. Events new since the last read go to the event streams."""
        workloads: dict[str, WorkloadRecord] = {}
        for e in await self.store.list("/workloads/"):
            w = model.from_json(WorkloadRecord, e.value)
            workloads[w.key] = replace(w, history=tuple(w.history))
        replicas = {}
        for e in await self.store.list("/replicas/"):
            r = model.from_json(ReplicaRecord, e.value)
            replicas[r.replica_id] = r
        admin = {e.key.rsplit("/", 1)[1]: model.from_json(NodeAdmin, e.value) for e in await self.store.list("/nodes/")}
        revoked = {e.key.rsplit("/", 1)[1] for e in await self.store.list("/certs/")
                   if json.loads(e.value).get("revoked")}
        nodegen = {e.key.rsplit("/", 1)[1]: int(e.value) for e in await self.store.list("/nodegen/")}
        kept = pairs_from_store([(e.key, e.value) for e in await self.store.list(PAIRS_PREFIX)])
        vips = [(e.key, e.value) for e in await self.store.list(VIPS_PREFIX)]
        known = [(e.key.rsplit("/", 1)[1], e.value) for e in await self.store.list("/members/")]
        revoked_serials = tuple(serial for _, serial in sorted(  # oldest first: the newest are kept past the cap
            (_revoked_at(e.value), e.key.rsplit("/", 1)[1]) for e in await self.store.list("/revoked/")))
        events = retained([model.from_json(Event, e.value) for e in await self.store.list("/events/")])
        c = self.cluster
        c.replicas.replace_all(replicas)  # the same indexed table: only what differs is marked changed
        c.invalidate_views()
        c.workloads, c.admin, self.outbox.nodegen = workloads, admin, nodegen
        c.revoked_nodes |= revoked
        now = self.clock()
        for node_id, payload in known:  # enrolled nodes not heard of (yet): listed offline with their last facts,
            if node_id in c.members or node_id in c.revoked_nodes:  # lost after lost_after_s like any silent node;
                continue  # a retained status arriving later replaces this
            try:
                status = wire.decode(payload)
            except WireError:
                continue
            if isinstance(status, NodeStatus) and status.node_id == node_id:
                c.members[node_id] = NodeInfo(node_id=node_id, state=NodeState.OFFLINE, status=status,
                                              first_seen=now, state_since=now)
                c.touch_node(node_id)
        self.services.load(vips)
        book = self.overlay  # kept pairs from the store; a probe's pairs (in memory) stay until they expire
        book.set_wants({**{k: w for k, w in book.wants.items() if w.until is not None},
                        **{k: Want(None, why) for k, why in kept.items()}})
        book.revoked = tuple(dict.fromkeys((*book.revoked, *revoked_serials)))
        # the first read is the history; after it, new events go to the streams
        self.journal.load(events, stream_new=self._state_read)
        self._state_read = True

    async def _on_connected(self) -> None:
        if not self.mqtt.connected:
            return  # the link dropped again while re-subscribing: the next connect runs this
        now = self.clock()
        status = CoordinatorStatus(coordinator_id=self.cfg.coordinator_id, presence=Presence.ONLINE,
                                   ts=self.clock(), api_url=self.cfg.api_url)
        self.mqtt.publish_nowait(topics.coord_status(self.cfg.coordinator_id), wire.encode(status), qos=1,
                                 retain=True)
        # the broker may have lost its retained store: publish every node's desired state again (same
        # generation, so agents that already have it change nothing)
        self.outbox.forget_sent()
        self._settle_until = now + SETTLE_S
        self.link.connected(now, self.cfg.membership)  # the nodes reconnect on their own backoff: give them time
        self.wake()

    def _on_disconnected(self) -> None:
        # wills that arrived just before (a broker shutting down publishes every will) are not the nodes' fault,
        # and while the link is down no node is silent: see membership.judge_wills / evaluate
        self.link.disconnected(self.clock())
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def _node_deleted(self, node_id: str) -> None:
        """A node forgotten by `delete node`: its retained topics, and its overlay pairs (the store's go out with
        the next round's writes)."""
        self.outbox.clear_node(node_id)
        for a, b in [k for k, w in self.overlay.wants.items() if node_id in k and w.until is None]:
            self.journal.queue(delete_op(pair_key(a, b)))
        self.overlay.forget_node(node_id)

    def _revoked(self, serials: tuple[str, ...]) -> None:
        self.overlay.revoked = tuple(dict.fromkeys((*self.overlay.revoked, *serials)))
        self.wake()

    def _overlay_present(self, node_id: str) -> bool:
        """A node whose overlay counts: online and not revoked (an offline node's last report is not a path)."""
        info = self.cluster.members.get(node_id)
        return info is not None and info.online and node_id not in self.cluster.revoked_nodes

    # ---- the loop ------------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.tick_s):
                    await self._wake.wait()
            self._wake.clear()
            self._check_stall()
            try:
                if self.leadership.is_leader and await self.leadership.still_leader():
                    if not self._leading or self.epoch != (self.leadership.epoch or self.epoch):
                        await self._take_over()  # new leadership (or lost and won again within one round)
                    async with self._lock:
                        started = time.perf_counter()
                        await self.reconcile()
                        self.last_round_s = time.perf_counter() - started
                    self.round_failures, self.round_error = 0, ""
                else:
                    if self._leading:
                        self._leading = False
                        self.journal.drop_uncommitted()  # never replayed under another leader's term
                        self._fence(None)
                        log.warning("no longer the leader (epoch %d): stopped acting", self.epoch)
                    await self._follow()
            except Exception as exc:
                # reported by /readyz once it keeps happening (ROUND_FAILURES_UNREADY in a row); logged in full once
                # per distinct error, not twice a second
                error = f"{type(exc).__name__}: {exc}"[:500]
                self.round_failures += 1
                if error != self.round_error:
                    log.exception("reconcile round failed; retrying")
                self.round_error = error

    async def _watchdog(self) -> None:
        """Turns the loop watch every WATCH_S: while the event loop runs (a slow round awaiting the store included),
        the gaps stay short; only a loop that did not run at all leaves a gap past the limit (a stall)."""
        while True:
            await self._watch_sleep(self._loop_watch.tick_s)
            self._check_stall()

    def _check_stall(self) -> None:
        """A loop that stalled heard nobody meanwhile (coordinator.link.LoopWatch, turned by the watchdog and by each
        turn of the engine's loop, whichever runs first after the stall): every node's silence and grace clocks move
        on by the stall, as after a broker outage, so no node is judged silent for it. Not while the broker link is
        down: the outage already counts that time (`MembershipJudge.hearing` moves the clocks by all of it)."""
        stalled = self._loop_watch.turned(self.monotonic())
        if stalled is None:
            return
        now = self.clock()
        self.stalls += 1
        self.link.stalled(stalled)
        if self.link.down_since is not None:
            log.warning("the coordinator's loop stalled for %.1f s during a broker outage (counted with it)", stalled)
            return
        self.cluster.members = {n: membership.pause_clocks(i, stalled, now) for n, i in self.members.items()}
        log.warning("the coordinator's loop stalled for %.1f s: nobody was heard meanwhile, so no node is judged "
                    "silent for it", stalled)

    async def _take_over(self) -> None:
        """Leadership gained: start from what the store holds (the previous leader's last commits) and publish every
        node's desired state under the new epoch (same specs, so agents restart nothing)."""
        async with self._lock:
            if not self.solo:
                self.journal.drop_uncommitted()  # a former term's unflushed writes must not overwrite the store now
            self.epoch = int(self.leadership.epoch or 0)
            self._fence(self.epoch)
            await self._read_state()
            self.outbox.forget_sent()
            self._unsettled |= set(self.workloads)  # a new term looks at every workload once
            # no new settle period: a follower has been hearing node status and observed state all along (the
            # one from its own broker connect still applies), so it can act on the first round
            self._leading = True
        self.metrics_leader_changes += 1
        if not self.solo:
            log.warning("leading now (epoch %d)", self.epoch)
            self.journal.event("Normal", "LeaderElected", f"coordinator/{self.cfg.coordinator_id}",
                       f"coordinator {self.cfg.coordinator_id} leads with epoch {self.epoch}")

    def _fence(self, epoch: int | None) -> None:
        """Make every store write require the election key at `epoch` (None: unfenced, as a follower whose only
        writes are enrolments and renewals, each compare-and-swap); nothing for the only coordinator (no key)."""
        if (key := self.leadership.key) is not None:
            self.store.fence((key, epoch) if epoch is not None else None)

    @property
    def acting(self) -> bool:
        """This process may write cluster state now (the only coordinator, or the leader that has taken over)."""
        return self.solo or self._leading

    async def _follow(self) -> None:
        """A follower serves reads: refresh from the store now and then, keep membership views current (without
        recording events: only the leader writes)."""
        now = self.clock()
        await self.judge.judge(now)  # no events: only the leader records them
        if now - self._refreshed_at >= FOLLOWER_REFRESH_S:
            self._refreshed_at = now
            try:
                await self._read_state()
                if self._store_down:
                    self._store_down = False
                    log.warning("state store reachable again: serving fresh reads")
            except StoreError as exc:
                if not self._store_down:  # once per outage, not every second
                    self._store_down = True
                    log.warning("cannot refresh from the state store (reads may be stale until it is back): %s", exc)
        self._services_round()  # a follower's view for reads (it allocates nothing and records nothing)

    async def reconcile(self) -> None:
        self._more = False
        try:
            await self._round()
        finally:
            if self._more or self.outbox.backlog or self.outbox.mirror.backlog:
                # work left over from a bounded round (creations, placements, a resend): the next round soon, not
                # a tick later; the loop serves everyone else in between
                asyncio.get_running_loop().call_later(MORE_PAUSE_S, self.wake)

    async def _round(self) -> None:
        self.rounds += 1
        now = self.clock()
        self.overlay.expire(now)
        for i, ev in enumerate(await self.judge.judge(now), 1):
            self.journal.event("Warning" if ev.warning else "Normal", ev.reason, f"node/{ev.node_id}", ev.message)
            if i % EVENTS_PER_STEP == 0:  # a mass loss is thousands of events
                await _let_others_run()
        await self._check_epoch()
        await _let_others_run()
        if now < self._settle_until:
            # just started or reconnected: the retained statuses and observed states are still arriving, and a
            # replica not yet heard from must not look unready (a rollout would stop healthy old replicas)
            await self.journal.flush(sliced=True)  # a fleet joining meanwhile: thousands of members and events
            await self._publish_desired(now)
            return
        work = 0
        for key in self._workloads_due():
            if (w := self.workloads.get(key)) is None:
                continue
            try:
                settled = await self._reconcile_workload(w, now)
            except Exception as exc:  # one broken workload must not stop the control loop for every other one
                self._workload_failed(key, exc)
                self._unsettled.add(key)
            else:
                self.cluster.problems.pop(f"workload/{key}", None)
                if settled:
                    self._unsettled.discard(key)
                else:
                    self._unsettled.add(key)
            work += 1 + len(self.replicas.of_workload(key))
            if work >= STEP_REPLICAS:
                work = 0
                await _let_others_run()
        await _let_others_run()
        await self._schedule_pending(now)
        self._services_round()
        await _let_others_run()
        await self.journal.flush(sliced=True)
        await _let_others_run()
        await self._publish_desired(now)
        if now - self._dash_at >= DASH_INTERVAL_S or self.outbox.mirror.backlog:  # a resend: its next slice
            self._dash_at = now
            try:
                await self.outbox.publish_dashboard()
            except Exception:  # the mirror is a convenience: it never costs the round
                log.exception("dashboard mirror not published")

    def _services_round(self) -> None:
        """The service registry (coordinator.services): addresses, endpoints, tables, and the overlay pairs they need.
        A failure is the round's problem for services alone: desired state still goes out."""
        try:
            self.services.round(acting=self.acting)
            self.overlay.set_derived(self.services.pairs())
        except Exception as exc:
            log.exception("service registry round failed")
            self.cluster.problems["services"] = f"{type(exc).__name__}: {exc}"[:500]
        else:
            self.cluster.problems.pop("services", None)

    async def _check_epoch(self) -> None:
        """Nodes ignore desired state under an epoch below the highest they honour (they report it in heartbeats).
        A coordinator behind them (its state restored from an older copy) would be ignored by all of them, in
        silence: the only coordinator raises its epoch past theirs; a replicated one cannot (the epoch is etcd's
        revision), so it says what to do, once per epoch reported, and /readyz reports it (docs/operations.md).
        A report beyond any real epoch (MAX_HONOURED_EPOCH) is a node lying or broken: it is ignored, since
        following it would put the epoch past what the wire can carry and every node would be refused."""
        ahead = {n: hb.max_epoch for n, i in self.members.items()
                 if (hb := i.heartbeat) is not None and hb.max_epoch is not None
                 and self.epoch < hb.max_epoch <= MAX_HONOURED_EPOCH}
        behind, reported, self.epoch_behind = self.epoch_behind, max(ahead.values(), default=0), 0
        if not ahead:
            return
        nodes = ", ".join(sorted(ahead)[:5]) + (f" and {len(ahead) - 5} more" if len(ahead) > 5 else "")
        if self.solo:
            new = reported + 1
            await self.store.txn([put(model.EPOCH_KEY, str(new).encode())])  # the store first: a failed write
            old, self.epoch = self.epoch, new  # leaves memory as it was, and the next round tries again
            assert isinstance(self.leadership, SoloLeadership)
            self.leadership.epoch = self.epoch
            self.outbox.forget_sent()  # everything again, under the new epoch
            self.journal.event("Warning", "EpochRegressed", f"coordinator/{self.cfg.coordinator_id}",
                               f"nodes {nodes} honour epoch {reported}, above this coordinator's {old}: its "
                               f"state was restored from an older copy. Raised the epoch to {self.epoch}; check "
                               "that workloads are as expected (changes made after the backup are gone)")
            return
        self.epoch_behind = reported
        if reported != behind:  # once per epoch reported, not every round
            self.journal.event("Warning", "EpochRegressed", f"coordinator/{self.cfg.coordinator_id}",
                               f"nodes {nodes} honour epoch {reported}, above this leader's {self.epoch}, and "
                               "ignore its desired state: the etcd state was restored from an older snapshot. Advance "
                               "etcd's revision past it and restart the coordinators (docs/operations.md)")

    def _workloads_due(self) -> list[str]:
        """The workloads this round reconciles: those whose inputs may have changed since they were last looked at
        (their replicas, their nodes, their record), those not settled, and the next slice of the sweep (about
        SWEEP_REPLICAS replicas' worth of workloads a round, so every workload is looked at again within a few
        seconds whatever the marks say)."""
        _, due = self._replica_changes.take()
        due |= self._unsettled
        for node_id in self._node_changes:
            due.update(workload_of(r) for r in self.replicas.on_node(node_id))
        self._node_changes.clear()
        seen = self._workloads_seen
        for key, w in self.workloads.items():  # records are replaced, never edited: identity says "unchanged"
            if seen.get(key) is not w:
                seen[key] = w
                due.add(key)
        for key in [k for k in seen if k not in self.workloads]:
            del seen[key]
        now = self.clock()
        if not self._sweep and now - self._swept_at >= SWEEP_PERIOD_S:  # a new pass, at most once a period
            self._sweep, self._swept_at = sorted(self.workloads, reverse=True), now
        budget = SWEEP_REPLICAS
        while self._sweep and budget > 0:
            key = self._sweep.pop()
            due.add(key)
            budget -= max(1, len(self.replicas.of_workload(key)))
        return sorted(key for key in due if key in self.workloads)

    def _workload_failed(self, key: str, exc: Exception) -> None:
        """An event and a condition on that workload, once per distinct error (not twice a second)."""
        obj, message = f"workload/{key}", f"reconcile failed: {type(exc).__name__}: {exc}"[:500]
        if self.cluster.problems.get(obj) != message:
            log.exception("reconcile of workload %s failed", key)
            self.journal.event("Warning", "ReconcileFailed", obj, message)
        self.cluster.problems[obj] = message

    async def _reconcile_workload(self, w: WorkloadRecord, now: float) -> bool:
        """Plan one workload and apply the plan (coordinator.plan_apply); whether it is settled."""
        settled, more = await self.applier.reconcile(w, now)
        self._more |= more
        return settled

    def _save_replica(self, r: ReplicaRecord) -> None:
        self.replicas[r.replica_id] = r
        self.journal.queue(put(model.replica_key(r.namespace, r.workload, r.replica_id), replica_json(r)))

    # ---- scheduling (coordinator.placing) -----------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        """What the scheduler sees of the nodes now."""
        return self.placer.snapshot(now, revision=self.rounds)

    async def _schedule_pending(self, now: float) -> None:
        await self.placer.schedule_pending(now, revision=self.rounds)

    # ---- desired state out ---------------------------------------------------------------------------------

    def desired_for(self, node_id: str) -> tuple[ReplicaSpec, ...]:
        return self.outbox.desired_for(node_id)

    async def _publish_desired(self, now: float) -> None:
        if not self.mqtt.connected or not await self.leadership.still_leader():
            return  # a leader that may have lost its lease publishes nothing (fencing backs this up)
        # service tables first: a process replica gets its <SVC>_SERVICE_* variables from the table its node holds
        # when it starts it (the broker delivers one connection's messages in order)
        await self.outbox.publish_services(self.services.tables, self.services.zone_of, now, self.epoch)
        await self.outbox.publish_peers(self.overlay, now, self.epoch)
        await _let_others_run()
        await self.outbox.publish_desired(now, self.epoch)

    def observed_of(self, r: ReplicaRecord) -> ReplicaObserved | None:
        return self.cluster.observed_of(r)
