"""Workload spec -> what the wire and the scheduler need (pure core): ReplicaSpec, PlacementRequest, rollout
parameters, and the scheduler's NodeView of a member."""

from __future__ import annotations

from collections.abc import Mapping

from broker import wire
from broker.wire import (
    ID_MAX_LEN,
    PortMapping,
    Protocol,
    ReplicaSpec,
    SeccompType,
    SecretEnv,
    SecretFile,
    SecretUpdate,
    SecretVolume,
    Security,
    VolumeMount,
)
from coordinator.lifecycle import RolloutParams, resolve
from coordinator.membership import NodeInfo, NodeState
from coordinator.scheduler import NodeView
from coordinator.scheduler import abilities as node_abilities
from coordinator.spec import RolloutStrategy, SecurityContext, Workload

MEMORY_MEDIUM = "Memory"


def replica_spec(w: Workload, replica_id: str, spec_hash: str) -> ReplicaSpec:
    s = w.spec
    return ReplicaSpec(
        replica_id=replica_id,
        workload=w.name,
        namespace=w.namespace,
        spec_hash=spec_hash,
        image=s.image,
        command=s.command,
        args=s.args,
        env={e.name: e.value for e in s.env if e.value_from is None},
        cpu_millis=s.resources.limits.cpu_millis or 0,
        memory_bytes=s.resources.limits.memory_bytes or 0,
        ports=tuple(PortMapping(container_port=p.container_port, host_port=p.host_port,
                                protocol=Protocol(str(p.protocol))) for p in s.ports),
        volumes=tuple(VolumeMount(name=v.name, mount_path=v.mount_path,
                                  medium=MEMORY_MEDIUM if str(v.empty_dir.medium) == MEMORY_MEDIUM else "",
                                  size_limit_bytes=v.empty_dir.size_limit_bytes) for v in s.volumes),
        restart_policy=s.restart_policy,
        liveness=s.liveness_probe.to_wire() if s.liveness_probe else None,
        readiness=s.readiness_probe.to_wire() if s.readiness_probe else None,
        labels=dict(w.metadata.labels),
        security=security(s.security_context),
        secret_env=tuple(SecretEnv(name=e.name, secret=e.value_from.secret_key_ref.name,
                                   key=e.value_from.secret_key_ref.key) for e in s.env if e.value_from is not None),
        secret_volumes=tuple(SecretVolume(secret=v.secret, mount_path=v.mount_path, default_mode=v.default_mode,
                                          items=tuple(SecretFile(key=i.key, path=i.path, mode=i.mode)
                                                      for i in v.items)) for v in s.secret_volumes),
        secret_update=SecretUpdate(str(s.secret_update)),
    )


def replica_wire_bytes(w: Workload, spec_hash: str) -> int:
    """What one replica of `w` adds to its node's desired state once encoded (assuming the longest replica id;
    the sealed secrets come on top). Raises WireError when the wire cannot carry the spec at all."""
    return wire.encoded_size(replica_spec(w, "r" * ID_MAX_LEN, spec_hash))


def secret_names(w: Workload) -> frozenset[str]:
    """The secrets (of the workload's namespace) its replicas consume, in env or as files."""
    s = w.spec
    return frozenset({e.value_from.secret_key_ref.name for e in s.env if e.value_from is not None}
                     | {v.secret for v in s.secret_volumes})


def security(sc: SecurityContext) -> Security | None:
    """The sandbox for the wire; None when the spec asks for nothing beyond the runtime's defaults."""
    out = Security(
        run_as_user=sc.run_as_user,
        run_as_group=sc.run_as_group,
        run_as_non_root=sc.run_as_non_root,
        read_only_root_filesystem=sc.read_only_root_filesystem,
        privileged=sc.privileged,
        allow_privilege_escalation=sc.allow_privilege_escalation,
        capabilities_add=tuple(sc.capabilities.add),
        capabilities_drop=tuple(sc.capabilities.drop),
        seccomp=SeccompType(str(sc.seccomp_profile.profile_type)),
        seccomp_profile=sc.seccomp_profile.localhost_profile,
        host_network=sc.host_network,
        host_pid=sc.host_pid,
        host_ipc=sc.host_ipc,
    )
    return None if out == Security() else out


def rollout_params(w: Workload) -> RolloutParams:
    r, n = w.spec.rollout, w.spec.replicas
    surge = resolve(r.max_surge.value, r.max_surge.percent, n, round_up=True)
    unavailable = resolve(r.max_unavailable.value, r.max_unavailable.percent, n, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # as Kubernetes requires: otherwise no rollout could ever make progress
    minimum = (resolve(r.min_available.value, r.min_available.percent, n, round_up=True)
               if r.min_available is not None else None)
    return RolloutParams(desired=n, max_surge=surge, max_unavailable=unavailable, min_available=minimum,
                         recreate=r.strategy is RolloutStrategy.RECREATE,
                         progress_deadline_s=float(r.progress_deadline_seconds), auto_rollback=r.auto_rollback)


def node_view(info: NodeInfo, *, cordoned: bool, draining: bool, reserved_cpu: int, reserved_memory: int,
              max_workloads: int | None, extra_labels: Mapping[str, str], reliability: float,
              allocated_cpu: int, allocated_memory: int, replicas: int, workloads: Mapping[str, int],
              host_ports: frozenset[str], network_penalty: float, desired_bytes: int = 0) -> NodeView:
    status = info.status
    facts = status.facts if status is not None else None
    hb = info.heartbeat
    utilization = None
    if hb is not None and hb.memory_total_bytes and hb.memory_used_bytes is not None:
        utilization = max(0.0, min(1.0, hb.memory_used_bytes / hb.memory_total_bytes))
    return NodeView(
        node_id=info.node_id,
        abilities=node_abilities.of_facts(facts),
        arch=facts.arch if facts else "",
        os=facts.os if facts and facts.os else "linux",
        labels={**extra_labels, **(facts.labels if facts else {})},
        zone=facts.zone if facts else "",
        capacity_cpu_millis=(facts.cpu_count or 0) * 1000 if facts else 0,
        capacity_memory_bytes=(facts.memory_bytes or 0) if facts else 0,
        reserved_cpu_millis=reserved_cpu,
        reserved_memory_bytes=reserved_memory,
        allocated_cpu_millis=allocated_cpu,
        allocated_memory_bytes=allocated_memory,
        replicas=replicas,
        max_workloads=max_workloads,
        online=info.state is NodeState.ONLINE,
        cordoned=cordoned,
        draining=draining,
        schedulable=status.schedulable if status is not None else False,
        gates=status.gates if status is not None else (),
        reliability=reliability,
        network_penalty=network_penalty,
        utilization=utilization,
        workloads=dict(workloads),
        host_ports=host_ports,
        desired_bytes=desired_bytes,
    )
