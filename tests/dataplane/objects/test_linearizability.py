"""The linearizability checker: accepts linearizable histories (hand-made and generated from a real sequential run
with overlapping intervals), rejects stale reads, lost writes, reads from the future, resurrected deletes, phantom
and stale listings; the per-key check misses a LIST that fits no single instant, which the global one catches."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dataplane.objects.linearizability import Kind, Op, Outcome, check, check_global

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


def put(key: str, value: str, t0: float, t1: float, outcome: Outcome = OK, client: int = 0) -> Op:
    return Op(client, Kind.PUT, key, t0, t1, outcome, value=value)


def get(key: str, value: str | None, t0: float, t1: float, client: int = 1) -> Op:
    return Op(client, Kind.GET, key, t0, t1, OK, value=value)


def delete(key: str, t0: float, t1: float, client: int = 0) -> Op:
    return Op(client, Kind.DELETE, key, t0, t1, OK)


def ls(prefix: str, keys: set[str], t0: float, t1: float, client: int = 2) -> Op:
    return Op(client, Kind.LIST, prefix, t0, t1, OK, keys=frozenset(keys))


LINEARIZABLE = {
    "sequential": [put("a", "1", 0, 1), get("a", "1", 2, 3), put("a", "2", 4, 5), get("a", "2", 6, 7)],
    "read concurrent with write sees old": [put("a", "1", 0, 1), put("a", "2", 2, 6), get("a", "1", 3, 4)],
    "read concurrent with write sees new": [put("a", "1", 0, 1), put("a", "2", 2, 6), get("a", "2", 3, 4)],
    "missing before first write": [get("a", None, 0, 1), put("a", "1", 2, 3), get("a", "1", 4, 5)],
    "two reads order the concurrent write": [put("a", "1", 0, 10), get("a", None, 1, 2), get("a", "1", 3, 4)],
    "unknown write that took effect": [put("a", "1", 0, 1, UNKNOWN), get("a", None, 2, 3), get("a", "1", 5, 6)],
    "unknown write that never did": [put("a", "1", 0, 1, UNKNOWN), get("a", None, 2, 3), get("a", None, 50, 51)],
    "delete": [put("a", "1", 0, 1), delete("a", 2, 3), get("a", None, 4, 5)],
    "list after writes": [put("a/x", "1", 0, 1), put("b", "1", 0, 1), ls("a/", {"a/x"}, 2, 3)],
    "list concurrent with write": [put("a", "1", 0, 5), ls("", set(), 1, 2), ls("", {"a"}, 3, 4)],
    "list after delete": [put("a", "1", 0, 1), delete("a", 2, 3), ls("", set(), 4, 5)],
    "touching intervals are concurrent": [put("a", "1", 0, 2), get("a", None, 2, 3)],
    "failed write is dropped": [put("a", "1", 0, 1, FAIL), get("a", None, 2, 3)],
}

NOT_LINEARIZABLE = {
    "stale read": [put("a", "1", 0, 1), put("a", "2", 2, 3), get("a", "1", 4, 5)],
    "lost write": [put("a", "1", 0, 1), get("a", None, 2, 3)],
    "read from the future": [get("a", "1", 0, 1), put("a", "1", 2, 3)],
    "value never written": [put("a", "1", 0, 1), get("a", "7", 2, 3)],
    "new then old": [put("a", "1", 0, 1), put("a", "2", 2, 10), get("a", "2", 3, 4), get("a", "1", 5, 6)],
    "unknown write seen then gone": [put("a", "1", 0, 1, UNKNOWN), get("a", "1", 2, 3), get("a", None, 4, 5)],
    "unknown write before its invoke": [get("a", "1", 0, 1), put("a", "1", 2, 3, UNKNOWN)],
    "failed write visible": [put("a", "1", 0, 1, FAIL), get("a", "1", 2, 3)],
    "resurrected delete": [put("a", "1", 0, 1), delete("a", 2, 3), get("a", "1", 4, 5)],
    "list misses a written key": [put("a", "1", 0, 1), ls("", set(), 2, 3)],
    "list shows a deleted key": [put("a", "1", 0, 1), delete("a", 2, 3), ls("", {"a"}, 4, 5)],
    "phantom in a list": [put("a", "1", 0, 1), ls("", {"a", "ghost"}, 2, 3)],
    "list outside its prefix": [put("a", "1", 0, 1), put("b", "1", 0, 1), ls("a", {"a", "b"}, 2, 3)],
}


@pytest.mark.parametrize("history", LINEARIZABLE.values(), ids=LINEARIZABLE.keys())
def test_accepts(history: list[Op]) -> None:
    verdict = check(history)
    assert verdict.ok, verdict.explain()
    assert check_global(history).ok


@pytest.mark.parametrize("history", NOT_LINEARIZABLE.values(), ids=NOT_LINEARIZABLE.keys())
def test_rejects(history: list[Op]) -> None:
    verdict = check(history)
    assert not verdict.ok and not verdict.inconclusive
    assert verdict.failures, "a rejection names what failed"
    glob = check_global(history)
    assert not glob.ok and not glob.inconclusive


def test_explains_the_failure() -> None:
    verdict = check([put("a", "1", 0, 1), put("a", "2", 2, 3), get("a", "1", 4, 5)])
    text = verdict.explain()
    assert "NOT linearizable" in text and "key 'a'" in text and "GET a -> 1" in text


def test_list_at_no_single_instant_needs_the_global_check() -> None:
    """Two concurrent writes and two listings that saw them in opposite orders: each key alone is fine (the per-key
    projection is a necessary condition only), no single instant fits both listings."""
    history = [put("a", "1", 0, 10), put("b", "1", 0, 10, client=1), ls("", {"a"}, 1, 9), ls("", {"b"}, 1, 9, 3)]
    assert check(history).ok
    verdict = check_global(history)
    assert not verdict.ok and not verdict.inconclusive


def test_global_budget_is_inconclusive_not_a_verdict() -> None:
    history = [put(f"k{i}", "1", 0, 100, client=i) for i in range(12)] + [get("k0", "2", 101, 102)]
    verdict = check_global(history, budget=50)
    assert verdict.inconclusive and not verdict.ok


def test_rejects_bad_ops() -> None:
    with pytest.raises(ValueError, match="before invoke"):
        Op(0, Kind.GET, "a", 2, 1)
    with pytest.raises(ValueError, match="needs a value"):
        Op(0, Kind.PUT, "a", 0, 1)


def run_model(seed: int, n_ops: int, n_keys: int, clients: int) -> list[Op]:
    """A linearizable history by construction: a real dict executes each operation at an instant inside the
    operation's interval; clients' intervals overlap. Some writes are reported UNKNOWN (they did take effect)."""
    rng = random.Random(seed)
    state: dict[str, str] = {}
    free_at = [0.0] * clients
    events: list[tuple[float, int, float, float]] = []
    for i in range(n_ops):
        c = rng.randrange(clients)
        t0 = free_at[c] + rng.random()
        point = t0 + rng.random() * 3
        t1 = point + rng.random() * 3
        free_at[c] = t1
        events.append((point, c, t0, t1))
        del i
    ops = []
    for n, (_point, c, t0, t1) in enumerate(sorted(events)):
        key = f"k{rng.randrange(n_keys)}"
        roll = rng.random()
        if roll < 0.35:
            value = f"v{n}"
            state[key] = value
            outcome = UNKNOWN if rng.random() < 0.1 else OK
            ops.append(Op(c, Kind.PUT, key, t0, t1, outcome, value=value))
        elif roll < 0.45:
            state.pop(key, None)
            ops.append(Op(c, Kind.DELETE, key, t0, t1))
        elif roll < 0.85:
            ops.append(Op(c, Kind.GET, key, t0, t1, value=state.get(key)))
        else:
            ops.append(Op(c, Kind.LIST, "", t0, t1, keys=frozenset(state)))
    return ops


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_keys=st.integers(1, 4), clients=st.integers(1, 5))
def test_accepts_generated_linearizable_histories(seed: int, n_keys: int, clients: int) -> None:
    history = run_model(seed, 40, n_keys, clients)
    verdict = check(history)
    assert verdict.ok, verdict.explain()
    glob = check_global(history, budget=500_000)
    assert glob.ok or glob.inconclusive, glob.explain()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), clients=st.integers(1, 5), victim=st.integers(0, 10**6))
def test_rejects_a_generated_history_with_a_read_of_a_value_never_written(seed: int, clients: int,
                                                                          victim: int) -> None:
    history = run_model(seed, 40, 2, clients)
    reads = [i for i, op in enumerate(history) if op.kind is Kind.GET]
    if not reads:
        return
    i = reads[victim % len(reads)]
    op = history[i]
    history[i] = Op(op.client, Kind.GET, op.key, op.invoke, op.ret, value="never-written")
    assert not check(history).ok
