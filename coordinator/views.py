"""JSON shapes the REST API returns (pure): nodes, workloads with status, replicas, events."""

from __future__ import annotations

from typing import Any

from broker.wire import ReplicaObserved
from coordinator.membership import MembershipConfig, NodeInfo, NodeState
from coordinator.model import Event, NodeAdmin, ReplicaPhase, ReplicaRecord, WorkloadRecord
from coordinator.scheduler.abilities import of_facts


def node_json(info: NodeInfo, admin: NodeAdmin, *, replicas: int, alloc: tuple[int, int], now: float,
              cfg: MembershipConfig, problem: str = "") -> dict[str, Any]:
    st = info.status
    f = st.facts if st else None
    hb = info.heartbeat
    return {
        "id": info.node_id,
        "state": info.state.value,
        "online": info.state is NodeState.ONLINE,
        "schedulable": bool(st and st.schedulable) and info.state is NodeState.ONLINE and not admin.cordoned,
        "cordoned": admin.cordoned,
        "draining": admin.draining,
        "gates": list(st.gates) if st else [],
        "labels": dict(f.labels) if f else {},
        "zone": f.zone if f else "",
        "arch": f.arch if f else "",
        "os": f.os if f else "",
        "osRelease": f.os_release if f else "",
        "hostname": f.hostname if f else "",
        "profile": f.profile if f else "",
        "runtime": f.runtime if f else "",
        # what the scheduler filters on (as stated, else inferred from the runtime); empty: not known yet
        "abilities": sorted(of_facts(f) or ()),
        "runtimeVersion": f.podman_version if f else "",
        "rootless": f.rootless if f else None,
        "agentVersion": f.agent_version if f else "",
        "workloadIsolation": f.workload_isolation if f else "",
        "capacity": {"cpu": (f.cpu_count or 0) * 1000 if f else 0, "memory": (f.memory_bytes or 0) if f else 0},
        "allocated": {"cpu": alloc[0], "memory": alloc[1]},
        "usage": {
            "cpuPercent": hb.cpu_percent if hb else None,
            "memoryBytes": hb.memory_used_bytes if hb else None,
            "batteryPercent": hb.battery_percent if hb else (f.battery_percent if f else None),
        },
        "temperatures": dict(f.temperatures) if f else {},
        "replicas": replicas,
        "lastSeen": info.last_seen,
        "stateSince": info.state_since,
        "reliability": round(info.reliability(now, cfg), 4),
        "flaps": info.flaps,
        "problem": problem or None,  # why the coordinator's last round could not do its part for this node
        # what the node offers the object store (None: it offers none, or an agent too old to say)
        "storage": ({"quotaBytes": st.storage_quota_bytes, "usedBytes": st.storage_used_bytes or 0,
                     "chunks": st.storage_chunks or 0, "corrupt": len(st.storage_corrupt)}
                    if st is not None and st.storage_quota_bytes is not None else None),
    }


def replica_json(r: ReplicaRecord, observed: ReplicaObserved | None) -> dict[str, Any]:
    state = r.phase if r.phase != ReplicaPhase.ASSIGNED else "scheduled"
    ready = False
    message = r.message
    started = None
    restarts = 0
    if observed is not None and r.phase != ReplicaPhase.PENDING:
        state = observed.state.value if r.phase == ReplicaPhase.ASSIGNED else "stopping"
        ready = observed.ready and observed.spec_hash == r.spec_hash
        restarts = observed.restarts
        started = observed.started_at
        message = observed.last_error or r.message
    return {
        "id": r.replica_id, "workload": r.workload, "namespace": r.namespace, "node": r.node, "state": state,
        "ready": ready, "restarts": restarts, "specHash": r.spec_hash, "revision": r.revision, "message": message,
        "startedAt": started, "createdAt": r.created_at,
    }


def workload_json(w: WorkloadRecord, replicas: list[tuple[ReplicaRecord, ReplicaObserved | None]],
                  problem: str = "", *, rendered: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A workload with its status; `rendered`: its replicas' `replica_json` in replica-id order, when the caller
    made them already (the REST layer does, a slice at a time)."""
    reps = rendered if rendered is not None else [replica_json(r, o) for r, o in
                                                  sorted(replicas, key=lambda x: x[0].replica_id)]
    active = [x for x in reps if x["state"] != ReplicaPhase.STOPPING.value]
    desired = int(w.doc.get("spec", {}).get("replicas", 1))
    ready = sum(1 for x in active if x["ready"])
    updated = sum(1 for x in active if x["specHash"] == w.spec_hash)
    available = ready
    unsched: list[dict[str, Any]] = [{"replica": r.replica_id, "summary": r.message, "reasons": dict(r.unschedulable)}
               for r, _ in replicas if r.phase == ReplicaPhase.PENDING and r.unschedulable]
    conditions = [
        {"type": "Available", "status": str(ready >= desired).lower(),
         "reason": "MinimumReplicasAvailable" if ready >= desired else "ReplicasUnavailable",
         "message": f"{ready}/{desired} replicas ready"},
        {"type": "Progressing", "status": str(w.rollout_phase in ("progressing", "rolling-back")).lower(),
         "reason": w.rollout_phase, "message": w.rollout_message},
    ]
    if unsched:
        conditions.append({"type": "Unschedulable", "status": "true", "reason": "Unschedulable",
                           "message": unsched[0]["summary"]})
    if problem:  # the last round could not reconcile this workload (the others went on)
        conditions.append({"type": "ReconcileFailed", "status": "true", "reason": "ReconcileFailed",
                           "message": problem})
    phase = "Deleting" if w.deleting else ("Running" if ready >= desired else "Pending" if not ready else "Degraded")
    return {
        "apiVersion": w.doc.get("apiVersion", "cloudless/v1"), "kind": "Workload",
        "metadata": {**w.doc.get("metadata", {}), "namespace": w.namespace, "name": w.name,
                     "generation": w.generation, "revision": w.revision, "createdAt": w.created_at},
        "spec": w.doc.get("spec", {}),
        "status": {"desired": desired, "ready": ready, "available": available, "updated": updated,
                   "phase": phase, "specHash": w.spec_hash, "conditions": conditions, "replicas": reps,
                   "unschedulable": unsched,
                   "rollout": {"revision": w.revision, "phase": w.rollout_phase, "message": w.rollout_message}},
    }


def rollout_json(w: WorkloadRecord, status: dict[str, Any]) -> dict[str, Any]:
    s = status["status"]
    return {"revision": w.revision, "phase": w.rollout_phase, "desired": s["desired"], "updated": s["updated"],
            "ready": s["ready"], "available": s["available"], "message": w.rollout_message}


def event_json(e: Event) -> dict[str, Any]:
    return {"id": e.seq, "time": e.time, "type": e.type, "reason": e.reason, "object": e.object,
            "message": e.message}
