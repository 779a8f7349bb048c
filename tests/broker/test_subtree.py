"""The subscription trie against brute force: for any set of subscriptions built by any sequence of adds, QoS
replacements and removals, `match(topic)` equals checking every filter with `broker.acl.topic_matches` (the
ACL's own §4.7 matcher), and `len`/`filters` agree with the surviving subscriptions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.acl import topic_matches
from broker.subtree import SubscriptionTree

LEVELS = ["", "a", "b", "node", "$SYS", "$x"]
CLIENTS = ["c1", "c2", "c3", "c4"]

topic_levels = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4)
topics_st = topic_levels.map("/".join)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return "/".join(levels)


ops = st.lists(
    st.tuples(st.sampled_from(["add", "add", "remove", "drop"]), st.sampled_from(CLIENTS), filters(),
              st.integers(0, 2)),
    max_size=40,
)


def brute(subs: dict[tuple[str, str], int], topic: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (client, topic_filter), qos in subs.items():
        if topic_matches(topic, topic_filter):
            out[client] = max(qos, out.get(client, -1))
    return out


@settings(max_examples=400, deadline=None)
@given(ops, st.lists(topics_st, min_size=1, max_size=8))
def test_match_equals_brute_force(operations: list[tuple[str, str, str, int]], probes: list[str]) -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    model: dict[tuple[str, str], int] = {}
    for op, client, topic_filter, qos in operations:
        match op:
            case "add":
                assert tree.add(client, topic_filter, qos) == ((client, topic_filter) not in model)
                model[(client, topic_filter)] = qos
            case "remove":
                assert tree.remove(client, topic_filter) == ((client, topic_filter) in model)
                model.pop((client, topic_filter), None)
            case "drop":
                gone = tree.remove_client(client)
                assert sorted(gone) == sorted(f for c, f in model if c == client)
                model = {k: v for k, v in model.items() if k[0] != client}
    for topic in probes:
        assert tree.match(topic) == brute(model, topic), topic
    assert len(tree) == len(model)
    for client in CLIENTS:
        assert dict(tree.filters(client)) == {f: q for (c, f), q in model.items() if c == client}


def test_removing_everything_leaves_an_empty_tree() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    for f in ("a/b", "a/+", "a/#", "#", "+/b/#"):
        tree.add("c", f, 1)
    tree.remove_client("c")
    assert tree._root.children == {} and list(tree.clients()) == []


@pytest.mark.parametrize(
    "topic_filter,topic,matches",
    [
        ("sport/#", "sport", True),  # §4.7.1.2: '#' also matches the parent level
        ("#", "$SYS/x", False),  # §4.7.2: a leading wildcard never matches a '$' topic
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/+", "$SYS/x", True),
        ("+/+", "/a", True),  # an empty level is a level
        ("+", "/a", False),
        ("a/+/#", "a/b", True),
    ],
    ids=["hash-parent", "dollar-hash", "dollar-plus", "dollar-literal", "dollar-then-plus", "empty-level",
         "plus-one-level", "plus-then-hash"],
)
def test_spec_examples(topic_filter: str, topic: str, matches: bool) -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add("c", topic_filter, 1)
    assert (tree.match(topic) == {"c": 1}) is matches
    assert topic_matches(topic, topic_filter) is matches


def test_overlapping_subscriptions_give_one_entry_at_the_highest_qos() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.add("c", "a/#", 2)
    tree.add("c", "a/+", 1)
    tree.add("d", "a/b", 0)
    assert tree.match("a/b") == {"c": 2, "d": 0}
    assert tree.add("c", "a/#", 0) is False  # a new SUBSCRIBE to the same filter replaces its QoS (§3.8.4)
    assert tree.match("a/b") == {"c": 1, "d": 0}
