"""Workload revisions (pure core): numbering, the history each record carries, and the rollback target.

A workload record moves through these transitions (each returns the new record; nothing here writes):

- `created`: revision 1, generation 1, a rollout in progress, history = [revision 1];
- `applied` with a new spec hash: revision + 1, a rollout in progress, the new revision appended to the history;
- `applied` with the same spec hash (replicas, placement): generation + 1 only, nothing restarts;
- `rolled_back`: the target revision's document with today's replica count becomes a new revision (revision + 1,
  phase rolling-back), appended to the history like any other.

Invariants: `revision` only grows and changes exactly when the spec hash does (or on a rollback); `generation`
grows on every accepted change; the history is ordered oldest first, holds at most HISTORY_LIMIT entries unless
more are still run by some replica (an entry whose spec hash a replica runs is never trimmed, nor the newest).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import replace
from typing import Any

from coordinator.model import RolloutPhase, WorkloadRecord

HISTORY_LIMIT = 10

Entry = dict[str, Any]  # a history entry as stored: revision, spec_hash, doc, created_at, cause


def entry(revision: int, spec_hash: str, doc: dict[str, Any], now: float, cause: str) -> Entry:
    return {"revision": revision, "spec_hash": spec_hash, "doc": doc, "created_at": now, "cause": cause}


def trim(history: tuple[Entry, ...], in_use: Set[str]) -> tuple[Entry, ...]:
    """Drop the oldest entries no replica runs until at most HISTORY_LIMIT remain (the newest always stays)."""
    keep = list(history)
    while len(keep) > HISTORY_LIMIT:
        victim = next((h for h in keep[:-1] if h["spec_hash"] not in in_use), None)
        if victim is None:
            break
        keep.remove(victim)
    return tuple(keep)


def created(namespace: str, name: str, *, doc: dict[str, Any], spec_hash: str, now: float) -> WorkloadRecord:
    return WorkloadRecord(namespace=namespace, name=name, doc=doc, spec_hash=spec_hash, revision=1, generation=1,
                          created_at=now, rollout_phase=RolloutPhase.PROGRESSING, rollout_started_at=now,
                          rollout_message="creating", history=(entry(1, spec_hash, doc, now, "created"),))


def rolled_out(old: WorkloadRecord, *, doc: dict[str, Any], spec_hash: str, now: float,
               in_use: Set[str]) -> WorkloadRecord:
    """A new spec (hash): the next revision, rolled out."""
    rev = old.revision + 1
    return replace(old, doc=doc, spec_hash=spec_hash, revision=rev, generation=old.generation + 1, deleting=False,
                   rollout_phase=RolloutPhase.PROGRESSING, rollout_started_at=now,
                   rollout_message=f"rolling out revision {rev}",
                   history=trim((*old.history, entry(rev, spec_hash, doc, now, "apply")), in_use))


def updated(old: WorkloadRecord, *, doc: dict[str, Any]) -> WorkloadRecord:
    """The same spec (hash) with other replicas or placement: a new generation, no new revision."""
    return replace(old, doc=doc, generation=old.generation + 1, deleting=False)


def rollback_target(w: WorkloadRecord, revision: int | None) -> Entry | None:
    """The entry to roll back to: the given revision, else the newest whose spec differs from the current one;
    None when there is none."""
    if revision is not None:
        candidates = [h for h in w.history if h["revision"] == revision]
    else:
        candidates = [h for h in w.history if h["spec_hash"] != w.spec_hash]
    return candidates[-1] if candidates else None


def rollback_doc(w: WorkloadRecord, target: Entry) -> dict[str, Any]:
    """The target's document with the replica count the workload has now (a rollback does not scale)."""
    return {**target["doc"], "spec": {**target["doc"]["spec"], "replicas": w.doc["spec"].get("replicas", 1)}}


def rolled_back(w: WorkloadRecord, target: Entry, *, doc: dict[str, Any], spec_hash: str, now: float,
                in_use: Set[str]) -> WorkloadRecord:
    rev = w.revision + 1
    return replace(w, doc=doc, spec_hash=spec_hash, revision=rev, generation=w.generation + 1,
                   rollout_phase=RolloutPhase.ROLLING_BACK, rollout_started_at=now,
                   rollout_message=f"rolling back to revision {target['revision']}",
                   history=trim((*w.history, entry(rev, spec_hash, doc, now, f"rollback to {target['revision']}")),
                                in_use))
