"""Builders for lifecycle tests (workload records, replica views, rollout params) and `World`, a small in-memory
stand-in for the engine: it applies a plan the way `Coordinator._reconcile_workload` does, schedules pending
replicas round-robin like a scheduler that never says no, and lets nodes report what they run."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from broker.wire import ReplicaObserved, ReplicaState
from coordinator.lifecycle import ReplicaView, RolloutParams, WorkloadPlan, plan
from coordinator.membership import NodeState
from coordinator.model import ReplicaPhase, ReplicaRecord, RolloutPhase, WorkloadRecord

NOW = 10_000.0
NAME = "web"


def make_workload(replicas: int = 3, spec_hash: str = "h2", *, revision: int = 2,
                  phase: RolloutPhase = RolloutPhase.PROGRESSING, started_at: float = NOW - 10.0,
                  deleting: bool = False, message: str = "") -> WorkloadRecord:
    doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": NAME},
           "spec": {"image": f"img:{spec_hash}", "replicas": replicas}}
    return WorkloadRecord(namespace="default", name=NAME, doc=doc, spec_hash=spec_hash, revision=revision,
                          generation=revision, created_at=0.0, deleting=deleting, rollout_phase=phase,
                          rollout_started_at=started_at, rollout_message=message)


def desired_of(w: WorkloadRecord) -> int:
    return int(w.doc["spec"]["replicas"])


def make_params(desired: int = 3, *, surge: int = 1, unavailable: int = 0, min_available: int | None = None,
                recreate: bool = False, deadline: float = 600.0, auto_rollback: bool = True) -> RolloutParams:
    return RolloutParams(desired=desired, max_surge=surge, max_unavailable=unavailable, min_available=min_available,
                         recreate=recreate, progress_deadline_s=deadline, auto_rollback=auto_rollback)


def make_record(rid: str, *, node: str | None = "A", hash: str = "h1",
                phase: ReplicaPhase | None = None, created: float = 0.0) -> ReplicaRecord:
    if phase is None:
        phase = ReplicaPhase.PENDING if node is None else ReplicaPhase.ASSIGNED
    return ReplicaRecord(replica_id=rid, namespace="default", workload=NAME, revision=1 if hash == "h1" else 2,
                         spec_hash=hash, node=node, phase=phase, created_at=created)


def observation(rid: str, hash: str, *, ready: bool) -> ReplicaObserved:
    state = ReplicaState.RUNNING if ready else ReplicaState.STARTING
    return ReplicaObserved(replica_id=rid, workload=NAME, state=state, spec_hash=hash, ready=ready)


def make_view(rid: str, node: str | None = "A", hash: str = "h1", ready: bool = True,
              state: NodeState | None = NodeState.ONLINE, draining: bool = False,
              phase: ReplicaPhase | None = None, *, created: float = 0.0, observed: bool = True) -> ReplicaView:
    """One replica joined with its node. `node=None` is a pending replica (no node, nothing observed);
    `observed=False` is an assigned replica its node does not report (yet, or any more)."""
    record = make_record(rid, node=node, hash=hash, phase=phase, created=created)
    if node is None:
        return ReplicaView(record=record, node_state=None)
    seen = observation(rid, hash, ready=ready) if observed else None
    return ReplicaView(record=record, node_state=state, node_draining=draining, observed=seen)


def pending(rid: str, hash: str = "h2", *, created: float = 0.0) -> ReplicaView:
    return make_view(rid, node=None, hash=hash, created=created)


def run(views: Iterable[ReplicaView], *, w: WorkloadRecord | None = None, now: float = NOW, previous: bool = True,
        **params: Any) -> WorkloadPlan:
    """plan() with `make_params(**params)`; `desired` defaults to the workload document's replica count."""
    w = w or make_workload()
    params.setdefault("desired", desired_of(w))
    return plan(w, list(views), make_params(**params), now, has_previous_revision=previous)


# ---- the world simulator -----------------------------------------------------------------------------------


@dataclass
class World:
    """The engine's side of a plan, in memory. Nodes report by replica id; `nodes` maps node -> state."""

    w: WorkloadRecord
    params: RolloutParams
    nodes: dict[str, NodeState]
    draining: set[str] = field(default_factory=set)
    records: dict[str, ReplicaRecord] = field(default_factory=dict)
    observed: dict[str, ReplicaObserved] = field(default_factory=dict)
    now: float = NOW
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _turn: int = 0

    # -- inputs
    def add(self, record: ReplicaRecord, *, observed: bool | None = None) -> None:
        """Add a replica; observed None: not reported, False: reported unready, True: reported ready."""
        self.records[record.replica_id] = record
        if observed is not None:
            self.observed[record.replica_id] = observation(record.replica_id, record.spec_hash, ready=observed)

    # -- what plan() sees
    def views(self) -> list[ReplicaView]:
        out = []
        for r in self.records.values():
            state = self.nodes.get(r.node) if r.node else None
            out.append(ReplicaView(record=r, node_state=state, node_draining=r.node in self.draining,
                                   observed=self.observed.get(r.replica_id) if state is not None else None))
        return out

    def plan(self) -> WorkloadPlan:
        return plan(self.w, self.views(), self.params, self.now, has_previous_revision=True)

    # -- what the engine does with a plan (Coordinator._reconcile_workload)
    def apply(self, p: WorkloadPlan) -> None:
        for rid in p.forget:
            self.records.pop(rid, None)
        for rid, reason in p.stop:
            r = self.records.get(rid)
            if r is None:
                continue
            if r.node is None:
                del self.records[rid]
            else:
                self.records[rid] = replace(r, phase=ReplicaPhase.STOPPING, stop_requested_at=self.now, message=reason)
        for _ in range(p.place):
            rid = f"{NAME}-{next(self._ids)}"
            self.records[rid] = ReplicaRecord(replica_id=rid, namespace=self.w.namespace, workload=self.w.name,
                                              revision=self.w.revision, spec_hash=self.w.spec_hash,
                                              created_at=self.now)
        if (p.rollout_phase, p.rollout_message) != (self.w.rollout_phase, self.w.rollout_message):
            self.w = replace(self.w, rollout_phase=p.rollout_phase, rollout_message=p.rollout_message)

    def schedule(self) -> None:
        """Pending replicas onto online, non-draining nodes, round-robin (a scheduler that never says no)."""
        targets = sorted(n for n, s in self.nodes.items() if s is NodeState.ONLINE and n not in self.draining)
        if not targets:
            return
        for rid, r in sorted(self.records.items(), key=lambda kv: (kv[1].created_at, kv[0])):
            if r.node is None and r.phase == ReplicaPhase.PENDING:
                node = targets[self._turn % len(targets)]
                self._turn += 1
                self.records[rid] = replace(r, node=node, phase=ReplicaPhase.ASSIGNED, assigned_at=self.now)

    def node_step(self, ready: Callable[[ReplicaRecord], bool], finish_stop: Callable[[ReplicaRecord], bool]) -> None:
        """Online nodes report their replicas: an assigned replica is reported (ready once `ready` says so, and
        then stays ready); a stopping one disappears from the report when `finish_stop` says so."""
        for rid, r in self.records.items():
            if r.node is None or self.nodes.get(r.node) is not NodeState.ONLINE:
                continue
            seen = self.observed.get(rid)
            if r.phase == ReplicaPhase.ASSIGNED:
                now_ready = (seen is not None and seen.ready) or ready(r)
                self.observed[rid] = observation(rid, r.spec_hash, ready=now_ready)
            elif r.phase == ReplicaPhase.STOPPING and seen is not None and finish_stop(r):
                del self.observed[rid]

    # -- measurements
    def active(self) -> list[ReplicaView]:
        return [v for v in self.views() if v.record.phase != ReplicaPhase.STOPPING]

    def ready_count(self) -> int:
        return sum(1 for v in self.active() if v.ready)

    def current(self) -> list[ReplicaView]:
        return [v for v in self.active() if v.record.spec_hash == self.w.spec_hash]
