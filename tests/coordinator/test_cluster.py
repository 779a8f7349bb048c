"""The cluster view (coordinator.cluster): the LOST rules, the spec cache, snapshots, desired state, secret wants."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker.wire import (
    NodeFacts,
    NodeStatus,
    ObservedState,
    Presence,
    ReplicaObserved,
    ReplicaState,
    SealedSecret,
)
from coordinator.cluster import Cluster, Reservations, SpecCache
from coordinator.membership import MembershipConfig, NodeInfo, NodeState
from coordinator.model import NodeAdmin, ReplicaPhase, ReplicaRecord, WorkloadRecord
from coordinator.spec import parse_workload, spec_hash, workload_to_doc

NOW = 1000.0


def make_doc(name: str = "web", *, replicas: int = 1, image: str = "img:1", **spec: Any) -> dict[str, Any]:
    doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name, "namespace": "default"},
           "spec": {"image": image, "replicas": replicas, **spec}}
    return workload_to_doc(parse_workload(doc))


def make_workload(name: str = "web", *, history: tuple[dict[str, Any], ...] = (), **kw: Any) -> WorkloadRecord:
    doc = make_doc(name, **kw)
    h = spec_hash(parse_workload(doc))
    return WorkloadRecord(namespace="default", name=name, doc=doc, spec_hash=h, revision=1, generation=1,
                          created_at=0.0, history=history or ({"revision": 1, "spec_hash": h, "doc": doc},))


def make_replica(rid: str, w: WorkloadRecord, *, node: str | None = "a", spec_hash: str | None = None,
                 phase: ReplicaPhase | None = None) -> ReplicaRecord:
    return ReplicaRecord(replica_id=rid, namespace=w.namespace, workload=w.name, revision=w.revision,
                         spec_hash=spec_hash or w.spec_hash, node=node,
                         phase=phase or (ReplicaPhase.PENDING if node is None else ReplicaPhase.ASSIGNED))


def make_member(node_id: str = "a", *, state: NodeState = NodeState.ONLINE, profile: str = "",
                cpus: int = 4) -> NodeInfo:
    facts = NodeFacts(arch="x86_64", cpu_count=cpus, memory_bytes=8 << 30, profile=profile)
    status = NodeStatus(node_id=node_id, presence=Presence.ONLINE, ts=NOW, facts=facts)
    return NodeInfo(node_id=node_id, state=state, status=status, state_since=NOW - 100)


def make_cluster(*workloads: WorkloadRecord, replicas: tuple[ReplicaRecord, ...] = (),
                 members: tuple[NodeInfo, ...] = (), revoked: set[str] | None = None) -> Cluster:
    return Cluster(workloads={w.key: w for w in workloads}, replicas={r.replica_id: r for r in replicas},
                   members={m.node_id: m for m in members}, revoked_nodes=revoked or set())


@pytest.mark.parametrize(("node", "member", "revoked", "heard_for", "expected"), [
    pytest.param(None, None, False, 100.0, None, id="no-node"),
    pytest.param("a", NodeState.ONLINE, False, 100.0, NodeState.ONLINE, id="known-online"),
    pytest.param("a", NodeState.OFFLINE, False, 100.0, NodeState.OFFLINE, id="known-offline"),
    pytest.param("a", NodeState.ONLINE, True, 0.0, NodeState.LOST, id="revoked-online-is-lost"),
    pytest.param("a", None, True, 0.0, NodeState.LOST, id="revoked-unknown-is-lost"),
    pytest.param("a", None, False, 29.0, None, id="unknown-within-grace"),
    pytest.param("a", None, False, 30.0, None, id="unknown-at-grace"),
    pytest.param("a", None, False, 31.0, NodeState.LOST, id="unknown-past-grace-is-lost"),
])
def test_node_state_as_the_lifecycle_core_sees_it(node: str | None, member: NodeState | None, revoked: bool,
                                                 heard_for: float, expected: NodeState | None) -> None:
    cluster = make_cluster(members=(make_member("a", state=member),) if member else (),
                           revoked={"a"} if revoked else set())
    assert cluster.node_state(node, heard_for_s=heard_for, lost_after_s=30.0) is expected


def test_replica_views_join_node_state_draining_and_observation() -> None:
    w = make_workload()
    other = make_workload("other")
    cluster = make_cluster(w, other, replicas=(make_replica("r1", w), make_replica("r2", w, node=None),
                                               make_replica("o1", other)), members=(make_member("a"),))
    cluster.admin["a"] = NodeAdmin(cordoned=True, draining=True)
    views = {v.record.replica_id: v for v in cluster.replica_views(w, heard_for_s=0.0, lost_after_s=30.0)}
    assert set(views) == {"r1", "r2"}
    assert views["r1"].node_state is NodeState.ONLINE and views["r1"].node_draining
    assert views["r2"].node_state is None and not views["r2"].node_draining
    assert views["r1"].observed is None


@pytest.mark.parametrize("heard_for", [0.0, 31.0])
def test_replica_views_agree_with_node_state_admin_and_observed_of_for_every_replica(heard_for: float) -> None:
    """replica_views inlines node_state and observed_of (it runs for every replica of a 2,500-replica workload in
    one step of the loop): each view says what they say, for every kind of node a replica can be on."""
    w = make_workload()
    on = {"r-a1": "a", "r-a2": "a", "r-b": "b", "r-gone": "revoked", "r-unknown": "stranger", "r-pending": None,
          "r-offline": "c", "r-unseen": "a"}
    replicas = tuple(make_replica(rid, w, node=node) for rid, node in on.items())
    seen = {"r-a1": ReplicaState.RUNNING, "r-a2": ReplicaState.FAILED}
    observed = ObservedState(node_id="a", generation=1, epoch=1, ts=NOW, replicas=tuple(
        ReplicaObserved(replica_id=rid, workload=w.name, state=state, spec_hash=w.spec_hash, ready=True)
        for rid, state in seen.items()))
    members = (replace(make_member("a"), observed=observed), make_member("b"),
               make_member("c", state=NodeState.OFFLINE), make_member("revoked"))
    cluster = make_cluster(w, replicas=replicas, members=members, revoked={"revoked"})
    cluster.admin["a"] = NodeAdmin(draining=True)
    cluster.admin["b"] = NodeAdmin(cordoned=True)
    views = {v.record.replica_id: v for v in cluster.replica_views(w, heard_for_s=heard_for, lost_after_s=30.0)}
    assert set(views) == set(on)
    for rid, node in on.items():
        v, r = views[rid], cluster.replicas[rid]
        assert v.record is r
        assert v.node_state is cluster.node_state(node, heard_for_s=heard_for, lost_after_s=30.0)
        assert v.node_draining is (node == "a")
        assert v.observed is cluster.observed_of(r)
    assert views["r-a1"].observed is observed.replicas[0] and views["r-a2"].observed is observed.replicas[1]
    assert views["r-a1"].ready and not views["r-a2"].ready and views["r-unseen"].observed is None
    assert views["r-gone"].node_state is NodeState.LOST and views["r-offline"].node_state is NodeState.OFFLINE
    assert views["r-unknown"].node_state is (NodeState.LOST if heard_for > 30.0 else None)


def test_spec_cache_parses_a_document_once_and_sees_a_changed_one_under_the_same_hash() -> None:
    cache = SpecCache()
    one, three = make_doc(replicas=1), make_doc(replicas=3)
    h = spec_hash(parse_workload(one))
    assert spec_hash(parse_workload(three)) == h  # the replica count is not part of the spec hash
    first = cache.get("default/web", h, one)
    assert cache.get("default/web", h, one) is first
    assert cache.get("default/web", h, dict(one)) is first  # an equal document (re-read from the store)
    scaled = cache.get("default/web", h, three)
    assert scaled.spec.replicas == 3 and first.spec.replicas == 1
    assert len(cache) == 1


def test_spec_cache_starts_over_past_its_limit() -> None:
    cache = SpecCache(limit=2)
    for i in range(3):
        doc = make_doc(f"w{i}")
        cache.get(f"default/w{i}", "h", doc)
    assert len(cache) == 1


@pytest.mark.parametrize(("replica_hash", "image"), [
    pytest.param("current", "img:2", id="current-spec"),
    pytest.param("old", "img:1", id="history-entry"),
    pytest.param("unknown", None, id="not-in-history"),
])
def test_spec_of_a_replica_is_the_document_it_was_created_from(replica_hash: str, image: str | None) -> None:
    old = make_workload(image="img:1", replicas=2)
    new_doc = make_doc(image="img:2", replicas=2)
    new_hash = spec_hash(parse_workload(new_doc))
    history = (*old.history, {"revision": 2, "spec_hash": new_hash, "doc": new_doc})
    w = WorkloadRecord(namespace="default", name="web", doc=new_doc, spec_hash=new_hash, revision=2, generation=2,
                       created_at=0.0, history=history)
    hashes = {"current": new_hash, "old": old.spec_hash, "unknown": "nope"}
    cluster = make_cluster(w, replicas=(make_replica("r1", w, spec_hash=hashes[replica_hash]),))
    parsed = cluster.spec_of(cluster.replicas["r1"])
    assert (parsed.spec.image if parsed else None) == image


def test_snapshot_counts_allocations_ports_and_reservations() -> None:
    w = make_workload(resources={"requests": {"cpu": "500m", "memory": "64Mi"}},
                      ports=[{"containerPort": 80, "hostPort": 8080}])
    cluster = make_cluster(w, replicas=(make_replica("r1", w), make_replica("r2", w, node=None)),
                           members=(make_member("a", profile="pi"), make_member("b")))
    assert cluster.profile_names() == {"pi", ""}
    reservations = {"pi": Reservations(reserved_cpu=250, reserved_memory=1 << 20, max_workloads=3,
                                       labels={"class": "pi"}, metered=True)}
    snap = cluster.snapshot(NOW, reservations=reservations, membership=MembershipConfig(), revision=7)
    a, b = snap.nodes
    assert snap.revision == 7
    assert (a.node_id, a.allocated_cpu_millis, a.allocated_memory_bytes, a.replicas) == ("a", 500, 64 << 20, 1)
    assert a.host_ports == frozenset({"8080/TCP"}) and a.workloads == {"default/web": 1}
    assert (a.reserved_cpu_millis, a.max_workloads, a.labels["class"], a.network_penalty) == (250, 3, "pi", 0.5)
    assert (b.node_id, b.replicas, b.reserved_cpu_millis, b.network_penalty) == ("b", 0, 0, 0.0)


def test_pending_is_oldest_first() -> None:
    w = make_workload()
    late = ReplicaRecord("r-late", "default", "web", 1, w.spec_hash, created_at=5.0)
    early = ReplicaRecord("r-early", "default", "web", 1, w.spec_hash, created_at=1.0)
    cluster = make_cluster(w, replicas=(late, early, make_replica("r-placed", w)))
    assert [r.replica_id for r in cluster.pending()] == ["r-early", "r-late"]


def test_desired_state_lists_assigned_replicas_with_their_sealed_secrets() -> None:
    w = make_workload(env=[{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}])
    plain = make_workload("plain")
    cluster = make_cluster(w, plain, replicas=(
        make_replica("r2", w), make_replica("r1", plain), make_replica("r3", w, phase=ReplicaPhase.STOPPING),
        make_replica("r4", w, node="b")))
    box = SealedSecret(secret="db", version=1, box=b"x")
    calls: list[tuple[str, str, tuple[str, ...]]] = []

    def sealed(node: str, ns: str, names: Any) -> tuple[SealedSecret, ...]:
        calls.append((node, ns, tuple(sorted(names))))
        return (box,)

    specs = cluster.desired_for("a", sealed)
    assert [s.replica_id for s in specs] == ["r1", "r2"]
    assert specs[0].secrets == () and specs[1].secrets == (box,)
    assert calls == [("a", "default", ("db",))]
    assert cluster.desired_for("a")[1].secrets == ()
    assert cluster.secret_wants() == {("a", "default", "db"), ("b", "default", "db")}
