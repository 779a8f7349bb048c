"""What the coordinator keeps in its store, as frozen records with a JSON form (the store holds bytes).

Keys (one place to spell them):
    /workloads/<ns>/<name>              WorkloadRecord: the applied document, rollout revision and history
    /replicas/<ns>/<name>/<replica>     ReplicaRecord: one replica's assignment (node, revision, phase)
    /nodes/<id>                         NodeAdmin: what admins set on a node (cordon, drain)
    /nodegen/<id>                       the last desired-state generation published to a node
    /events/<seq>                       Event (bounded retention)
    /meta/epoch                         this cluster's leadership epoch
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


def workload_key(namespace: str, name: str) -> str:
    return f"/workloads/{namespace}/{name}"


def replica_prefix(namespace: str, name: str) -> str:
    return f"/replicas/{namespace}/{name}/"


def replica_key(namespace: str, name: str, replica_id: str) -> str:
    return f"/replicas/{namespace}/{name}/{replica_id}"


def node_key(node_id: str) -> str:
    return f"/nodes/{node_id}"


def member_key(node_id: str) -> str:
    """A node's last status (wire bytes), kept so an offline node stays listed after a restart of coordinator and
    broker (an embedded broker's retained messages live in memory)."""
    return f"/members/{node_id}"


def nodegen_key(node_id: str) -> str:
    return f"/nodegen/{node_id}"


def event_key(seq: int) -> str:
    return f"/events/{seq:016d}"


EPOCH_KEY = "/meta/epoch"


def to_json(record: object) -> bytes:
    return json.dumps(dataclasses.asdict(record), sort_keys=True, separators=(",", ":")).encode()  # type: ignore[call-overload]


def from_json(cls: type[T], raw: bytes) -> T:
    data = json.loads(raw)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


class ReplicaPhase(StrEnum):
    PENDING = "pending"  # waiting for a node (unschedulable, or not scheduled yet)
    ASSIGNED = "assigned"  # in a node's desired state
    STOPPING = "stopping"  # removed from desired state, the node still reports it


class RolloutPhase(StrEnum):
    PROGRESSING = "progressing"
    ROLLING_BACK = "rolling-back"
    COMPLETE = "complete"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Revision:
    revision: int
    spec_hash: str
    doc: dict[str, Any]
    created_at: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    namespace: str
    name: str
    doc: dict[str, Any]  # the canonical applied document
    spec_hash: str
    revision: int  # rollout revision: +1 whenever spec_hash changes
    generation: int  # +1 on every accepted change (apply, scale, rollback)
    created_at: float
    deleting: bool = False
    rollout_phase: str = RolloutPhase.COMPLETE
    rollout_started_at: float = 0.0
    rollout_message: str = ""
    history: tuple[dict[str, Any], ...] = ()  # Revision records as dicts, newest last, bounded

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    replica_id: str
    namespace: str
    workload: str
    revision: int
    spec_hash: str
    node: str | None = None
    phase: str = ReplicaPhase.PENDING
    created_at: float = 0.0
    assigned_at: float | None = None
    stop_requested_at: float | None = None
    message: str = ""  # why pending (unschedulable summary) or why stopping
    unschedulable: dict[str, str] = field(default_factory=dict)  # node -> reason


@dataclass(frozen=True, slots=True)
class NodeAdmin:
    cordoned: bool = False
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float
    type: str  # Normal | Warning
    reason: str  # Placed, Unschedulable, NodeLost, ...
    object: str  # workload/ns/name, node/id, replica/ns/name/id
    message: str
