"""Builders for agent tests (STYLE §5): short calls instead of long literals."""

from __future__ import annotations

from typing import Any

from broker.wire import DesiredState, Probe, ProbeKind, ReplicaSpec, RestartPolicy
from edge_agent.runtime.base import Instance, InstanceState

NOW = 1_700_000_000.0


def make_spec(rid: str = "web-0", *, workload: str = "web", spec_hash: str = "h1",
              policy: RestartPolicy = RestartPolicy.ALWAYS, image: str = "localhost/cloudless/busybox:latest",
              command: tuple[str, ...] = ("sleep", "300"), liveness: Probe | None = None,
              readiness: Probe | None = None, **more: Any) -> ReplicaSpec:
    return ReplicaSpec(replica_id=rid, workload=workload, spec_hash=spec_hash, image=image, command=command,
                       restart_policy=policy, liveness=liveness, readiness=readiness, **more)


def make_instance(rid: str = "web-0", *, iid: str | None = None, spec_hash: str = "h1",
                  state: InstanceState = InstanceState.RUNNING, exit_code: int | None = None,
                  started_at: float | None = NOW - 10, finished_at: float | None = None,
                  generation: int = 1) -> Instance:
    return Instance(instance_id=iid or f"c-{rid}", replica_id=rid, workload=rid.rsplit("-", 1)[0],
                    namespace="default", spec_hash=spec_hash, generation=generation, state=state,
                    exit_code=exit_code, started_at=started_at, finished_at=finished_at)


def make_desired(node: str, *specs: ReplicaSpec, generation: int = 1, epoch: int = 1) -> DesiredState:
    return DesiredState(node_id=node, generation=generation, epoch=epoch, issued_at=NOW, replicas=specs)


def exec_probe(*argv: str, period: float = 1.0, failures: int = 2) -> Probe:
    return Probe(kind=ProbeKind.EXEC, command=argv, period_s=period, failure_threshold=failures, timeout_s=1.0)
