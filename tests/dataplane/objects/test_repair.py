"""The repair planner: back to R from good copies, never the last good copy deleted, surplus collected only with R
good copies elsewhere, reliable sources preferred, bounded by a byte budget, resumable (planned from state)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.objects.chunking import chunk_id
from dataplane.objects.model import ChunkRecord, StorageNode
from dataplane.objects.repair import ChunkState, Copy, Delete, plan_repair, unreferenced

GiB = 1 << 30


def node(name: str, zone: str = "", *, online: bool = True, reliability: float = 1.0, quota: int = GiB,
         used: int = 0) -> StorageNode:
    return StorageNode(name, zone, quota=quota, used=used, reliability=reliability, online=online)


def state(cid: str, holders: set[str], *, bad: frozenset[str] = frozenset(), r: int = 2, size: int = 10
          ) -> ChunkState:
    return ChunkState(ChunkRecord(cid, size, frozenset(holders), bad), r)


C = chunk_id(b"c")


def test_a_lost_holder_is_replaced_from_the_survivor() -> None:
    nodes = [node("a"), node("b", online=False), node("c")]
    plan = plan_repair({C: state(C, {"a", "b"})}, nodes, 0.0)
    assert plan.copies == (Copy(C, 10, "a", "c"),) and plan.deletes == () and plan.under_replicated == 1


def test_the_most_reliable_holder_is_the_source() -> None:
    nodes = [node("flaky", reliability=0.2), node("solid", reliability=0.99), node("t1"), node("t2")]
    plan = plan_repair({C: state(C, {"flaky", "solid"}, r=3)}, nodes, 0.0)
    assert [c.source for c in plan.copies] == ["solid"]


def test_no_good_copy_is_unrecoverable_and_nothing_is_deleted() -> None:
    nodes = [node("a", online=False), node("b"), node("c")]
    plan = plan_repair({C: state(C, {"a", "b"}, bad=frozenset({"b"}))}, nodes, 0.0)
    assert plan.unrecoverable == (C,) and plan.copies == ()
    assert plan.deletes == (Delete(C, "b", corrupt=True),)  # the corrupt copy is not a good one


def test_surplus_is_collected_from_the_least_reliable_but_r_good_copies_stay() -> None:
    nodes = [node("a"), node("b", reliability=0.5), node("c")]
    plan = plan_repair({C: state(C, {"a", "b", "c"})}, nodes, 0.0)
    assert plan.deletes == (Delete(C, "b", keep=2),) and plan.copies == ()


def test_a_corrupt_copy_does_not_count_toward_r() -> None:
    nodes = [node("a"), node("b"), node("c")]
    plan = plan_repair({C: state(C, {"a", "b"}, bad=frozenset({"b"}))}, nodes, 0.0)
    assert plan.copies == (Copy(C, 10, "a", "c"),)  # not back onto b, which still has the bad copy
    assert plan.deletes == (Delete(C, "b", corrupt=True),)


def test_the_budget_defers_what_does_not_fit_and_the_next_plan_resumes() -> None:
    nodes = [node("a"), node("b", online=False), node("c")]
    ids = [chunk_id(bytes([i])) for i in range(5)]
    chunks = {i: state(i, {"a", "b"}) for i in ids}
    plan = plan_repair(chunks, nodes, 0.0, budget=25)
    assert len(plan.copies) == 2 and len(plan.deferred) == 3
    done = {c.chunk_id for c in plan.copies}  # apply the plan: the copies become holders
    resumed = {i: state(i, {"a", "b", "c"} if i in done else {"a", "b"}) for i in ids}
    second = plan_repair(resumed, nodes, 1.0)
    assert {c.chunk_id for c in second.copies} == set(ids) - done


def test_no_room_anywhere_is_reported_not_planned() -> None:
    nodes = [node("a"), node("b", online=False), node("c", quota=5)]
    plan = plan_repair({C: state(C, {"a", "b"})}, nodes, 0.0)
    assert plan.copies == () and [cid for cid, _ in plan.unplaceable] == [C]


def test_unreferenced_spares_referenced_and_recently_touched_chunks() -> None:
    records = [ChunkRecord("old", 1, touched=0.0), ChunkRecord("kept", 1, touched=0.0),
               ChunkRecord("fresh", 1, touched=900.0)]
    assert unreferenced(records, {"kept"}, now=1000.0, grace=500.0) == ["old"]


node_names = [f"n{i}" for i in range(6)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.frozensets(st.sampled_from(node_names), max_size=6),
                          st.frozensets(st.sampled_from(node_names), max_size=3), st.integers(1, 3)), max_size=8),
       st.lists(st.booleans(), min_size=6, max_size=6), st.sampled_from([None, 0, 15, 1000]))
def test_repair_invariants(specs: list[tuple[frozenset[str], frozenset[str], int]], online: list[bool],
                           budget: int | None) -> None:
    nodes = [node(n, f"z{i % 2}", online=o) for i, (n, o) in enumerate(zip(node_names, online, strict=True))]
    up = {n.node_id for n in nodes if n.online}
    chunks = {chunk_id(bytes([i])): state(chunk_id(bytes([i])), set(h), bad=b & h, r=r)
              for i, (h, b, r) in enumerate(specs)}
    plan = plan_repair(chunks, nodes, 0.0, budget=budget)
    for cid, st_ in chunks.items():
        good = (st_.record.holders - st_.record.bad) & up
        plain = {d.node for d in plan.deletes if d.chunk_id == cid and not d.corrupt}
        copies = [c for c in plan.copies if c.chunk_id == cid]
        assert plain <= good and len(good - plain) >= min(len(good), st_.replicas)  # never below R, never the last
        assert not (plain and copies)
        for c in copies:
            assert c.source in good and c.target in up and c.target not in st_.record.holders
        assert len({c.target for c in copies}) == len(copies)
        if good and budget is None and len(up - st_.record.holders) >= st_.replicas - len(good):
            assert len(good) + len(copies) >= st_.replicas  # enough nodes: back to R
        if not good:
            assert cid in plan.unrecoverable and not copies
    if budget is not None:
        assert sum(c.size for c in plan.copies) <= budget
