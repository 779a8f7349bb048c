"""Applying one workload's plan (adapter over the lifecycle core): `lifecycle.plan` decides from the workload, its
replicas' views and the rollout parameters; this applies the decision to the replica table and the journal (records,
store writes, events) in bounded steps of the loop, and says whether the workload is settled. `Coordinator`
(coordinator/service.py) owns one and calls it for each workload a round looks at."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace

from coordinator import lifecycle, model
from coordinator.cluster import Cluster
from coordinator.journal import Journal
from coordinator.link import LinkClock
from coordinator.model import ReplicaPhase, ReplicaRecord, RolloutPhase, WorkloadRecord
from coordinator.operations import Operations, PolicyDenied
from coordinator.placing import let_others_run
from coordinator.store import delete as delete_op
from coordinator.translate import rollout_params

NEW_PER_ROUND = 250  # replicas a round creates per workload (a 2,500-replica apply: ten rounds)
ACTIONS_PER_STEP = 100  # actions of one workload's plan (stops, forgets, creations) applied in one step
IN_FLUX = (RolloutPhase.PROGRESSING, RolloutPhase.ROLLING_BACK)  # a progress deadline runs
REPLICA_ID_BYTES = 6  # random bytes in a replica id (48 bits: collisions among millions are still unlikely)


class _Pace:
    """Ends a step of the round every ACTIONS_PER_STEP actions of a plan (a lost zone is hundreds of them)."""

    def __init__(self) -> None:
        self.actions = 0

    async def step(self) -> None:
        self.actions += 1
        if self.actions % ACTIONS_PER_STEP == 0:
            await let_others_run()


def _settled(w: WorkloadRecord, views: list[lifecycle.ReplicaView], p: lifecycle.WorkloadPlan) -> bool:
    """Nothing to do and nothing that time alone could change: no action planned, the rollout phase final and
    unchanged, not deleting, no replica stopping, none on a node nobody has heard of (it turns lost with time)."""
    if p.place or p.stop or p.replace or p.forget or p.refused or p.rollback or p.delete_workload or w.deleting:
        return False
    if p.rollout_phase in IN_FLUX or (p.rollout_phase, p.rollout_message) != (w.rollout_phase, w.rollout_message):
        return False
    return all(v.record.phase != ReplicaPhase.STOPPING and (v.record.node is None or v.node_state is not None)
               for v in views)


class PlanApplier:
    """Plans and applies one workload at a time; `save_replica` persists a changed record (the engine's journal)."""

    def __init__(self, cluster: Cluster, journal: Journal, ops: Operations, link: LinkClock, *, lost_after_s: float,
                 save_replica: Callable[[ReplicaRecord], None]) -> None:
        self.cluster, self.journal, self.ops, self.link = cluster, journal, ops, link
        self.lost_after_s = lost_after_s
        self.save_replica = save_replica

    async def reconcile(self, w: WorkloadRecord, now: float) -> tuple[bool, bool]:
        """Plan one workload and apply the plan. (settled, more): settled when nothing is to do, nothing in flux,
        no deadline running (later rounds look at it again only when something about it changes); more when the
        plan creates more replicas than one round does (the engine runs the next round soon)."""
        views = self.cluster.replica_views(w, heard_for_s=self.link.heard_for(now),
                                           lost_after_s=self.lost_after_s)
        params = rollout_params(self.cluster.parsed(w))
        p = lifecycle.plan(w, views, params, now, has_previous_revision=len(w.history) > 1)
        settled = _settled(w, views, p)
        if len(views) >= ACTIONS_PER_STEP:
            await let_others_run()
        pace = _Pace()
        for rid, node, reason in p.refused:  # a node that cannot run a replica: placed elsewhere, said once
            await pace.step()
            r = self.cluster.replicas.get(rid)
            if r is not None and r.node == node:
                self.save_replica(lifecycle.unassign_refused(r, node, reason))
                self.journal.event("Warning", "ReplicaRefused", f"workload/{w.key}",
                                   lifecycle.refused_message(rid, node, reason))
        for rid in p.replace:
            await pace.step()
            r = self.cluster.replicas.get(rid)
            if r is not None:
                self.journal.event("Warning", "ReplicaLost", f"workload/{w.key}",
                           f"replica {rid} was on lost node {r.node}; replacing it")
        for rid in p.forget:
            await pace.step()
            r = self.cluster.replicas.pop(rid, None)
            if r is not None:
                self.journal.queue(delete_op(model.replica_key(r.namespace, r.workload, rid)))
        for rid, reason in p.stop:
            await pace.step()
            r = self.cluster.replicas.get(rid)
            if r is None:
                continue
            if r.node is None:
                self.cluster.replicas.pop(rid)
                self.journal.queue(delete_op(model.replica_key(r.namespace, r.workload, rid)))
                continue
            self.save_replica(replace(r, phase=ReplicaPhase.STOPPING, stop_requested_at=now, message=reason))
            self.journal.event("Normal", "Stopping", f"workload/{w.key}",
                               f"stopping replica {rid} on {r.node}: {reason}")
        more = p.place > NEW_PER_ROUND  # a big apply is created over several rounds, each short (the next one soon)
        for _ in range(min(p.place, NEW_PER_ROUND)):
            await pace.step()
            rid = self.new_replica_id(w.name)
            self.save_replica(ReplicaRecord(replica_id=rid, namespace=w.namespace, workload=w.name,
                                             revision=w.revision, spec_hash=w.spec_hash, created_at=now))
        if p.delete_workload:
            self.cluster.workloads.pop(w.key, None)
            self.journal.queue(delete_op(model.workload_key(w.namespace, w.name)))
            self.journal.event("Normal", "Deleted", f"workload/{w.key}", "all replicas stopped; workload removed")
            return False, more
        if p.rollback:
            try:
                self.ops.roll_back(w, None, cause=p.rollout_message, now=now, auto=True)
            except PolicyDenied as exc:
                self.ops.save_workload(replace(w, rollout_phase=RolloutPhase.FAILED,
                                            rollout_message=f"{p.rollout_message}; rollback refused: {exc}"[:500]))
            return False, more
        if (p.rollout_phase, p.rollout_message) != (w.rollout_phase, w.rollout_message):
            if p.rollout_phase in (RolloutPhase.COMPLETE, RolloutPhase.ROLLED_BACK, RolloutPhase.FAILED):
                self.journal.event("Warning" if p.rollout_phase is RolloutPhase.FAILED else "Normal",
                           f"Rollout{p.rollout_phase.value.title().replace('-', '')}", f"workload/{w.key}",
                           p.rollout_message)
            self.ops.save_workload(replace(w, rollout_phase=p.rollout_phase, rollout_message=p.rollout_message))
        return settled, more

    def new_replica_id(self, workload: str) -> str:
        """A replica id no record holds: 48 random bits (24 gave a ~17 % chance of a collision among 2,500 ids
        made at once, and a collision overwrote a record), drawn again in the unlikely case it is taken."""
        while True:
            rid = f"{workload[:50]}-{secrets.token_hex(REPLICA_ID_BYTES)}"
            if rid not in self.cluster.replicas:
                return rid
