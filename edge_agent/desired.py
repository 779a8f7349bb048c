"""Which desired-state messages the agent accepts (pure core): generation order and epoch fencing.

ARCHITECTURE §4: every desired state carries the publishing leader's epoch. The agent remembers the highest
epoch it has seen (persisted, so fencing survives a reboot) and ignores anything from a lower epoch — a deposed
leader cannot overwrite a newer one. Within an epoch, generations only move forward; the same generation again
(a retained replay after reconnect) is a no-op. A higher epoch is accepted whatever its generation, because a
new leader may number generations afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.wire import DesiredState


@dataclass(frozen=True, slots=True)
class Accepted:
    state: DesiredState
    max_epoch: int


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


def consider(current: DesiredState | None, max_epoch: int, incoming: DesiredState, node_id: str) -> Accepted | Ignored:
    if incoming.node_id != node_id:
        return Ignored(f"desired state for node {incoming.node_id!r}, this is {node_id!r}")
    if incoming.epoch < max_epoch:
        return Ignored(f"epoch {incoming.epoch} is lower than {max_epoch} (fenced: stale leader)")
    if current is not None and incoming.epoch == current.epoch and incoming.generation <= current.generation:
        if incoming.generation == current.generation:
            return Ignored(f"generation {incoming.generation} already applied")
        return Ignored(f"generation {incoming.generation} is older than {current.generation}")
    return Accepted(incoming, max(max_epoch, incoming.epoch))
