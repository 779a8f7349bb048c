"""The edge agent daemon: MQTT in and out, the reconcile loop, probes, heartbeats and gates (adapter).

Decisions come from the cores — `reconcile` (what to start/stop), `desired` (which desired states to accept),
`health` (probe verdicts), `images` (when to pull), `report` (what to publish), `secret_layout` (secret changes),
`firmware_profiles.gates` (when the device must not take work) — and this module only carries them out.
Autonomy (ARCHITECTURE §5): the desired state and the per-replica bookkeeping are persisted, so with the broker
gone — for minutes or across a reboot — the agent keeps running, restarting and probing what it was told to run,
and on reconnect it changes nothing that is healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from broker import wire
from broker.client import Message, MqttClient
from broker.errors import MqttError, WireError
from broker.outbox import Outcome
from broker.wire import (
    DesiredState,
    Heartbeat,
    NodeFacts,
    NodeStatus,
    ObservedState,
    Presence,
    ReplicaSpec,
    topics,
)
from edge_agent import beat as beats
from edge_agent import facts as node_facts
from edge_agent import health, images, renewal, report
from edge_agent.beat import BeatPolicy, Sent
from edge_agent.commands import CommandHandler
from edge_agent.config import AgentConfig, StorageSettings
from edge_agent.desired import Accepted, consider
from edge_agent.errors import AgentError, ImageUnavailable, RuntimeError_, StateError
from edge_agent.gating import Gate, GateState
from edge_agent.identity import NodeIdentity, private_key
from edge_agent.metrics import Counters, replica_samples
from edge_agent.metrics import Sample as MetricsSample
from edge_agent.overlay import REFRESH_S, AgentOverlay, OverlaySettings
from edge_agent.probes import run_probe
from edge_agent.reconcile import ReplicaRecord, action_failed, observe, reconcile
from edge_agent.runtime.base import Instance, InstanceState, Runtime, RuntimeInfo
from edge_agent.secret_layout import Materialized, needs_secrets, owner_of, secret_changes
from edge_agent.secrets import SecretFiles, SecretVault, default_root
from edge_agent.services import AgentServices, ServiceSettings
from edge_agent.state import StateStore
from edge_agent.storage_plan import StorageFacts, resolve_quota, storage_moved

if TYPE_CHECKING:
    from edge_agent.storage import NodeStorage

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        runtime: Runtime,
        mqtt: MqttClient,
        gate: Gate,
        profile_name: str,
        heartbeat_interval_s: float,
        beat: BeatPolicy | None = None,
        keepalive_s: int | None = None,
        clock: Callable[[], float] = time.time,
        identity: NodeIdentity | None = None,
        overlay: AgentOverlay | None = None,
        services: ServiceSettings | None = None,
        storage: StorageSettings | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.runtime = runtime
        self.mqtt = mqtt
        self.gate = gate
        self.profile_name = profile_name
        self.heartbeat_interval_s = heartbeat_interval_s
        # when to send a heartbeat (`edge_agent.beat`); without one, every `heartbeat_interval_s` (pair tests)
        self.beat = beat or BeatPolicy.every(heartbeat_interval_s)
        self.keepalive_s = keepalive_s  # stated in the status with the heartbeat maximum (the coordinator's TTL)
        self._sent: Sent | None = None  # the last heartbeat sent
        self.clock = clock
        self.store = StateStore(cfg.data_dir)
        local = self.store.load()
        self.desired: DesiredState | None = local.desired
        self.max_epoch = local.max_epoch
        self.records: dict[str, ReplicaRecord] = local.records
        self.boot_id = secrets.token_hex(8)
        self.runtime_info = RuntimeInfo(name="unknown")
        self.gate_state: GateState = gate.initial()
        self.readings = node_facts.Readings(None, None, {})
        self.instances: list[Instance] = []
        self.ready: dict[str, bool] = {}
        self.unready: dict[str, str] = {}  # replica -> why its readiness probe fails (until it is ready)
        self._trackers: dict[tuple[str, str], health.ProbeTracker] = {}
        self._probing: set[tuple[str, str]] = set()
        self._pulls: dict[str, images.PullState] = {}
        self._pull_tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._observed_key: object = None
        self._status_key: object = None
        self._seq = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.commands = CommandHandler(self)
        self.identity = identity
        self.reconciles = 0
        self.desired_received_at: float | None = None
        self.counters = Counters()
        vault = SecretVault(self.node_id, lambda: private_key(cfg.data_dir))
        self.secret_files = SecretFiles(self.node_id, vault, default_root(), cluster=cfg.cluster_id)
        self._secret_versions: dict[str, str] = {}  # instance -> secret versions its files hold (in-place updates)
        self.last_heartbeat: Heartbeat | None = None
        self.overlay = overlay or AgentOverlay(
            node_id=self.node_id, mqtt=mqtt, clock=clock, identity=lambda: self.identity,
            settings=OverlaySettings(enabled=cfg.overlay, port=cfg.overlay_port,
                                     refresh_s=max(REFRESH_S, self.beat.max_interval_s)),
            max_epoch=lambda: self.max_epoch)
        # the node's share of the object store (edge_agent.storage): opened at start when its quota is above 0 and
        # the overlay runs (peers reach the chunks only through it); None: this node offers no storage
        self.storage_settings = storage
        self.storage: NodeStorage | None = None
        self.storage_note = ""  # why no storage is offered, when it was asked for
        self._storage_sent: StorageFacts | None = None  # what the last status said
        self.services = AgentServices(node_id=self.node_id, mqtt=mqtt, runtime=runtime, overlay=self.overlay,
                                      clock=clock, settings=services or ServiceSettings(),
                                      max_epoch=lambda: self.max_epoch, spec_of=self._desired_spec)

    def _desired_spec(self, replica_id: str) -> ReplicaSpec | None:
        replicas = self.desired.replicas if self.desired is not None else ()
        return next((r for r in replicas if r.replica_id == replica_id), None)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.runtime_info = await self.runtime.info()
        node_facts.cpu_percent()  # prime the CPU counter
        self.readings = node_facts.read_sensors(self.cfg.sensor_file)
        self.gate_state = self.gate.evaluate(self.gate_state, self.readings)
        if self.desired is not None:
            log.info("restored desired state generation %d (epoch %d, %d replicas) from %s",
                     self.desired.generation, self.desired.epoch, len(self.desired.replicas), self.store.dir)
        self.mqtt.on_connect(self._on_connected)
        await self.mqtt.subscribe(topics.node_desired(self.node_id), self._on_desired_message, qos=1)
        await self.mqtt.subscribe(topics.node_cmd(self.node_id), self.commands.on_message, qos=1)
        await self.overlay.start()  # never raises: without it the node reports why and runs workloads anyway
        await self._open_storage()  # never raises either
        await self.services.start()  # never raises either (after the overlay: the proxy rides it)
        if hasattr(self.runtime, "services"):  # containers point their resolver at the agent only while it answers
            setattr(self.runtime, "services", self.services.enabled)  # noqa: B010
        await self.mqtt.start()
        for coro in (self._reconcile_loop(), self._probe_loop(), self._heartbeat_loop()):
            self._tasks.append(asyncio.create_task(coro))
        if self.identity is not None:
            self._tasks.append(asyncio.create_task(self._renewal_loop()))
        if self.storage is not None:
            self._tasks.append(asyncio.create_task(self.storage.run()))

    async def _open_storage(self) -> None:
        """Open the chunk store and serve it on the overlay, when this node offers storage (logged either way)."""
        wanted = self.storage_settings
        if wanted is None:
            return
        if not wanted.wanted:  # quota 0 (a phone's profile, the owner's choice): nothing to open, nor to import
            quota = resolve_quota(wanted.quota_flag, wanted.profile_quota, profile=wanted.profile, free_bytes=0,
                                  used_bytes=0)
            log.info("storage: none offered (%s)", quota.why)
            return
        if not self.overlay.enabled:
            self.storage_note = f"the overlay does not run ({self.overlay.disabled})"
            log.warning("storage: none offered: peers reach chunks only over the overlay, which %s",
                        self.storage_note)
            return
        try:  # the chunk service rides the overlay (aioquic): a slim install without it offers no storage
            from dataplane.objects.peer import SERVICE
            from edge_agent.storage import NodeStorage
        except ImportError as exc:
            self.storage_note = f"the overlay's libraries are not installed ({exc})"
            log.warning("storage: none offered: %s", self.storage_note)
            return

        try:
            self.storage = await NodeStorage.open(wanted, clock=self.clock)
        except (OSError, AgentError) as exc:
            self.storage_note = f"{wanted.root} unusable: {exc}"
            log.error("storage: none offered: %s", self.storage_note)
            return
        if self.storage is not None:
            self.overlay.serve(SERVICE, self.storage.handler)

    async def stop(self) -> None:
        """Stop the agent itself; workloads keep running (they belong to the node, not to this process)."""
        for task in self._tasks:
            task.cancel()
        for pull in self._pull_tasks.values():
            pull.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.commands.cancel()
        await self.services.stop()
        await self.overlay.stop()
        # the goodbye: `offline` with our clock, acknowledged, then DISCONNECT (mqtt.stop flushes and waits for
        # the broker to close), so a routine restart never reaches the coordinator as the last will (a crash)
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._publish_status(Presence.OFFLINE, force=True)
        await self.mqtt.stop()
        await self.runtime.close()

    def wake(self) -> None:
        self._wake.set()

    # ---- MQTT in ------------------------------------------------------------------------------------------

    async def _on_connected(self) -> None:
        self.counters.mqtt_connects += 1
        self._status_key = self._observed_key = None  # republish: the broker may have lost our retained state
        await self._publish_status(Presence.ONLINE, force=True)
        if self.reconciles:  # before the first runtime listing we know nothing: an empty report would read as
            await self._publish_observed(force=True)  # "every replica gone" to the coordinator

    def _on_desired_message(self, message: Message) -> None:
        try:
            incoming = wire.decode_node_message(message.topic, message.payload)
            if not isinstance(incoming, DesiredState):
                raise WireError(f"expected a desired state, got {type(incoming).__name__}")
        except WireError as exc:
            log.warning("ignored a desired-state message on %s: %s", message.topic, exc)
            return
        verdict = consider(self.desired, self.max_epoch, incoming, self.node_id)
        if not isinstance(verdict, Accepted):
            log.debug("desired state not applied: %s", verdict.reason)
            return
        self.desired, self.max_epoch = verdict.state, verdict.max_epoch
        self.desired_received_at = self.clock()
        log.info("desired state generation %d (epoch %d): %d replicas", incoming.generation, incoming.epoch,
                 len(incoming.replicas))
        try:
            self.store.save_desired(incoming)
            self.store.save_agent(self.max_epoch, self.records)
        except StateError as exc:
            log.error("%s (running from memory until the disk recovers)", exc)
        self.wake()

    # ---- reconcile ----------------------------------------------------------------------------------------

    def _wanted(self) -> tuple[ReplicaSpec, ...]:
        if self.desired is None:
            return ()
        if self.gate_state.stop_workloads:
            return ()
        return self.desired.replicas

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.reconcile_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile_once()
            except RuntimeError_ as exc:
                log.warning("runtime unavailable this round: %s", exc)
            except Exception:
                log.exception("reconcile round failed; retrying")

    async def reconcile_once(self) -> None:
        self.reconciles += 1
        now = self.clock()
        wanted = self._wanted()
        instances = await self.runtime.list()
        snapshot = dict(self.records)
        plan = reconcile(wanted, instances, snapshot, now, self.cfg.restart)
        records = dict(plan.records)
        specs = {s.replica_id: s for s in wanted}
        for action in plan.remove:
            await self._guard(records, action.replica_id, now, self._stop_remove(action.instance_id),
                              keep_record=action.replica_id in specs)
        for action in plan.restart:
            log.info("restarting %s: %s", action.replica_id, action.reason)
            await self._guard(records, action.replica_id, now, self._restart(action.instance_id,
                                                                              specs.get(action.replica_id)))
        for action in plan.start:
            log.info("starting %s: %s", action.replica_id, action.reason)
            await self._guard(records, action.replica_id, now, self._start(action.instance_id,
                                                                            specs.get(action.replica_id)))
        for action in plan.replace:
            assert action.spec is not None
            if self._image_ready(action.spec, now):
                log.info("replacing %s: %s", action.replica_id, action.reason)
                await self._guard(records, action.replica_id, now, self._replace(action.instance_id, action.spec))
        for action in plan.create:
            assert action.spec is not None
            if self._image_ready(action.spec, now):
                log.info("creating %s (%s)", action.replica_id, action.spec.image or action.spec.command)
                await self._guard(records, action.replica_id, now, self._create(action.spec))
        for rid, current in self.records.items():  # a liveness probe failed while this round's actions ran
            if current.liveness_failed and rid in records and not snapshot.get(rid, ReplicaRecord(rid)).liveness_failed:
                records[rid] = replace(records[rid], liveness_failed=True, last_error=current.last_error)
        if records != self.records:
            self.records = {rid: rec for rid, rec in records.items() if rid in specs}
            try:
                self.store.save_agent(self.max_epoch, self.records)
            except StateError as exc:
                self.counters.state_write_errors += 1
                log.error("%s", exc)
        self.instances = await self.runtime.list() if not plan.empty else instances
        await self.runtime.maintain()
        if any(needs_secrets(s) for s in wanted) or self._secret_versions:
            await self._refresh_secrets(specs)
            live = {i.instance_id for i in self.instances}
            self._secret_versions = {k: v for k, v in self._secret_versions.items() if k in live}
        with contextlib.suppress(OSError):  # the files of replicas that went away go with them
            await asyncio.to_thread(self.secret_files.keep_only, {s.replica_id for s in wanted if needs_secrets(s)})
        self._sync_trackers(wanted)
        self.services.sync(self.instances)
        await self._publish_observed()

    async def _guard(self, records: dict[str, ReplicaRecord], rid: str, now: float, op: object,
                     *, keep_record: bool = True) -> None:
        try:
            await op  # type: ignore[misc]
        except RuntimeError_ as exc:
            log.warning("replica %s: %s", rid, exc)
            if keep_record:
                records[rid] = action_failed(records.get(rid) or ReplicaRecord(rid), str(exc), now, self.cfg.restart)

    async def _stop_remove(self, instance_id: str) -> None:
        await self.runtime.stop(instance_id, self.cfg.stop_timeout_s)
        await self.runtime.remove(instance_id)

    async def _restart(self, instance_id: str, spec: ReplicaSpec | None = None) -> None:
        await self.runtime.stop(instance_id, self.cfg.stop_timeout_s)
        await self._start(instance_id, spec)

    async def _start(self, instance_id: str, spec: ReplicaSpec | None) -> None:
        """Start an existing instance; its secret files are written again first (a reboot empties the tmpfs)."""
        if spec is not None and needs_secrets(spec):
            await self._secrets_for(spec)
        await self.runtime.start(instance_id)

    async def _secrets_for(self, spec: ReplicaSpec) -> Materialized:
        return await asyncio.to_thread(self.secret_files.materialize, spec, owner=owner_of(spec))

    async def _refresh_secrets(self, specs: dict[str, ReplicaSpec]) -> None:
        """A secret changed (a new version was delivered): rewrite the files in place, or replace the replica,
        as its spec says (`secret_layout.secret_changes`)."""
        for change in secret_changes(self.instances, specs, self._secret_versions):
            rid, versions = change.spec.replica_id, f"({change.have or '-'} -> {change.want})"
            try:
                if change.replace:
                    log.info("replica %s: secrets changed %s: replacing it", rid, versions)
                    await self._replace(change.instance_id, change.spec)
                else:
                    await self._secrets_for(change.spec)
                    log.info("replica %s: secret files updated in place %s", rid, versions)
                    self._secret_versions[change.instance_id] = change.want
            except RuntimeError_ as exc:
                log.warning("replica %s: secrets not refreshed: %s", rid, exc)

    async def _replace(self, instance_id: str, spec: ReplicaSpec) -> None:
        await self._stop_remove(instance_id)
        await self._create(spec)

    async def _create(self, spec: ReplicaSpec) -> None:
        generation = self.desired.generation if self.desired is not None else 0
        mounted = await self._secrets_for(spec) if needs_secrets(spec) else None
        if self.runtime_info.name == "process":  # processes share the host's network: services as variables
            spec = await self.services.with_service_env(spec)
        inst = await self.runtime.create(spec, generation, mounted)
        if mounted is not None:
            self._secret_versions[inst.instance_id] = mounted.versions
        await self.runtime.start(inst.instance_id)

    # ---- images -------------------------------------------------------------------------------------------

    def _image_ready(self, spec: ReplicaSpec, now: float) -> bool:
        """True when the image is local; otherwise a pull runs in the background (never restarted from zero by a
        timeout) and the replica is reported `pulling`; failures retry with back-off (`edge_agent.images`)."""
        if not spec.image or self.runtime_info.name == "process":
            return True
        state = self._pulls.get(spec.image, images.PullState())
        step = images.next_step(state, now)
        if isinstance(step, images.Fetch):
            self._pulls[spec.image] = images.started(state)
            self._pull_tasks[spec.image] = asyncio.create_task(self._pull(spec.image))
            return False
        return step is images.READY

    async def _pull(self, image: str) -> None:
        try:
            await self.runtime.ensure_image(image, lambda line: log.info("pull %s: %s", image, line))
            self._pulls[image] = images.succeeded(self._pulls[image])
        except ImageUnavailable as exc:
            state = self._pulls[image] = images.failed(self._pulls[image], self.clock(), str(exc))
            log.warning("image %s unavailable (attempt %d): %s; retrying in %.0fs", image, state.attempts, exc,
                        images.retry_delay(state.attempts))
        except RuntimeError_ as exc:
            self._pulls[image] = images.failed(self._pulls[image], self.clock(), str(exc), unavailable=False)
        finally:
            self._pull_tasks.pop(image, None)
            self.wake()

    def _pulling(self) -> dict[str, str]:
        """Replicas whose image is being pulled, with what the pull says (ErrImagePull / ImagePullBackOff and the
        registry's message) for their observed state."""
        now = self.clock()
        return {s.replica_id: images.pull_message(self._pulls.get(s.image), now) for s in self._wanted()
                if s.image and images.pulling(self._pulls.get(s.image))}

    # ---- probes -------------------------------------------------------------------------------------------

    def _sync_trackers(self, wanted: tuple[ReplicaSpec, ...]) -> None:
        self._trackers, self.ready = health.sync_trackers(wanted, self.instances, self._trackers, self.ready)
        self.unready = {rid: why for rid, why in self.unready.items() if rid in self.ready}
        self.counters.forget_replicas_except({s.replica_id for s in wanted})  # a replica gone for good: its series go

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.probe_tick_s)
            now = self.clock()
            specs = {s.replica_id: s for s in self._wanted()}
            running = {i.replica_id: i for i in self.instances if i.state is InstanceState.RUNNING}
            for key, tracker in list(self._trackers.items()):
                rid, kind = key
                spec, inst = specs.get(rid), running.get(rid)
                if spec is None or inst is None or key in self._probing or not health.due(tracker, now):
                    continue
                probe = spec.liveness if kind == "liveness" else spec.readiness
                if probe is not None:
                    self._probing.add(key)
                    self._tasks.append(asyncio.create_task(self._probe(key, inst.instance_id, probe)))
            self._tasks = [t for t in self._tasks if not t.done()]

    async def _probe(self, key: tuple[str, str], instance_id: str, probe: wire.Probe) -> None:
        rid, kind = key
        before = self._trackers.get(key)
        inst_started = before.started_at if before is not None else None
        try:
            result = await run_probe(self.runtime, instance_id, probe)
            tracker = self._trackers.get(key)
            if tracker is None or (inst_started is not None and tracker.started_at != inst_started):
                return  # the replica restarted meanwhile: this result belongs to its previous run
            updated = health.record(probe, tracker, result.success, result.message, self.clock())
            if not result.success:
                self.counters.probe_failed(rid, kind)
            self._trackers[key] = updated
            if kind == "readiness":
                why = "" if result.success else result.message
                if self.unready.get(rid, "") != why and not updated.healthy:
                    self.unready[rid] = why  # reported with the replica (observed.last_error) until it is ready
                    self.wake()
                elif updated.healthy:
                    self.unready.pop(rid, None)
                if self.ready.get(rid) != updated.healthy:
                    log.info("replica %s %s (%s)", rid, "ready" if updated.healthy else "not ready", result.message)
                    self.ready[rid] = updated.healthy
                    self.wake()
            elif tracker.healthy and not updated.healthy:
                log.warning("replica %s failed its liveness probe %d times (%s): restarting", rid,
                            updated.failures, result.message)
                record = self.records.get(rid) or ReplicaRecord(rid)
                self.records[rid] = replace(record, liveness_failed=True, last_error=f"liveness: {result.message}")
                del self._trackers[key]
                self.wake()
        finally:
            self._probing.discard(key)

    # ---- certificate renewal -----------------------------------------------------------------------------

    async def _renewal_loop(self) -> None:
        while True:
            try:
                wait = await self.renew_once()
            except Exception:  # a disk or TLS error must not end renewal for good (the certificate would expire)
                log.exception("certificate renewal failed; retrying in 5 minutes")
                wait = 300.0
            await asyncio.sleep(wait)

    async def renew_once(self) -> float:
        """Renew when due (`edge_agent.renewal`); returns how long to wait before looking again."""
        assert self.identity is not None
        self.identity, wait = await renewal.renew_once(self.identity, self.clock(), self._reload_certificate)
        return wait

    def _reload_certificate(self) -> None:
        """The renewed certificate is on disk: the overlay's new connections and the next MQTT connect use it."""
        self.overlay.reload_credential()
        self.mqtt.reload_certificate()

    # ---- reporting ----------------------------------------------------------------------------------------

    def facts(self) -> NodeFacts:
        return node_facts.node_facts(
            data_dir=self.cfg.data_dir, runtime=self.runtime_info.name, runtime_version=self.runtime_info.version,
            rootless=self.runtime_info.rootless, profile=self.profile_name, zone=self.cfg.zone,
            labels=self.cfg.labels, agent_version=self.cfg.version, readings=self.readings,
            overlay=self.overlay.enabled,
        )

    def storage_facts(self) -> StorageFacts:
        """The node's storage as its status states it: quota 0 when it offers none."""
        return self.storage.facts() if self.storage is not None else StorageFacts(0, 0, 0)

    def status_message(self, presence: Presence, storage: StorageFacts | None = None) -> NodeStatus:
        return report.status(node_id=self.node_id, presence=presence, now=self.clock(), facts=self.facts(),
                             schedulable=self.gate_state.schedulable, reasons=self.gate_state.reasons,
                             boot_id=self.boot_id, heartbeat_max_s=self.beat.max_interval_s,
                             keepalive_s=self.keepalive_s, storage=storage or self.storage_facts())

    async def _publish_status(self, presence: Presence, *, force: bool = False) -> None:
        key = report.status_key(presence, self.gate_state.schedulable, self.gate_state.reasons)
        storage = self.storage_facts()
        if not force and key == self._status_key and not storage_moved(self._storage_sent, storage):
            return
        self._status_key, self._storage_sent = key, storage
        sent = self._publish(topics.Channel.STATUS, self.status_message(presence, storage))
        if presence is Presence.OFFLINE and self.mqtt.connected:
            await sent  # QoS 1: acknowledged by the broker

    def observed_message(self) -> ObservedState:
        replicas = observe(self._wanted(), self.instances, self.records, self.ready, pulling=self._pulling(),
                           cfg=self.cfg.restart, unready=self.unready)
        return report.observed(self.node_id, self.desired, self.clock(), replicas)

    async def _publish_observed(self, *, force: bool = False) -> None:
        msg = self.observed_message()
        key = report.observed_key(msg)
        if not force and key == self._observed_key:
            return
        self._observed_key = key
        try:
            self._publish(topics.Channel.OBSERVED, msg)
        except MqttError as exc:  # outbox full of state: the newest observed state supersedes on reconnect
            log.warning("observed state not queued: %s", exc)
            self._observed_key = None

    def _publish(self, channel: topics.Channel,
                 msg: NodeStatus | ObservedState | Heartbeat) -> asyncio.Future[Outcome]:
        spec = topics.NODE_CHANNELS[channel]
        return self.mqtt.publish_nowait(topics.node_topic(self.node_id, channel), wire.encode(msg), qos=spec.qos,
                                        retain=spec.retain, droppable=channel is topics.Channel.HEARTBEAT)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._heartbeat()
            except AgentError as exc:
                log.warning("heartbeat skipped: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.beat.min_interval_s)

    async def _heartbeat(self) -> None:
        self.readings = node_facts.read_sensors(self.cfg.sensor_file)
        previous = self.gate_state
        self.gate_state = self.gate.evaluate(previous, self.readings)
        if self.gate_state != previous:
            if self.gate_state.reasons:
                log.warning("gate tripped: %s (%s workloads)", "; ".join(self.gate_state.reasons),
                            "stopping" if self.gate_state.stop_workloads else "keeping")
            else:
                log.info("gates clear: schedulable again")
            self.wake()
        await self._publish_status(Presence.ONLINE)  # only when it changed (report.status_key)
        md = node_facts.mem_disk(self.cfg.data_dir)
        try:
            usage = await self.runtime.usage()
        except RuntimeError_:
            usage = {}
        replicas = report.replica_usage(usage, {i.instance_id: i.replica_id for i in self.instances})
        now = self.clock()
        hb = report.heartbeat(node_id=self.node_id, seq=self._seq + 1, now=now,
                              cpu_percent=node_facts.cpu_percent(), md=md,
                              battery_percent=self.readings.battery_percent, replicas=replicas,
                              max_epoch=self.max_epoch)
        sampled_before, self.last_heartbeat = self.last_heartbeat, hb  # the latest sample, sent or not (local metrics)
        verdict = beats.due(self.beat, self._sent, hb, self.gate_state.reasons, now, previous=sampled_before)
        if not verdict.send:
            return
        self._seq += 1
        self._sent = Sent(hb, self.gate_state.reasons, now)
        log.debug("heartbeat %d sent: %s", self._seq, verdict.reason)
        with contextlib.suppress(MqttError):
            self._publish(topics.Channel.HEARTBEAT, hb)

    # ---- metrics -----------------------------------------------------------------------------------------

    def metrics_sample(self) -> MetricsSample:
        """What a scrape reports: device readings of the last heartbeat, replicas, counters (no I/O)."""
        hb = self.last_heartbeat
        restarts = {rid: r.restarts for rid, r in self.records.items()}
        replicas = replica_samples(self._wanted(), self.instances, self.ready, restarts, hb)
        return MetricsSample(
            node_id=self.node_id, profile=self.profile_name, runtime=self.runtime_info.name,
            cpu_percent=hb.cpu_percent if hb else None, memory_used_bytes=hb.memory_used_bytes if hb else None,
            memory_total_bytes=hb.memory_total_bytes if hb else None, battery_percent=self.readings.battery_percent,
            charging=self.readings.charging, temperatures_c=dict(self.readings.temperatures),
            schedulable=self.gate_state.schedulable, mqtt_connected=self.mqtt.connected, replicas=replicas,
            counters=self.counters, state_writes=self.store.writes,
            desired_generation=self.desired.generation if self.desired else None,
            desired_epoch=self.desired.epoch if self.desired else None, services=self.services.samples(),
            storage=self.storage.sample() if self.storage is not None else None)
