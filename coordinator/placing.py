"""Scheduling pending replicas for the coordinator engine (adapter): gathers the scheduler core's inputs (the
cluster's node views, each firmware profile's reservations), runs one scheduling pass over every pending replica in
slices of the loop, and records each outcome (the placement, or why not) as replica records and events.
`Coordinator` (coordinator/service.py) owns one and calls it once per round."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from coordinator import lifecycle
from coordinator.cluster import NO_RESERVATIONS, Cluster, Reservations
from coordinator.journal import Journal
from coordinator.membership import MembershipConfig
from coordinator.metrics import Metrics
from coordinator.model import ReplicaPhase, ReplicaRecord
from coordinator.scheduler import Placement, SchedulerConfig, Snapshot, Unschedulable, schedule_slices
from coordinator.scheduler.model import PlacementRequest

log = logging.getLogger("coordinator.service")

VIEWS_PER_STEP = 500  # scheduler views (re)built in one step before a snapshot (1,500: 20-45 ms of CPU)
SCHEDULE_SLICE = 50  # scheduling decisions in one step of a round (the first also builds the pass)
REQUESTS_PER_STEP = 1000  # pending replicas' placement requests built in one step


async def let_others_run() -> None:
    """End this step of the round: heartbeats, REST reads and the MQTT keep-alive are served before the next one
    (issue 17: a round of 5,000 nodes in one step held the loop for seconds). API writes still wait for the lock,
    so the round's picture changes between steps only by what nodes report, as it did at every store write."""
    await asyncio.sleep(0)


class Placer:
    """Places the cluster's pending replicas; `save_replica` persists a changed record (the engine's journal)."""

    def __init__(self, cluster: Cluster, journal: Journal, metrics: Metrics, *, membership: MembershipConfig,
                 scheduler: SchedulerConfig, seed: int, save_replica: Callable[[ReplicaRecord], None]) -> None:
        self.cluster, self.journal, self.metrics = cluster, journal, metrics
        self.membership, self.scheduler, self.seed = membership, scheduler, seed
        self.save_replica = save_replica
        self._reservations: dict[str, Reservations] = {}  # firmware profile name -> what it holds back

    def reservation(self, name: str) -> Reservations:
        """A firmware profile's reservations, loaded once (the profile files do not change while running)."""
        cached = self._reservations.get(name)
        if cached is None:
            try:
                import firmware_profiles

                prof = firmware_profiles.load_profile(name)
                cached = Reservations(prof.reserved.cpu_millicores, prof.reserved.memory_bytes, prof.max_workloads,
                                      dict(prof.labels), prof.metered)
            except Exception:  # unknown or custom profile on the node: no reservation known
                cached = NO_RESERVATIONS
            self._reservations[name] = cached
        return cached

    def snapshot(self, now: float, *, revision: int) -> Snapshot:
        """What the scheduler sees of the nodes now (`revision`: the engine's round)."""
        reservations = {name: self.reservation(name) for name in self.cluster.profile_names()}
        return self.cluster.snapshot(now, reservations=reservations, membership=self.membership, revision=revision)

    async def schedule_pending(self, now: float, *, revision: int) -> None:
        """Every pending replica, oldest first, in one scheduling pass (a workload's ranking is built once) that
        decides SCHEDULE_SLICE replicas per step of the loop; each slice's outcome is recorded before the next."""
        pending = self.cluster.pending()
        if not pending:
            return
        requests = []
        for i, r in enumerate(pending, 1):
            try:  # one replica whose spec cannot be parsed or sent is that replica's problem, not the round's
                parsed = self.cluster.spec_of(r)
                if parsed is not None:
                    size = self.cluster.wire_bytes(parsed, r.spec_hash)
                    requests.append((r, PlacementRequest.for_replica(parsed, r.replica_id, wire_bytes=size,
                                                                     refused_by=lifecycle.refused_nodes(r))))
            except Exception as exc:
                self._replica_failed(r, exc)
            if i % REQUESTS_PER_STEP == 0:
                await let_others_run()
        reservations = {name: self.reservation(name) for name in self.cluster.profile_names()}
        while not self.cluster.prepare_views(now, reservations=reservations, membership=self.membership,
                                             limit=VIEWS_PER_STEP):
            await let_others_run()
        snapshot = self.snapshot(now, revision=revision)
        await let_others_run()
        spent = 0.0
        slices = schedule_slices(snapshot, [req for _, req in requests], self.scheduler, self.seed,
                                 size=SCHEDULE_SLICE)
        while True:
            started = time.perf_counter()
            part = next(slices, None)
            spent += time.perf_counter() - started
            if part is None:
                break
            for i, result in part:
                self._record_placement(requests[i][0], result, now)
            await let_others_run()
        self.metrics.scheduling.observe(spent)

    def _record_placement(self, r: ReplicaRecord, result: Placement | Unschedulable, now: float) -> None:
        wkey = f"{r.namespace}/{r.workload}"
        self.metrics.decisions.labels("placed" if isinstance(result, Placement) else "unschedulable").inc()
        if isinstance(result, Placement):
            # the nodes that refused it stay remembered: a second refusal must not send it back to the first
            kept = {n: lifecycle.REFUSED_TAG + why for n, why in lifecycle.refused_nodes(r).items()}
            self.save_replica(replace(r, node=result.node_id, phase=ReplicaPhase.ASSIGNED, assigned_at=now,
                                       message="", unschedulable=kept))
            self.journal.event("Normal", "Placed", f"workload/{wkey}", f"replica {r.replica_id} placed on "
                               f"{result.node_id} (score {result.score:.1f})")
        else:
            reasons = {node: rej.reason for node, rej in sorted(result.reasons.items())}
            top = Counter(rej.category for rej in result.reasons.values()).most_common(1)
            self.metrics.unschedulable.labels(top[0][0] if top else "no nodes").inc()
            text = result.detail()[:500]  # the summary and each node's reason
            if text != r.message:
                self.journal.event("Warning", "Unschedulable", f"workload/{wkey}",
                                   f"replica {r.replica_id}: {text}")
                refusals = {n: lifecycle.REFUSED_TAG + why for n, why in lifecycle.refused_nodes(r).items()}
                self.save_replica(replace(r, message=text, unschedulable={**reasons, **refusals}))

    def _replica_failed(self, r: ReplicaRecord, exc: Exception) -> None:
        """A replica that cannot be scheduled at all (its spec does not parse, or the wire cannot carry it): said
        once, as an event and the replica's message, and left pending."""
        message = f"cannot be placed: {type(exc).__name__}: {exc}"[:500]
        if r.message != message:
            log.warning("replica %s: %s", r.replica_id, message)
            self.journal.event("Warning", "ReplicaInvalid", f"workload/{r.namespace}/{r.workload}",
                               f"replica {r.replica_id} {message}")
            self.save_replica(replace(r, message=message))
