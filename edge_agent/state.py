"""The agent's local state in its data dir (adapter): written atomically, read defensively.

Layout of DATA_DIR:
    node-id                 the node's identity (chosen once)
    state/desired.msgpack   the last accepted DesiredState, in wire encoding (the same bytes the broker holds)
    state/agent.json        highest epoch seen and per-replica bookkeeping (restarts, back-off)
    process/                the process runtime's instances (pid files, exit codes, logs)
    identity/               keys and certificates (security issue)

Writes are atomic (`edge_agent.atomic`: temp file, fsync, rename, fsync the directory) — a power cut leaves
either the old or the new file, never a torn one. A damaged file is reported and set aside (`*.corrupt`), never a
crash: the agent then waits for the broker's retained desired state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import wire
from broker.wire import DesiredState
from edge_agent.atomic import atomic_write
from edge_agent.errors import StateError
from edge_agent.reconcile import ReplicaRecord

log = logging.getLogger(__name__)


def _save(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


@dataclass
class LocalState:
    desired: DesiredState | None = None
    max_epoch: int = 0
    records: dict[str, ReplicaRecord] = field(default_factory=dict)


class StateStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "state"
        self.desired_path = self.dir / "desired.msgpack"
        self.agent_path = self.dir / "agent.json"
        self.writes = 0

    def load(self) -> LocalState:
        state = LocalState()
        raw = self._read(self.desired_path)
        if raw is not None:
            try:
                state.desired = wire.decode_as(raw, DesiredState)
            except wire.WireError as exc:
                self._set_aside(self.desired_path, f"undecodable desired state ({exc})")
        raw = self._read(self.agent_path)
        if raw is not None:
            try:
                doc = json.loads(raw)
                state.max_epoch = int(doc.get("max_epoch", 0))
                state.records = {rid: _record(rid, rec) for rid, rec in dict(doc.get("records", {})).items()}
            except (ValueError, TypeError, AttributeError) as exc:
                self._set_aside(self.agent_path, f"unreadable agent state ({exc})")
                state.max_epoch, state.records = 0, {}
        if state.desired is not None:
            state.max_epoch = max(state.max_epoch, state.desired.epoch)
        return state

    def save_desired(self, desired: DesiredState) -> None:
        _save(self.desired_path, wire.encode(desired))
        self.writes += 1

    def save_agent(self, max_epoch: int, records: dict[str, ReplicaRecord]) -> None:
        doc = {"max_epoch": max_epoch, "records": {rid: dataclasses.asdict(r) for rid, r in sorted(records.items())}}
        _save(self.agent_path, json.dumps(doc, sort_keys=True).encode())
        self.writes += 1

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def _set_aside(self, path: Path, why: str) -> None:
        log.error("%s: %s; moved aside to %s.corrupt, waiting for the broker's copy", path, why, path.name)
        with contextlib.suppress(OSError):
            path.replace(path.with_name(path.name + ".corrupt"))


_RECORD_FIELDS = {f.name for f in dataclasses.fields(ReplicaRecord)}


def _record(rid: str, data: Any) -> ReplicaRecord:
    if not isinstance(data, dict):
        raise TypeError(f"record {rid} is not an object")
    return ReplicaRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS and k != "replica_id"},
                         replica_id=rid)
