"""The kept key orders of the REST lists (coordinator.list_index, issue 17): they equal a fresh sort of what the
tables hold after any changes (so a page never has to sort), and walking them from a cursor gives exactly the keys
after it, filtered as asked, with the count of what follows."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.list_index import ReplicaOrder, SortedKeys, from_cursor, split_key
from coordinator.model import ReplicaRecord
from coordinator.replica_table import ReplicaTable

NAMESPACES = ("a", "a-b", "b")
WORKLOADS = ("x", "x.y", "web")


def _rec(rid: int, ns: str, wl: str) -> ReplicaRecord:
    return ReplicaRecord(replica_id=f"r{rid:03}", namespace=ns, workload=wl, revision=1, spec_hash="h",
                         node=f"n{rid % 4}")


def _key(r: ReplicaRecord) -> tuple[str, str, str]:
    return r.namespace, r.workload, r.replica_id


def test_sorted_keys_rebuilds_when_a_key_came_and_another_went_at_the_same_size() -> None:
    keys: SortedKeys[str, tuple[str, str]] = SortedKeys(split_key)
    table = {"a-b/y": 1, "a/x": 2}
    first = keys.of(table)
    assert first == [("a", "x"), ("a-b", "y")], "tuple order: ('a', ...) before ('a-b', ...), unlike 'a-b/y' < 'a/x'"
    assert keys.of(table) is first, "kept while the key set is the same"
    table["c/z"] = 3
    del table["a/x"]
    table["a/x"] = 9  # a value changed, same keys: kept
    del table["c/z"]
    assert keys.of(table) is first
    del table["a/x"]
    table["b/q"] = 4  # one went, one came: same length, new order
    assert keys.of(table) == [("a-b", "y"), ("b", "q")]
    assert first == [("a", "x"), ("a-b", "y")], "a list handed out is never edited (a walk may still read it)"


def test_from_cursor_starts_after_the_cursor_even_when_it_is_gone() -> None:
    order = [("a",), ("c",), ("e",)]
    assert list(from_cursor(order, None)) == order
    assert list(from_cursor(order, ("c",))) == [("e",)]
    assert list(from_cursor(order, ("b",))) == [("c",), ("e",)]
    assert list(from_cursor(order, ("z",))) == []


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.sampled_from(NAMESPACES), st.sampled_from(WORKLOADS)),
               max_size=25)


@settings(max_examples=150, deadline=None)
@given(start=ops, churn=st.lists(ops, max_size=6), limit=st.integers(1, 9),
       ns=st.sampled_from((None, *NAMESPACES)), wl=st.sampled_from((None, *WORKLOADS)))
def test_replica_walk_pages_like_a_sorted_list_while_the_table_changes(
        start: list[tuple[bool, int, str, str]], churn: list[list[tuple[bool, int, str, str]]], limit: int,
        ns: str | None, wl: str | None) -> None:
    """Each page (walk from the cursor, `limit` items) equals that page of a fresh sort of the filtered table, and
    `remaining` the number of keys after the cursor in a fresh sort of the whole table, while replicas come, go and
    move between workloads between pages."""
    table = ReplicaTable()
    order = ReplicaOrder()

    def apply(batch: list[tuple[bool, int, str, str]]) -> None:
        for put, rid, n, w in batch:
            if put:
                table[f"r{rid:03}"] = _rec(rid, n, w)
            else:
                table.pop(f"r{rid:03}", None)
    apply(start)
    after: tuple[str, str, str] | None = None
    steps = itertools.chain(churn, itertools.repeat([]))
    for _ in range(200):
        want = sorted(_key(r) for r in table.values() if ns in (None, r.namespace) and wl in (None, r.workload))
        want = [k for k in want if after is None or k > after][:limit + 1]
        got = [_key(r) for r in itertools.islice(order.walk(table, after, namespace=ns, workload=wl), limit + 1)]
        assert got == want
        page = got[:limit]
        if len(got) <= limit:
            break
        after = page[-1]
        assert order.remaining(table, after) == sum(_key(r) > after for r in table.values())
        apply(next(steps))
    else:
        raise AssertionError("the walk never ended")
    assert order.remaining(table, None) == len(table)


def test_a_new_table_is_indexed_from_scratch() -> None:
    order = ReplicaOrder()
    one = ReplicaTable({"r001": _rec(1, "a", "x")})
    assert order.workloads(one) == [("a", "x")]
    two = ReplicaTable({"r002": _rec(2, "b", "y")})
    assert order.workloads(two) == [("b", "y")]
    two["r003"] = _rec(3, "a-b", "z")
    del two["r002"]
    assert order.workloads(two) == [("a-b", "z")]
