"""Warning events from what nodes report about their replicas (pure core): a failed image pull, a replica that
failed to start or keeps crashing. Issue 15: the cause of a stuck replica must be visible without the agent's log.

`warnings(before, after)` compares a node's previous observed state with the new one and returns one
`ReplicaWarning` per replica that newly entered a failure, or whose failure changed cause. What counts as "the
same failure" ignores what changes on every report (the back-off countdown, the attempt number), so a pull
retrying every two minutes is one event, not one per retry. Refusals (`NodeFacts.REFUSED`) are left to the
lifecycle core, which re-places the replica and says so (`lifecycle.refused_message`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.wire import NodeFacts, ObservedState, ReplicaObserved, ReplicaState

PULL_PREFIXES = ("ErrImagePull: ", "ImagePullBackOff: ")
_COUNTDOWN = re.compile(r" \((?:attempt \d+, )?(?:retry in \d+s|next retry at [0-9:]+ UTC)\)$")


@dataclass(frozen=True, slots=True)
class ReplicaWarning:
    reason: str  # ErrImagePull | CrashLoopBackOff | ReplicaFailed
    node_id: str
    replica_id: str
    workload: str
    message: str


def cause(r: ReplicaObserved) -> tuple[str, str] | None:
    """(event reason, the failure's stable text) when the replica is failing in a way a user must see."""
    error = r.last_error
    if r.state is ReplicaState.PULLING:
        for prefix in PULL_PREFIXES:
            if error.startswith(prefix):
                return "ErrImagePull", _COUNTDOWN.sub("", error[len(prefix):])
        return None
    if error.startswith(NodeFacts.REFUSED):
        return None
    if r.state is ReplicaState.CRASH_LOOP:
        return "CrashLoopBackOff", error or f"exit code {r.exit_code}"
    if r.state is ReplicaState.FAILED and error:
        return "ReplicaFailed", error
    return None


def warnings(before: ObservedState | None, after: ObservedState) -> tuple[ReplicaWarning, ...]:
    previous = {r.replica_id: cause(r) for r in before.replicas} if before is not None else {}
    out: list[ReplicaWarning] = []
    for r in after.replicas:
        now = cause(r)
        if now is None or previous.get(r.replica_id) == now:
            continue
        reason, text = now
        what = {"ErrImagePull": "cannot pull its image", "CrashLoopBackOff": "keeps crashing",
                "ReplicaFailed": "failed"}[reason]
        out.append(ReplicaWarning(reason, after.node_id, r.replica_id, r.workload,
                                  f"replica {r.replica_id} on {after.node_id} {what}: {text}"[:500]))
    return tuple(out)
