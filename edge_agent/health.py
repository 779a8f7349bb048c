"""Probe bookkeeping (pure core): when a probe is due and what its results mean.

Theory of operation (Kubernetes probe semantics): a probe first runs `initial_delay_s` after the replica
started, then every `period_s`; each attempt is bounded by `timeout_s` (the adapter enforces it). A verdict
flips to healthy after `success_threshold` consecutive successes and to unhealthy after `failure_threshold`
consecutive failures; in between it keeps its previous value. Readiness starts not ready; liveness starts
alive. A new run of the replica (restart) resets the tracker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from broker.wire import Probe, ReplicaSpec
from edge_agent.runtime.base import Instance, InstanceState

TrackerKey = tuple[str, str]  # (replica id, "liveness" | "readiness")


@dataclass(frozen=True, slots=True)
class ProbeTracker:
    started_at: float  # the run this tracker belongs to
    healthy: bool  # readiness: ready; liveness: alive
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    last_message: str = ""
    total_failures: int = 0


def new_tracker(probe: Probe, started_at: float, *, initially_healthy: bool) -> ProbeTracker:
    return ProbeTracker(started_at=started_at, healthy=initially_healthy, next_at=started_at + probe.initial_delay_s)


def due(tracker: ProbeTracker, now: float) -> bool:
    return now >= tracker.next_at


def record(probe: Probe, tracker: ProbeTracker, success: bool, message: str, now: float) -> ProbeTracker:
    """Fold one attempt's result into the tracker and schedule the next attempt."""
    if success:
        successes, failures = tracker.successes + 1, 0
        healthy = True if successes >= probe.success_threshold else tracker.healthy
    else:
        successes, failures = 0, tracker.failures + 1
        healthy = False if failures >= probe.failure_threshold else tracker.healthy
    return replace(
        tracker,
        healthy=healthy,
        successes=successes,
        failures=failures,
        next_at=now + probe.period_s,
        last_message=message[:256],
        total_failures=tracker.total_failures + (0 if success else 1),
    )


def sync_trackers(wanted: Sequence[ReplicaSpec], instances: Sequence[Instance],
                  trackers: Mapping[TrackerKey, ProbeTracker],
                  ready: Mapping[str, bool]) -> tuple[dict[TrackerKey, ProbeTracker], dict[str, bool]]:
    """This round's (trackers, readiness): a replica not running its current spec is not ready; a new run gets
    new trackers (and is not ready until its readiness probe says so); one without a readiness probe is ready
    while it runs; replicas no longer wanted are forgotten."""
    running = {i.replica_id: i for i in instances if i.state is InstanceState.RUNNING}
    wanted_ids = {s.replica_id for s in wanted}
    kept: dict[TrackerKey, ProbeTracker] = {}
    now_ready = {rid: value for rid, value in ready.items() if rid in wanted_ids}
    for spec in wanted:
        inst = running.get(spec.replica_id)
        if inst is None or inst.spec_hash != spec.spec_hash:
            now_ready[spec.replica_id] = False
            continue
        started = inst.started_at or 0.0
        for kind, probe in (("liveness", spec.liveness), ("readiness", spec.readiness)):
            if probe is None:
                continue
            key = (spec.replica_id, kind)
            tracker = trackers.get(key)
            if tracker is None or tracker.started_at != started:
                tracker = new_tracker(probe, started, initially_healthy=kind == "liveness")
                if kind == "readiness":
                    now_ready[spec.replica_id] = False  # a new run is not ready until its probe says so
            kept[key] = tracker
        if spec.readiness is None:
            now_ready[spec.replica_id] = True
    return kept, now_ready
