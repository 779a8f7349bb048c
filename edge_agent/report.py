"""What the agent reports (pure core): its status, observed state and heartbeat messages, built from values, and
the keys that say whether a retained report changed.

Status and observed state are retained: the agent publishes them only when their key changes (or when forced,
after a reconnect, since the broker may have lost them). The heartbeat is not retained and goes out when
`edge_agent.beat` says it carries news (or its maximum interval passed). Bounds follow the wire's limits: at
most 16 gate reasons of 128 characters, 256 replica usages, a replica's CPU capped at 6400 % (64 cores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from broker.wire import (
    DesiredState,
    Heartbeat,
    NodeFacts,
    NodeStatus,
    ObservedState,
    Presence,
    ReplicaObserved,
    ReplicaUsage,
)
from broker.wire.messages import MAX_CORRUPT_REPORTED

if TYPE_CHECKING:
    from edge_agent.facts import MemDisk
    from edge_agent.runtime.base import Usage
    from edge_agent.storage_plan import StorageFacts

MAX_GATES = 16
MAX_GATE_TEXT = 128
MAX_USAGES = 256
MAX_CPU_PERCENT = 6400.0
MAX_COUNT = 2**31 - 1  # the wire's Count

StatusKey = tuple[Presence, bool, tuple[str, ...]]
ObservedKey = tuple[int, int, tuple[ReplicaObserved, ...]]


def status_key(presence: Presence, schedulable: bool, reasons: tuple[str, ...]) -> StatusKey:
    return presence, schedulable, reasons


def status(*, node_id: str, presence: Presence, now: float, facts: NodeFacts, schedulable: bool,
           reasons: Sequence[str], boot_id: str, heartbeat_max_s: float | None = None,
           keepalive_s: int | None = None, storage: StorageFacts | None = None) -> NodeStatus:
    """`schedulable`: what the gates say; an offline node is never schedulable. `heartbeat_max_s`/`keepalive_s`:
    the control link's timers (`edge_agent.beat`), from which the coordinator derives this node's silence TTL.
    `storage`: the node's share of the object store (None: left out, as an older agent would)."""
    return NodeStatus(
        node_id=node_id, presence=presence, ts=now, facts=facts,
        schedulable=schedulable and presence is Presence.ONLINE,
        gates=tuple(g[:MAX_GATE_TEXT] for g in reasons[:MAX_GATES]), boot_id=boot_id,
        heartbeat_max_s=heartbeat_max_s, keepalive_s=keepalive_s,
        storage_quota_bytes=storage.quota_bytes if storage else None,
        storage_used_bytes=storage.used_bytes if storage else None,
        storage_chunks=min(storage.chunks, MAX_COUNT) if storage else None,
        storage_corrupt=storage.corrupt[-MAX_CORRUPT_REPORTED:] if storage else (),
    )


def observed(node_id: str, desired: DesiredState | None, now: float,
             replicas: tuple[ReplicaObserved, ...]) -> ObservedState:
    """The observed state against the desired state it answers (generation and epoch 0 before any)."""
    return ObservedState(node_id=node_id, generation=desired.generation if desired else 0,
                         epoch=desired.epoch if desired else 0, ts=now, replicas=replicas)


def observed_key(msg: ObservedState) -> ObservedKey:
    return msg.generation, msg.epoch, msg.replicas


def replica_usage(usage: Mapping[str, Usage], replica_of: Mapping[str, str]) -> tuple[ReplicaUsage, ...]:
    """Per-replica usage from the runtime's per-instance usage; instances of no known replica are left out."""
    return tuple(
        ReplicaUsage(replica_id=replica_of[iid],
                     cpu_percent=min(u.cpu_percent, MAX_CPU_PERCENT) if u.cpu_percent is not None else None,
                     memory_bytes=u.memory_bytes)
        for iid, u in sorted(usage.items()) if iid in replica_of
    )[:MAX_USAGES]


def heartbeat(*, node_id: str, seq: int, now: float, cpu_percent: float | None, md: MemDisk,
              battery_percent: float | None, replicas: tuple[ReplicaUsage, ...],
              max_epoch: int | None = None) -> Heartbeat:
    """`max_epoch`: the highest coordinator epoch this agent honours (0, none seen yet, is left out), so a
    coordinator restored to a lower epoch learns that it is being ignored."""
    return Heartbeat(
        node_id=node_id, seq=seq, ts=now, cpu_percent=cpu_percent, memory_used_bytes=md.memory_used,
        memory_total_bytes=md.memory_total, disk_used_bytes=md.disk_used, disk_total_bytes=md.disk_total,
        battery_percent=battery_percent, replicas=replicas, max_epoch=max_epoch or None,
    )
