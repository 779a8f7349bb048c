"""The indexed replica table (coordinator.replica_table): indexes and change sets kept on every set and delete."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.model import ReplicaPhase, ReplicaRecord
from coordinator.replica_table import ReplicaTable, workload_of


def rec(rid: str, *, node: str | None = "a", workload: str = "web", phase: ReplicaPhase | None = None,
        created_at: float = 0.0) -> ReplicaRecord:
    return ReplicaRecord(replica_id=rid, namespace="default", workload=workload, revision=1, spec_hash="h",
                         node=node, created_at=created_at,
                         phase=phase or (ReplicaPhase.PENDING if node is None else ReplicaPhase.ASSIGNED))


def test_indexes_follow_moves_and_deletes() -> None:
    t = ReplicaTable({"r2": rec("r2", node="a"), "r1": rec("r1", node="a"), "r3": rec("r3", node="b", workload="db")})
    assert [r.replica_id for r in t.on_node("a")] == ["r1", "r2"]  # replica-id order, not insertion order
    assert [r.replica_id for r in t.of_workload("default/web")] == ["r1", "r2"]
    t["r1"] = rec("r1", node="b")  # moved
    assert [r.replica_id for r in t.on_node("a")] == ["r2"]
    assert [r.replica_id for r in t.on_node("b")] == ["r1", "r3"]
    del t["r3"]
    assert [r.replica_id for r in t.on_node("b")] == ["r1"]
    assert t.of_workload("default/db") == ()
    assert t.on_node("nowhere") == () and t.count_on("b") == 1
    assert t.nodes() == {"a", "b"}


def test_pending_is_oldest_first_and_leaves_once_placed() -> None:
    t = ReplicaTable()
    t["p2"] = rec("p2", node=None, created_at=2.0)
    t["p1"] = rec("p1", node=None, created_at=1.0)
    t["s"] = rec("s", node=None, phase=ReplicaPhase.STOPPING)  # not waiting for a node
    assert [r.replica_id for r in t.pending()] == ["p1", "p2"] and t.has_pending()
    t["p1"] = rec("p1", node="a")
    t.pop("p2")
    assert t.pending() == [] and not t.has_pending()


def test_a_record_under_another_id_is_refused() -> None:
    with pytest.raises(ValueError, match="r2"):
        ReplicaTable()["r1"] = rec("r2")


def test_watchers_see_both_nodes_of_a_move_and_take_empties() -> None:
    t = ReplicaTable({"r1": rec("r1", node="a")})
    changes = t.watch()
    other = t.watch()
    t["r1"] = rec("r1", node="b")
    assert changes.take() == ({"a", "b"}, {"default/web"})
    assert changes.take() == (set(), set())
    del t["r1"]
    assert changes.take() == ({"b"}, {"default/web"})
    assert other.take() == ({"a", "b"}, {"default/web"})  # each watcher on its own


def test_replace_all_reports_only_what_differs() -> None:
    t = ReplicaTable({"r1": rec("r1", node="a"), "r2": rec("r2", node="b"), "r3": rec("r3", node="c")})
    changes = t.watch()
    t.replace_all({"r1": rec("r1", node="a"), "r2": rec("r2", node="d")})  # equal, moved, gone
    assert dict(t) == {"r1": rec("r1", node="a"), "r2": rec("r2", node="d")}
    assert changes.take()[0] == {"b", "c", "d"}


_ids = st.sampled_from([f"r{i}" for i in range(8)])
_ops = st.lists(st.one_of(
    st.tuples(st.just("set"), _ids, st.sampled_from([None, "a", "b", "c"]), st.sampled_from(["web", "db"]),
              st.sampled_from(list(ReplicaPhase))),
    st.tuples(st.just("del"), _ids)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_indexes_always_equal_a_recomputation(ops: list[tuple[object, ...]]) -> None:
    t = ReplicaTable()
    changes = t.watch()
    model: dict[str, ReplicaRecord] = {}
    for op in ops:
        before = dict(model)
        if op[0] == "set":
            _, rid, node, workload, phase = op
            r = rec(str(rid), node=node if isinstance(node, str) else None, workload=str(workload),
                    phase=ReplicaPhase(phase))
            t[r.replica_id] = r
            model[r.replica_id] = r
        elif op[1] in model:
            del t[str(op[1])]
            del model[str(op[1])]
        touched_nodes, touched_workloads = changes.take()
        for rid in set(before) | set(model):  # every record that differs is reported (both sides of a move)
            old, new = before.get(rid), model.get(rid)
            if old != new:
                for r in (old, new):
                    if r is not None:
                        assert workload_of(r) in touched_workloads
                        assert r.node is None or r.node in touched_nodes
        assert dict(t) == model and len(t) == len(model)
        for node in ("a", "b", "c"):
            assert t.on_node(node) == tuple(r for _, r in sorted(model.items()) if r.node == node)
            assert t.count_on(node) == len(t.on_node(node))
        for w in ("web", "db"):
            assert t.of_workload(f"default/{w}") == tuple(r for _, r in sorted(model.items()) if r.workload == w)
        assert t.pending() == sorted((r for r in model.values() if r.node is None and r.phase == ReplicaPhase.PENDING),
                                     key=lambda r: (r.created_at, r.replica_id))
        assert t.nodes() == {r.node for r in model.values() if r.node is not None}
