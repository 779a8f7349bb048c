"""The agent's reconciler: desired replicas vs what the runtime reports -> a plan of actions (pure core).

Theory of operation
-------------------
Inputs are values: the desired replica specs, the runtime's instances (labelled with replica id and spec hash),
the agent's bookkeeping per replica (`ReplicaRecord`: restarts, back-off, liveness verdicts), and `now`.
`reconcile()` sorts every replica into named buckets (STYLE §3):

- `create`   desired, no instance yet                         -> pull image, create, start
- `start`    instance exited/created, restart policy says run  -> start (same instance id), after back-off
- `restart`  running but its liveness probe failed             -> stop, start (counts as a restart)
- `replace`  instance runs an older spec hash                  -> stop + remove, then create the new spec
- `remove`   instance of a replica that is no longer desired, or a duplicate -> stop + remove
- `keep`     running as desired, or finished for good (policy Never / OnFailure after success)
- `waiting`  exited, restart due later (crash back-off)

Invariants: every desired replica lands in exactly one bucket; every instance is acted on at most once; the
plan is idempotent — apply it (with a runtime that does what it is told) and reconcile again with the records
it returned: only `keep` and `waiting` remain. Back-off is exponential in *consecutive* failed runs and resets
once a run lasted `reset_after_s`; a replica that failed `crash_loop_after` times in a row is reported in
crash loop (it is still restarted, with back-off — Kubernetes' CrashLoopBackOff).

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from broker.wire import ReplicaObserved, ReplicaSpec, ReplicaState, RestartPolicy
from edge_agent.runtime.base import Instance, InstanceState


@dataclass(frozen=True, slots=True)
class RestartConfig:
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    reset_after_s: float = 60.0  # a run this long clears the consecutive-failure count
    crash_loop_after: int = 3


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """The agent's memory of one replica across runs (persisted with the local state)."""

    replica_id: str
    restarts: int = 0  # total restarts performed by the agent
    consecutive_failures: int = 0
    next_start_at: float = 0.0  # back-off: do not start before this
    last_exit_code: int | None = None
    last_error: str = ""
    liveness_failed: bool = False  # set by the probe runner, cleared by a restart
    last_started_at: float | None = None
    handled_exit_at: float | None = None  # finished_at of the last exit already counted


@dataclass(frozen=True, slots=True)
class Action:
    replica_id: str
    reason: str
    instance_id: str = ""
    spec: ReplicaSpec | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    create: tuple[Action, ...] = ()
    start: tuple[Action, ...] = ()
    restart: tuple[Action, ...] = ()
    replace: tuple[Action, ...] = ()
    remove: tuple[Action, ...] = ()
    keep: tuple[str, ...] = ()
    waiting: tuple[tuple[str, float], ...] = ()  # (replica_id, next start time)
    records: Mapping[str, ReplicaRecord] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when there is nothing to do now (only keep/waiting)."""
        return not (self.create or self.start or self.restart or self.replace or self.remove)


def backoff_delay(consecutive_failures: int, cfg: RestartConfig) -> float:
    if consecutive_failures <= 0:
        return 0.0
    return float(min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** min(consecutive_failures - 1, 32)))


def wants_restart(policy: RestartPolicy, exit_code: int | None) -> bool:
    match policy:
        case RestartPolicy.ALWAYS:
            return True
        case RestartPolicy.ON_FAILURE:
            return exit_code != 0
        case RestartPolicy.NEVER:
            return False
    return False


def _pick(instances: Sequence[Instance], spec: ReplicaSpec) -> tuple[Instance | None, list[Instance]]:
    """The instance to keep for a replica (current spec, running, newest generation first), and the extras."""
    ranked = sorted(
        instances,
        key=lambda i: (i.spec_hash == spec.spec_hash, i.state is InstanceState.RUNNING, i.generation,
                       i.started_at or 0.0, i.instance_id),
        reverse=True,
    )
    return (ranked[0] if ranked else None), ranked[1:]


def _note_exit(record: ReplicaRecord, inst: Instance, cfg: RestartConfig) -> ReplicaRecord:
    """Count an exit once (the same exit is seen on every pass until the replica is started again)."""
    finished = inst.finished_at if inst.finished_at is not None else inst.started_at
    if record.handled_exit_at is not None and finished is not None and finished <= record.handled_exit_at:
        return record
    ran_for = (finished - inst.started_at) if finished is not None and inst.started_at is not None else 0.0
    failures = 1 if ran_for >= cfg.reset_after_s else record.consecutive_failures + 1
    at = finished if finished is not None else 0.0
    return replace(
        record,
        consecutive_failures=failures,
        next_start_at=at + backoff_delay(failures, cfg),
        last_exit_code=inst.exit_code,
        last_error=inst.error or record.last_error,
        handled_exit_at=at,
    )


def reconcile(
    desired: Sequence[ReplicaSpec],
    instances: Sequence[Instance],
    records: Mapping[str, ReplicaRecord],
    now: float,
    cfg: RestartConfig = RestartConfig(),
) -> Plan:
    by_replica: dict[str, list[Instance]] = {}
    for inst in instances:
        by_replica.setdefault(inst.replica_id, []).append(inst)
    create: list[Action] = []
    start: list[Action] = []
    restart: list[Action] = []
    replace_: list[Action] = []
    remove: list[Action] = []
    keep: list[str] = []
    waiting: list[tuple[str, float]] = []
    new_records: dict[str, ReplicaRecord] = {}

    wanted = {spec.replica_id: spec for spec in desired}
    for rid, insts in sorted(by_replica.items()):
        if rid not in wanted:
            remove += [Action(rid, "no longer desired", i.instance_id) for i in insts]
    for rid, spec in sorted(wanted.items()):
        record = records.get(rid) or ReplicaRecord(rid)
        current, extras = _pick(by_replica.get(rid, []), spec)
        remove += [Action(rid, "duplicate instance", i.instance_id) for i in extras]
        if current is None:
            if now < record.next_start_at:  # a failed create (image pull, runtime error) backs off too
                waiting.append((rid, record.next_start_at))
            else:
                create.append(Action(rid, "not running", spec=spec))
                record = replace(record, liveness_failed=False, last_started_at=now)
        elif current.spec_hash != spec.spec_hash:
            replace_.append(Action(rid, "spec changed", current.instance_id, spec))
            record = replace(record, liveness_failed=False, consecutive_failures=0, next_start_at=0.0,
                             last_started_at=now)
        elif current.state is InstanceState.RUNNING:
            if record.liveness_failed:
                restart.append(Action(rid, "liveness probe failed", current.instance_id, spec))
                record = replace(record, liveness_failed=False, restarts=record.restarts + 1, last_started_at=now)
            else:
                if (current.started_at is not None and now - current.started_at >= cfg.reset_after_s
                        and record.consecutive_failures):
                    record = replace(record, consecutive_failures=0, next_start_at=0.0)
                keep.append(rid)
        elif current.state is InstanceState.CREATED:
            if record.consecutive_failures and now < record.next_start_at:  # its start failed: back off too
                waiting.append((rid, record.next_start_at))
            else:
                start.append(Action(rid, "created, not started", current.instance_id, spec))
                record = replace(record, liveness_failed=False, last_started_at=now)
        else:  # exited (or a state we cannot map): the restart policy decides
            record = _note_exit(record, current, cfg)
            if not wants_restart(spec.restart_policy, current.exit_code):
                keep.append(rid)
            elif now < record.next_start_at:
                waiting.append((rid, record.next_start_at))
            else:
                reason = f"exited with code {current.exit_code}" if current.exit_code is not None else "exited"
                start.append(Action(rid, reason, current.instance_id, spec))
                record = replace(record, restarts=record.restarts + 1, liveness_failed=False, last_started_at=now)
        new_records[rid] = record
    return Plan(
        create=tuple(create), start=tuple(start), restart=tuple(restart), replace=tuple(replace_),
        remove=tuple(remove), keep=tuple(keep), waiting=tuple(waiting), records=new_records,
    )


def action_failed(record: ReplicaRecord, error: str, now: float, cfg: RestartConfig = RestartConfig()) -> ReplicaRecord:
    """The adapter could not carry out an action (image pull failed, runtime error): back off and remember why."""
    failures = record.consecutive_failures + 1
    return replace(record, consecutive_failures=failures, next_start_at=now + backoff_delay(failures, cfg),
                   last_error=error[:1024])


def in_crash_loop(record: ReplicaRecord, cfg: RestartConfig = RestartConfig()) -> bool:
    return record.consecutive_failures >= cfg.crash_loop_after


def observe(
    desired: Sequence[ReplicaSpec],
    instances: Sequence[Instance],
    records: Mapping[str, ReplicaRecord],
    ready: Mapping[str, bool],
    *,
    pulling: Collection[str] | Mapping[str, str] = frozenset(),
    cfg: RestartConfig = RestartConfig(),
    unready: Mapping[str, str] | None = None,
) -> tuple[ReplicaObserved, ...]:
    """What the agent reports per replica (the `observed` message): every desired replica, plus instances of
    replicas no longer desired that still exist (reported `stopping` until they are gone).

    `pulling`: the replicas waiting for their image; a mapping gives each one's pull message
    (`images.pull_message`: "ErrImagePull: ..." / "ImagePullBackOff: ..."), reported as its last_error.
    `unready`: why a running replica's readiness probe fails (its last message), reported as "readiness: ..." when
    there is no other error: a replica that never becomes ready says why."""
    pull_errors: Mapping[str, str] = pulling if isinstance(pulling, Mapping) else {}
    by_replica: dict[str, list[Instance]] = {}
    for inst in instances:
        by_replica.setdefault(inst.replica_id, []).append(inst)
    out: list[ReplicaObserved] = []
    for spec in sorted(desired, key=lambda s: s.replica_id):
        rid = spec.replica_id
        record = records.get(rid) or ReplicaRecord(rid)
        current, _ = _pick(by_replica.pop(rid, []), spec)
        state = _state(spec, current, record, rid in pulling, cfg)
        out.append(ReplicaObserved(
            replica_id=rid,
            workload=spec.workload,
            state=state,
            spec_hash=current.spec_hash if current is not None else "",
            ready=state is ReplicaState.RUNNING and ready.get(rid, spec.readiness is None),
            restarts=min(record.restarts, 2**31 - 1),
            exit_code=current.exit_code if current is not None and current.state is InstanceState.EXITED
            else record.last_exit_code,
            last_error=(_last_error(current, record, pull_errors.get(rid, "") if state is ReplicaState.PULLING
                                    else "") or _unready(state, rid, ready, unready))[:1024],
            started_at=current.started_at if current is not None else None,
            container_id=current.instance_id[:128] if current is not None else "",
        ))
    for rid, insts in sorted(by_replica.items()):
        inst = insts[0]
        out.append(ReplicaObserved(replica_id=rid, workload=inst.workload, state=ReplicaState.STOPPING,
                                   spec_hash=inst.spec_hash, container_id=inst.instance_id[:128]))
    return tuple(out)


def _unready(state: ReplicaState, rid: str, ready: Mapping[str, bool], unready: Mapping[str, str] | None) -> str:
    why = (unready or {}).get(rid, "")
    return f"readiness: {why}" if why and state is ReplicaState.RUNNING and not ready.get(rid, False) else ""


def _last_error(current: Instance | None, record: ReplicaRecord, pull_error: str) -> str:
    if pull_error:
        return pull_error
    return current.error if current is not None and current.error else record.last_error


def _state(spec: ReplicaSpec, current: Instance | None, record: ReplicaRecord, pulling: bool,
           cfg: RestartConfig) -> ReplicaState:
    failed = bool(record.last_error and record.consecutive_failures)
    if current is None:
        if pulling:
            return ReplicaState.PULLING
        return ReplicaState.FAILED if failed else ReplicaState.PENDING
    if current.spec_hash != spec.spec_hash:
        return ReplicaState.STARTING
    if current.state is InstanceState.CREATED:
        # created, and its start failed (a runtime that cannot apply a limit, say): a failure, not "starting"
        # forever; it is retried with back-off like a crash
        return ReplicaState.FAILED if failed else ReplicaState.STARTING
    if current.state is InstanceState.RUNNING:
        return ReplicaState.RUNNING
    if current.state is InstanceState.UNKNOWN:
        return ReplicaState.UNKNOWN
    if in_crash_loop(record, cfg):
        return ReplicaState.CRASH_LOOP
    if not wants_restart(spec.restart_policy, current.exit_code) and current.exit_code == 0:
        return ReplicaState.EXITED
    return ReplicaState.FAILED if current.exit_code not in (None, 0) else ReplicaState.EXITED
