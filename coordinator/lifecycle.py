"""The workload lifecycle reconciler (pure core): replicas wanted vs replicas recorded -> named buckets.

Theory of operation. For one workload, given its record (desired count, current spec hash, rollout settings),
its replica records joined with what their nodes report, and `now`, `plan()` returns:

- `place`    how many new replicas of the current spec to create (the scheduler then finds them nodes)
- `stop`     replicas to take out of their node's desired state (scale down, rollout, drain, delete)
- `replace`  replicas on LOST nodes: forgotten at once and re-placed (counted in `place`)
- `forget`   replicas whose stop is complete (the node no longer reports them) or that never got a node
- `refused`  current replicas their node's runtime refused (reported `failed` with a last_error marked
             `NodeFacts.REFUSED`): the adapter takes each off that node and back to pending (`unassign_refused`),
             remembering the node and its reason, so the scheduler places it on another node that can run it
             (`PlacementRequest.for_replica(..., refused_by=refused_nodes(r))`) or says why none can. They stay
             counted as wanted (and are also in `keep`): a refusal never makes the workload place an extra replica
- `keep`     everything else

A replica is *current* when its spec hash is the workload's (so a rollback to an earlier spec keeps the replicas
that already run it) and *retiring* when it is not current or sits on a draining node. Retiring replicas are
replaced before they are stopped: new ones are placed within the surge budget (`desired + maxSurge` active
replicas), and a ready retiring replica is stopped only while the ready count stays at or above the floor
(`minAvailable`, else `desired - maxUnavailable`). Unready retiring replicas cost nothing to stop. `Recreate`
stops every old replica first and places new ones when they are gone. Scale-down and delete ignore the floor:
the user asked for fewer.

Rollout: `progressing` until every active replica is current and `desired` of them are ready; past the
progress deadline it becomes `failed`, or — with autoRollback and an earlier revision — asks for a rollback
(`rollback=True`), which the adapter performs by re-applying the previous spec as a new revision.

Idempotent: applying the plan and planning again yields no new stops or forgets beyond those waiting on nodes.
Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import replace as replaced

from broker.wire import NodeFacts, ReplicaObserved, ReplicaState
from coordinator.membership import NodeState
from coordinator.model import ReplicaPhase, ReplicaRecord, RolloutPhase, WorkloadRecord


@dataclass(frozen=True, slots=True)
class RolloutParams:
    desired: int
    max_surge: int
    max_unavailable: int
    min_available: int | None
    recreate: bool
    progress_deadline_s: float
    auto_rollback: bool

    @property
    def floor(self) -> int:
        if self.min_available is not None:
            return max(0, min(self.desired, self.min_available))
        return max(0, self.desired - self.max_unavailable)


def resolve(value: int, percent: bool, desired: int, *, round_up: bool) -> int:
    """An int-or-percent of `desired` (Kubernetes rounds surge up and unavailability down)."""
    if not percent:
        return value
    exact = value * desired / 100.0
    return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    record: ReplicaRecord
    node_state: NodeState | None  # None: no node (pending) or an unknown node
    node_draining: bool = False
    observed: ReplicaObserved | None = None

    @property
    def ready(self) -> bool:
        o = self.observed
        return (o is not None and o.state is ReplicaState.RUNNING and o.ready
                and o.spec_hash == self.record.spec_hash and self.node_state is NodeState.ONLINE)


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    place: int = 0
    stop: tuple[tuple[str, str], ...] = ()  # (replica id, reason)
    replace: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    rollout_phase: RolloutPhase = RolloutPhase.COMPLETE
    rollout_message: str = ""
    rollback: bool = False
    delete_workload: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    refused: tuple[tuple[str, str, str], ...] = ()  # (replica id, node, the node's reason)


def _stop_order(v: ReplicaView) -> tuple[int, int, float, str]:
    # pending first, then unready, then the newest (shortest-lived) ones
    return (0 if v.record.node is None else 1, 1 if v.ready else 0, -v.record.created_at, v.record.replica_id)


def plan(w: WorkloadRecord, replicas: Sequence[ReplicaView], params: RolloutParams, now: float,
         *, has_previous_revision: bool) -> WorkloadPlan:
    stop: list[tuple[str, str]] = []
    forget: list[str] = []
    replace_: list[str] = []
    active: list[ReplicaView] = []
    for v in replicas:
        r = v.record
        if r.phase == ReplicaPhase.STOPPING:
            gone = v.observed is None or v.node_state in (NodeState.LOST, None)
            if gone:
                forget.append(r.replica_id)
            continue
        if r.node is not None and v.node_state is NodeState.LOST:
            replace_.append(r.replica_id)
            continue
        active.append(v)

    if w.deleting:
        for v in active:
            if v.record.node is None:
                forget.append(v.record.replica_id)
            else:
                stop.append((v.record.replica_id, "workload deleted"))
        stopping_left = len([v for v in replicas if v.record.phase == ReplicaPhase.STOPPING]) - len(
            [f for f in forget if any(v.record.replica_id == f and v.record.phase == ReplicaPhase.STOPPING
                                      for v in replicas)])
        done = not stop and stopping_left == 0 and not replace_
        return WorkloadPlan(stop=tuple(stop), forget=tuple(forget + replace_), delete_workload=done,
                            rollout_phase=RolloutPhase.COMPLETE, rollout_message="deleting")

    current = [v for v in active if v.record.spec_hash == w.spec_hash]
    retiring = [v for v in active if v.record.spec_hash != w.spec_hash or v.node_draining]
    healthy_current = [v for v in current if not v.node_draining]
    ready_count = sum(1 for v in active if v.ready)
    n = params.desired
    place = 0

    # scale: too many current replicas -> stop extras (no floor: the user asked for fewer)
    if len(healthy_current) > n:
        extras = sorted(healthy_current, key=_stop_order)[: len(healthy_current) - n]
        stop += [(v.record.replica_id, "scaled down") for v in extras]
        healthy_current = [v for v in healthy_current if v not in extras]
        ready_count -= sum(1 for v in extras if v.ready)

    old_stopping = any(v.record.phase == ReplicaPhase.STOPPING and v.record.spec_hash != w.spec_hash
                       and v.record.replica_id not in forget for v in replicas)
    if params.recreate and (old_stopping or any(v.record.spec_hash != w.spec_hash for v in active)):
        # Recreate: every old replica goes first; new ones only once no old one runs or is still stopping
        stop += [(v.record.replica_id, "recreate: old revision") for v in retiring]
        # a pending old replica never ran: stopping it deletes it at once, so it does not hold new ones back
        running_old = [v for v in retiring if v.record.node is not None]
        place = 0 if running_old or old_stopping else max(0, n - len(healthy_current))
    else:
        floor = params.floor
        for v in sorted(retiring, key=lambda v: (v.ready, v.record.created_at, v.record.replica_id)):
            why = "node draining" if v.node_draining and v.record.spec_hash == w.spec_hash else "rolling update"
            if not v.ready:
                stop.append((v.record.replica_id, why))
            elif ready_count - 1 >= floor:
                stop.append((v.record.replica_id, why))
                ready_count -= 1
        # placed after the stops above, so the surge room they free is used in this same plan (idempotence:
        # applying the plan and planning again gives no further placement)
        want = n - len(healthy_current)
        if want > 0:
            if retiring:
                budget = n + params.max_surge - (len(active) - len(stop))
                place = max(0, min(want, budget))
            else:
                place = want
    # (replicas on lost nodes are no longer active, so `want` above already counts their replacements)

    # rollout progress
    current_ready = sum(1 for v in healthy_current if v.ready)
    settled = not retiring and len(healthy_current) == n and current_ready >= n
    phase, message, rollback = RolloutPhase(w.rollout_phase), w.rollout_message, False
    if phase in (RolloutPhase.PROGRESSING, RolloutPhase.ROLLING_BACK, RolloutPhase.FAILED):
        if settled:
            if phase is RolloutPhase.ROLLING_BACK:
                phase, message = RolloutPhase.ROLLED_BACK, f"rolled back: revision {w.revision} available"
            else:
                phase, message = RolloutPhase.COMPLETE, f"revision {w.revision} available"
        elif phase is not RolloutPhase.FAILED and now - w.rollout_started_at > params.progress_deadline_s:
            late = (f"revision {w.revision} not ready within {params.progress_deadline_s:.0f}s "
                    f"({current_ready}/{n} ready)")
            if phase is RolloutPhase.PROGRESSING and params.auto_rollback and has_previous_revision:
                rollback, message = True, late + ": rolling back"
            else:
                phase, message = RolloutPhase.FAILED, late
    stopped = {s[0] for s in stop}
    keep = tuple(v.record.replica_id for v in active if v.record.replica_id not in stopped)
    refused = tuple((v.record.replica_id, v.record.node or "", refusal(v.observed))
                    for v in healthy_current if v.record.replica_id not in stopped and is_refused(v))
    return WorkloadPlan(
        place=place, stop=tuple(stop), replace=tuple(replace_), forget=tuple(forget + replace_), keep=keep,
        refused=refused, rollout_phase=phase, rollout_message=message, rollback=rollback,
        counts={"desired": n, "current": len(healthy_current), "ready": sum(1 for v in active if v.ready),
                "updated": len(current), "available": sum(1 for v in active if v.ready)},
    )


# ---- refusals: a node whose runtime cannot run a replica --------------------------------------------------------

REFUSED_TAG = "refused: "  # how a refusing node's reason is kept in ReplicaRecord.unschedulable


def refusal(observed: ReplicaObserved | None) -> str:
    """The node's reason when it refused the replica (its runtime cannot run it), else ""."""
    if observed is None or observed.state is not ReplicaState.FAILED:
        return ""
    error = observed.last_error
    if not error.startswith(NodeFacts.REFUSED):
        return ""
    return error[len(NodeFacts.REFUSED):] or "no reason given"


def is_refused(v: ReplicaView) -> bool:
    return (v.record.node is not None and v.record.phase == ReplicaPhase.ASSIGNED
            and v.node_state is NodeState.ONLINE and bool(refusal(v.observed)))


def refused_nodes(r: ReplicaRecord) -> dict[str, str]:
    """The nodes that refused this replica, with their reasons (what the scheduler must not ask again)."""
    return {node: why[len(REFUSED_TAG):] for node, why in r.unschedulable.items() if why.startswith(REFUSED_TAG)}


def unassign_refused(r: ReplicaRecord, node: str, reason: str) -> ReplicaRecord:
    """The replica back to pending, off `node`, with the refusal remembered beside earlier ones."""
    remembered = {n: REFUSED_TAG + why for n, why in refused_nodes(r).items()}
    return replaced(r, node=None, phase=ReplicaPhase.PENDING, assigned_at=None,
                    message=refused_message(r.replica_id, node, reason),
                    unschedulable={**remembered, node: (REFUSED_TAG + reason)[:500]})


def refused_message(replica_id: str, node: str, reason: str) -> str:
    """The Warning event's text (reason `ReplicaRefused`)."""
    return f"replica {replica_id} refused by node {node}: {reason}; placing it on another node"[:500]
