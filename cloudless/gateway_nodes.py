"""The storage nodes as the S3 gateway sees them, read from the coordinator's membership (pure: members and `now`
in, values out).

- A node offers storage when its status carries `storage_quota_bytes` (agents with `--storage-quota`; an older agent
  or one with quota 0 reports none / 0 and is never a placement candidate).
- `online` is "not declared lost and offering storage": a node that is suspect or cleanly offline still counts (its
  copies are probably still there; a failed read or write costs one timeout), a LOST node's copies are replaced by
  repair. A node that reports quota 0 (restarted with `--storage-quota 0`, or its chunk store failed to open: it
  serves no "chunks" service) is not online for storage either: its copies are not good copies, repair re-replicates
  them and reads try it last (review 4, H1).
- `reachable` is "state ONLINE" (not suspect, offline or lost) and offering storage: a writer dedups onto an existing
  copy only there, and writes a fresh copy otherwise (it has the bytes in hand; review 4, M4).
- `reliability` is membership's uptime share (1.0 for a node met less than HISTORY_S ago: no history yet, and a
  zero would make placement refuse a node that just joined).
- Scrub reports: each status lists the chunk ids the node found corrupt (and deleted) since they were last stored
  there. `ScrubLedger.news` returns the (node, chunk) pairs that are new since the previous look, so one report is
  acted on once even though the agent republishes it with every status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from coordinator.membership import NodeInfo, NodeState
from dataplane.objects.model import StorageNode

HISTORY_S = 60.0  # a node met less than this long ago has no uptime history yet: reliability 1 (its share is 0/0)


@dataclass(frozen=True, slots=True)
class StorageFacts:
    """What a node's status says of its storage (None: it reports none)."""

    quota: int
    used: int
    chunks: int
    corrupt: tuple[str, ...] = ()


def storage_facts(info: NodeInfo) -> StorageFacts | None:
    status = info.status
    quota = getattr(status, "storage_quota_bytes", None) if status is not None else None
    if not isinstance(quota, int) or quota < 0:
        return None
    used = getattr(status, "storage_used_bytes", None) or 0
    chunks = getattr(status, "storage_chunks", None) or 0
    corrupt = tuple(getattr(status, "storage_corrupt", ()) or ())
    return StorageFacts(quota, int(used), int(chunks), corrupt)


def zone_of(info: NodeInfo) -> str:
    facts = info.status.facts if info.status is not None else None
    return facts.zone if facts is not None else ""


def storage_nodes(members: Mapping[str, NodeInfo], now: float) -> list[StorageNode]:
    """Every member that reports storage, as placement and repair see it, sorted by id."""
    nodes = []
    for node_id in sorted(members):
        info = members[node_id]
        facts = storage_facts(info)
        if facts is None:
            continue
        known = now - info.first_seen if info.first_seen else 0.0
        nodes.append(StorageNode(node_id, zone_of(info), quota=facts.quota, used=facts.used,
                                 reliability=info.reliability(now) if known >= HISTORY_S else 1.0,
                                 online=info.state is not NodeState.LOST and facts.quota > 0,
                                 reachable=info.state is NodeState.ONLINE and facts.quota > 0))
    return nodes


def lost_nodes(members: Mapping[str, NodeInfo]) -> frozenset[str]:
    return frozenset(n for n, info in members.items() if info.state is NodeState.LOST)


@dataclass
class ScrubLedger:
    """The corrupt-chunk reports already acted on, per node."""

    seen: dict[str, frozenset[str]] = field(default_factory=dict)

    def news(self, members: Mapping[str, NodeInfo]) -> list[tuple[str, str]]:
        """(node, chunk id) pairs reported corrupt that were not in that node's previous report."""
        found: list[tuple[str, str]] = []
        for node_id in sorted(members):
            facts = storage_facts(members[node_id])
            now = frozenset(facts.corrupt) if facts is not None else frozenset()
            found.extend((node_id, cid) for cid in sorted(now - self.seen.get(node_id, frozenset())))
            self.seen[node_id] = now
        for gone in set(self.seen) - set(members):
            del self.seen[gone]
        return found


def storage_rows(members: Mapping[str, NodeInfo], nodes: Iterable[StorageNode]) -> list[dict[str, object]]:
    """Per node, for status(): id, zone, quota, used, chunks, online."""
    rows: list[dict[str, object]] = []
    for n in nodes:
        info = members.get(n.node_id)
        facts = storage_facts(info) if info is not None else None
        rows.append({"node": n.node_id, "zone": n.zone, "quotaBytes": n.quota, "usedBytes": n.used,
                     "chunks": facts.chunks if facts is not None else 0, "online": n.online,
                     "state": info.state.value if info is not None else "unknown",
                     "reliability": round(n.reliability, 4)})
    return rows
