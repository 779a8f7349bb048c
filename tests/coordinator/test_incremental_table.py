"""Review 2 L2: the replica table's sorted-bucket cache keeps only keys that hold replicas; lookups of any other
key (deleted nodes, made-up workload names from REST) leave nothing behind."""

from __future__ import annotations

from coordinator.model import ReplicaPhase, ReplicaRecord
from coordinator.replica_table import ReplicaTable


def rec(rid: str, *, node: str) -> ReplicaRecord:
    return ReplicaRecord(replica_id=rid, namespace="default", workload="web", revision=1, spec_hash="h", node=node,
                         created_at=0.0, phase=ReplicaPhase.ASSIGNED)


def test_lookups_of_keys_without_replicas_are_not_cached() -> None:
    t = ReplicaTable({"r1": rec("r1", node="a")})
    for i in range(1000):
        assert t.on_node(f"gone-{i}") == () and t.of_workload(f"default/nope-{i}") == ()
    assert [r.replica_id for r in t.on_node("a")] == ["r1"]
    assert set(t._sorted) <= {("n", "a"), ("w", "default/web")}
    del t["r1"]
    assert t.on_node("a") == () and t.of_workload("default/web") == ()
    assert t._sorted == {}
