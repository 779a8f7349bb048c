"""Workload spec -> wire and scheduler values (coordinator/translate.py): replica_spec field by field,
rollout_params rounding, node_view capacity/allocation/utilization."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import wire
from broker.wire import (
    DesiredState,
    Heartbeat,
    NodeFacts,
    NodeStatus,
    PortMapping,
    Presence,
    Probe,
    ProbeKind,
    Protocol,
    ReplicaSpec,
    RestartPolicy,
    SeccompType,
    Security,
    VolumeMount,
)
from coordinator.lifecycle import RolloutParams, resolve
from coordinator.membership import NodeInfo, NodeState
from coordinator.spec import parse_workload
from coordinator.spec_kinds import IntOrPercent
from coordinator.translate import node_view, replica_spec, rollout_params
from tests.coordinator.documents import example, minimal

MI, GI = 2**20, 2**30


def spec_of(doc: dict[str, Any], rid: str = "web-1", spec_hash: str = "abc") -> ReplicaSpec:
    return replica_spec(parse_workload(doc), rid, spec_hash)


# ---- replica_spec -----------------------------------------------------------------------------------------------


def test_replica_spec_maps_every_field_of_the_full_example() -> None:
    assert spec_of(example()) == ReplicaSpec(
        replica_id="web-1",
        workload="web",
        namespace="shop",
        spec_hash="abc",
        image="ghcr.io/example/web:1.4.2",
        command=("/bin/web",),
        args=("--port", "8080"),
        env={"MODE": "production"},  # DB_PASSWORD comes from a secret (valueFrom): never on the wire
        cpu_millis=1000,  # limits, not requests
        memory_bytes=256 * MI,
        ports=(PortMapping(container_port=8080, host_port=80, protocol=Protocol.TCP),),
        volumes=(VolumeMount(name="cache", mount_path="/var/cache/web", medium="Memory", size_limit_bytes=64 * MI),
                 VolumeMount(name="scratch", mount_path="/scratch", medium="", size_limit_bytes=None)),
        restart_policy=RestartPolicy.ON_FAILURE,
        liveness=Probe(ProbeKind.HTTP, path="/healthz", port=8080, period_s=5.0, failure_threshold=4),
        readiness=Probe(ProbeKind.EXEC, command=("/bin/check",), initial_delay_s=2.5),
        labels={"app": "web", "tier": "frontend"},
        security=Security(run_as_user=1000, run_as_group=1000, run_as_non_root=True, read_only_root_filesystem=True,
                          allow_privilege_escalation=False, capabilities_add=("NET_BIND_SERVICE",),
                          capabilities_drop=("ALL",), seccomp=SeccompType.LOCALHOST,
                          seccomp_profile="profiles/web.json"),
        secret_env=(wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),),  # the reference, never a value
    )


def test_secret_volumes_and_update_policy_reach_the_wire() -> None:
    doc = minimal(env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}])
    doc["spec"]["secretVolumes"] = [
        {"secret": "tls", "mountPath": "/etc/tls", "items": [{"key": "tls.key", "path": "private/server.key",
                                                             "mode": 0o440}]},
        {"secret": "api", "mountPath": "/run/api", "defaultMode": 0o444}]
    doc["spec"]["secretUpdate"] = "files"
    spec = spec_of(doc)
    assert spec.secret_env == (wire.SecretEnv(name="TOKEN", secret="api", key="token"),)
    assert spec.secret_volumes == (
        wire.SecretVolume(secret="tls", mount_path="/etc/tls", default_mode=0o400,
                          items=(wire.SecretFile(key="tls.key", path="private/server.key", mode=0o440),)),
        wire.SecretVolume(secret="api", mount_path="/run/api", default_mode=0o444))
    assert spec.secret_update is wire.SecretUpdate.FILES and spec.secrets == ()  # sealed per node, later


@pytest.mark.parametrize(("change", "where"), [
    ({"secretVolumes": [{"secret": "x", "mountPath": "/a", "items": [{"key": "k", "path": "../etc/passwd"}]}]},
     "spec.secretVolumes[0].items[0].path"),
    ({"secretVolumes": [{"secret": "x", "mountPath": "relative"}]}, "spec.secretVolumes[0].mountPath"),
    ({"secretVolumes": [{"secret": "x", "mountPath": "/a", "defaultMode": 0o1777}]},
     "spec.secretVolumes[0].defaultMode"),
    ({"secretVolumes": [{"secret": "x", "mountPath": "/a", "items": [{"key": "k", "path": "p"},
                                                                     {"key": "j", "path": "p"}]}]},
     "spec.secretVolumes[0].items[1].path"),
    ({"secretUpdate": "sometimes"}, "spec.secretUpdate"),
    ({"secretVolumes": [{"secret": "x", "mountPath": "/a", "items": [{"key": "k", "path": "p"},
                                                                     {"key": "j", "path": "p/q"}]}]},
     "spec.secretVolumes[0].items[0].path"),
    ({"env": [{"name": "FOO.BAR", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "spec.env[0].name"),
])
def test_bad_secret_volumes_are_refused_naming_the_field(change: dict[str, Any], where: str) -> None:
    from coordinator.errors import SpecError

    doc = minimal()
    doc["spec"].update(change)
    with pytest.raises(SpecError) as exc:
        parse_workload(doc)
    assert where in {e["path"] for e in exc.value.to_json()["errors"]}, exc.value.to_json()


def test_replica_spec_survives_the_strict_codec() -> None:
    spec = spec_of(example())
    msg = DesiredState(node_id="pi-1", generation=1, epoch=1, issued_at=1.0, replicas=(spec,))
    assert wire.decode(wire.encode(msg)) == msg


@pytest.mark.parametrize(("doc", "field", "value"), [
    pytest.param(minimal(), "namespace", "default", id="default-namespace"),
    pytest.param(minimal(), "env", {}, id="no-env"),
    pytest.param(minimal(env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]), "env", {},
                 id="env-valueFrom-only"),
    pytest.param(minimal(env=[{"name": "A", "value": "1"}, {"name": "B", "value": ""}]), "env", {"A": "1", "B": ""},
                 id="env-values"),
    pytest.param(minimal(), "cpu_millis", 0, id="no-limits-cpu-0"),
    pytest.param(minimal(), "memory_bytes", 0, id="no-limits-memory-0"),
    pytest.param(minimal(resources={"requests": {"cpu": "2", "memory": "1Gi"}}), "cpu_millis", 0,
                 id="requests-are-not-limits"),
    pytest.param(minimal(resources={"limits": {"cpu": "500m"}}), "cpu_millis", 500, id="limit-cpu-millis"),
    pytest.param(minimal(resources={"limits": {"cpu": "500m"}}), "memory_bytes", 0, id="limit-cpu-only"),
    pytest.param(minimal(resources={"limits": {"memory": "1Gi"}}), "memory_bytes", GI, id="limit-memory"),
    pytest.param(minimal(ports=[{"containerPort": 53, "protocol": "UDP"}]), "ports",
                 (PortMapping(container_port=53, host_port=0, protocol=Protocol.UDP),), id="udp-port-no-host-port"),
    pytest.param(minimal(volumes=[{"name": "t", "mountPath": "/t", "emptyDir": {"medium": "Memory"}}]), "volumes",
                 (VolumeMount(name="t", mount_path="/t", medium="Memory", size_limit_bytes=None),),
                 id="memory-volume-without-limit"),
    pytest.param(minimal(volumes=[{"name": "d", "mountPath": "/d", "emptyDir": {"sizeLimit": "1Gi"}}]), "volumes",
                 (VolumeMount(name="d", mount_path="/d", medium="", size_limit_bytes=GI),), id="disk-volume-limit"),
    pytest.param(minimal(), "liveness", None, id="no-liveness"),
    pytest.param(minimal(), "readiness", None, id="no-readiness"),
    pytest.param(minimal(readinessProbe={"tcpSocket": {"port": 9000}, "timeoutSeconds": 2}), "readiness",
                 Probe(ProbeKind.TCP, port=9000, timeout_s=2.0), id="tcp-readiness"),
    pytest.param(minimal(), "labels", {}, id="no-labels"),
    pytest.param(minimal(), "restart_policy", RestartPolicy.ALWAYS, id="default-restart-policy"),
    pytest.param(minimal(restartPolicy="Never"), "restart_policy", RestartPolicy.NEVER, id="restart-never"),
    pytest.param(minimal(), "security", None, id="default-security-is-none"),
    pytest.param(minimal(securityContext={"runAsNonRoot": True}), "security", Security(run_as_non_root=True),
                 id="non-root-only"),
])
def test_replica_spec_field(doc: dict[str, Any], field: str, value: object) -> None:
    assert getattr(spec_of(doc), field) == value


def test_replica_spec_labels_are_a_copy() -> None:
    w = parse_workload(example())
    spec = replica_spec(w, "web-1", "abc")
    spec.labels["extra"] = "x"
    assert "extra" not in w.metadata.labels


# ---- rollout_params ---------------------------------------------------------------------------------------------


def params_of(replicas: int, **rollout: object) -> RolloutParams:
    return rollout_params(parse_workload(minimal(replicas=replicas, rollout=rollout)))


@pytest.mark.parametrize(("replicas", "rollout", "surge", "unavailable", "min_available", "floor"), [
    pytest.param(3, {}, 1, 0, None, 3, id="defaults-25%-of-3"),
    pytest.param(4, {}, 1, 1, None, 3, id="defaults-25%-of-4"),
    pytest.param(10, {}, 3, 2, None, 8, id="defaults-25%-of-10-surge-up-unavailable-down"),
    pytest.param(1, {}, 1, 0, None, 1, id="defaults-25%-of-1"),
    pytest.param(0, {}, 0, 1, None, 0, id="zero-replicas-0/0-becomes-unavailable-1"),
    pytest.param(3, {"maxSurge": 0, "maxUnavailable": "25%"}, 0, 1, None, 2, id="percent-rounds-to-0/0-then-1"),
    pytest.param(3, {"maxSurge": 2, "maxUnavailable": 1}, 2, 1, None, 2, id="counts"),
    pytest.param(3, {"maxSurge": "100%", "maxUnavailable": 0}, 3, 0, None, 3, id="surge-100%"),
    pytest.param(3, {"maxSurge": "1%"}, 1, 0, None, 3, id="surge-1%-rounds-up"),
    pytest.param(3, {"maxUnavailable": "99%"}, 1, 2, None, 1, id="unavailable-99%-rounds-down"),
    pytest.param(3, {"maxUnavailable": 5}, 1, 5, None, 0, id="unavailable-beyond-desired-floor-0"),
    pytest.param(3, {"minAvailable": "50%"}, 1, 0, 2, 2, id="minAvailable-50%-of-3-rounds-up"),
    pytest.param(3, {"minAvailable": 5}, 1, 0, 5, 3, id="minAvailable-beyond-desired-clamps"),
    pytest.param(3, {"minAvailable": 0, "maxUnavailable": 0}, 1, 0, 0, 0, id="minAvailable-0-overrides"),
])
def test_rollout_params(replicas: int, rollout: dict[str, object], surge: int, unavailable: int,
                        min_available: int | None, floor: int) -> None:
    p = params_of(replicas, **rollout)
    assert (p.desired, p.max_surge, p.max_unavailable, p.min_available, p.floor) == (
        replicas, surge, unavailable, min_available, floor)


@pytest.mark.parametrize(("rollout", "recreate", "deadline", "auto"), [
    pytest.param({}, False, 600.0, True, id="defaults"),
    pytest.param({"strategy": "Recreate"}, True, 600.0, True, id="recreate"),
    pytest.param({"progressDeadlineSeconds": 30, "autoRollback": False}, False, 30.0, False, id="deadline-no-auto"),
])
def test_rollout_strategy_deadline_and_auto_rollback(rollout: dict[str, object], recreate: bool, deadline: float,
                                                     auto: bool) -> None:
    p = params_of(3, **rollout)
    assert (p.recreate, p.progress_deadline_s, p.auto_rollback) == (recreate, deadline, auto)
    assert isinstance(p.progress_deadline_s, float)


@given(st.integers(0, 100), st.integers(0, 1000), st.booleans())
def test_resolve_matches_exact_integer_rounding(value: int, desired: int, round_up: bool) -> None:
    assert resolve(value, True, desired, round_up=round_up) == IntOrPercent(value, percent=True).resolve(
        desired, round_up=round_up)
    assert resolve(value, False, desired, round_up=round_up) == value


amounts = st.integers(0, 5) | st.integers(0, 100).map(lambda n: f"{n}%")


@given(st.integers(0, 50), amounts, amounts, st.none() | amounts)
def test_rollout_params_always_let_a_rollout_move(replicas: int, surge: object, unavailable: object,
                                                  minimum: object) -> None:
    rollout: dict[str, object] = {"maxSurge": surge, "maxUnavailable": unavailable}
    if minimum is not None:
        rollout["minAvailable"] = minimum
    if str(surge).rstrip("%") == "0" and str(unavailable).rstrip("%") == "0":
        return  # rejected by the spec (test_spec covers it)
    p = params_of(replicas, **rollout)
    assert p.max_surge > 0 or p.max_unavailable > 0
    assert 0 <= p.floor <= replicas
    if minimum is None:
        assert p.floor == max(0, replicas - p.max_unavailable)


# ---- node_view --------------------------------------------------------------------------------------------------

FACTS = NodeFacts(arch="aarch64", os="linux", cpu_count=4, memory_bytes=4 * GI, zone="home", profile="pi4",
                  labels={"disk": "ssd", "class": "pi"})


def make_info(*, state: NodeState = NodeState.ONLINE, facts: NodeFacts | None = FACTS, schedulable: bool = True,
              gates: tuple[str, ...] = (), used: int | None = GI, total: int | None = 4 * GI,
              heartbeat: bool = True) -> NodeInfo:
    status = None if facts is None else NodeStatus(node_id="pi-1", presence=Presence.ONLINE, ts=1.0, facts=facts,
                                                   schedulable=schedulable, gates=gates)
    hb = Heartbeat(node_id="pi-1", seq=1, ts=1.0, memory_used_bytes=used, memory_total_bytes=total) if heartbeat \
        else None
    return NodeInfo(node_id="pi-1", state=state, status=status, heartbeat=hb)


def view_of(info: NodeInfo, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "cordoned": False, "draining": False, "reserved_cpu": 500, "reserved_memory": 256 * MI,
        "max_workloads": 8, "extra_labels": {"class": "edge", "cloudless.io/profile": "pi4"}, "reliability": 0.75,
        "allocated_cpu": 1200, "allocated_memory": GI, "replicas": 3, "workloads": {"default/web": 2, "a/b": 1},
        "host_ports": frozenset({"80/TCP"}), "network_penalty": 0.5}
    return node_view(info, **{**kwargs, **overrides})


def test_node_view_maps_every_field() -> None:
    workloads = {"default/web": 2, "a/b": 1}
    v = view_of(make_info(schedulable=False, gates=("thermal: 81C",)), cordoned=True, draining=True,
                workloads=workloads)
    assert (v.node_id, v.arch, v.os, v.zone) == ("pi-1", "aarch64", "linux", "home")
    assert v.labels == {"class": "pi", "cloudless.io/profile": "pi4", "disk": "ssd"}  # the node's own facts win
    assert (v.capacity_cpu_millis, v.capacity_memory_bytes) == (4000, 4 * GI)
    assert (v.reserved_cpu_millis, v.reserved_memory_bytes) == (500, 256 * MI)
    assert (v.allocated_cpu_millis, v.allocated_memory_bytes, v.replicas) == (1200, GI, 3)
    assert (v.allocatable_cpu_millis, v.allocatable_memory_bytes) == (3500, 4 * GI - 256 * MI)
    assert (v.online, v.cordoned, v.draining, v.schedulable, v.gates) == (True, True, True, False, ("thermal: 81C",))
    assert (v.max_workloads, v.reliability, v.network_penalty, v.utilization) == (8, 0.75, 0.5, 0.25)
    assert v.workloads == workloads and v.workloads is not workloads
    assert v.host_ports == frozenset({"80/TCP"})


@pytest.mark.parametrize(("info", "utilization"), [
    pytest.param(make_info(used=GI, total=4 * GI), 0.25, id="quarter"),
    pytest.param(make_info(used=0, total=4 * GI), 0.0, id="idle"),
    pytest.param(make_info(used=5 * GI, total=4 * GI), 1.0, id="clamped-to-1"),
    pytest.param(make_info(used=None, total=4 * GI), None, id="used-unknown"),
    pytest.param(make_info(used=GI, total=None), None, id="total-unknown"),
    pytest.param(make_info(used=GI, total=0), None, id="total-zero"),
    pytest.param(make_info(heartbeat=False), None, id="no-heartbeat"),
])
def test_node_view_utilization(info: NodeInfo, utilization: float | None) -> None:
    assert view_of(info).utilization == utilization


@pytest.mark.parametrize(("state", "online"), [
    pytest.param(NodeState.ONLINE, True, id="online"),
    pytest.param(NodeState.SUSPECT, False, id="suspect"),
    pytest.param(NodeState.OFFLINE, False, id="offline"),
    pytest.param(NodeState.LOST, False, id="lost"),
])
def test_node_view_online_only_when_online(state: NodeState, online: bool) -> None:
    assert view_of(make_info(state=state)).online is online


@pytest.mark.parametrize(("facts", "arch", "os", "cpu", "memory"), [
    pytest.param(NodeFacts(), "", "linux", 0, 0, id="empty-facts"),
    pytest.param(NodeFacts(os="android", cpu_count=8), "", "android", 8000, 0, id="cpu-only"),
    pytest.param(NodeFacts(memory_bytes=GI), "", "linux", 0, GI, id="memory-only"),
])
def test_node_view_capacity_from_facts(facts: NodeFacts, arch: str, os: str, cpu: int, memory: int) -> None:
    v = view_of(make_info(facts=facts))
    assert (v.arch, v.os, v.capacity_cpu_millis, v.capacity_memory_bytes) == (arch, os, cpu, memory)


def test_node_view_without_a_status_is_unschedulable_and_empty() -> None:
    v = view_of(make_info(facts=None))
    assert (v.arch, v.os, v.zone, v.capacity_cpu_millis, v.capacity_memory_bytes) == ("", "linux", "", 0, 0)
    assert (v.schedulable, v.gates) == (False, ())
    assert v.labels == {"class": "edge", "cloudless.io/profile": "pi4"}
