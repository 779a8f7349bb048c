"""The pure parts of paged lists (issue 17): label selectors, `limit`, the `continue` token and page selection,
including the consistency rule for items that come and go between pages."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.errors import SpecError
from coordinator.listing import (
    MAX_LIMIT,
    PageRequest,
    decode_continue,
    encode_continue,
    page_of,
    page_request,
    parse_limit,
)
from coordinator.selector import parse_selector

LABELS = {"room": "attic", "tier": "edge", "gpu": ""}


@pytest.mark.parametrize(("selector", "matches"), [
    ("", True),
    ("room=attic", True),
    ("room==attic", True),
    ("room=cellar", False),
    ("room!=cellar", True),
    ("room!=attic", False),
    ("missing!=x", True),  # as in Kubernetes: != matches an absent label
    ("gpu", True),
    ("missing", False),
    ("!missing", True),
    ("!gpu", False),
    ("room in (cellar, attic)", True),
    ("room in (cellar)", False),
    ("room notin (cellar)", True),
    ("room notin (attic,cellar)", False),
    ("missing notin (x)", True),
    ("room=attic,tier=edge,gpu", True),
    ("room=attic,tier=core", False),
    ("room in (attic,cellar),!missing,tier!=core", True),
    ("example.com/owner!=bob", True),
], ids=str)
def test_selector_matches_like_kubernetes(selector: str, matches: bool) -> None:
    assert parse_selector(selector).matches(LABELS) is matches


# labels that workloads (coordinator.spec_values: keys [A-Za-z0-9][A-Za-z0-9._/-]*, values any 128 characters) and
# nodes (the agent's --labels: anything but ',' and '=' in a key, ',' in a value) may hold: each can be selected
ODD = {"tier-": "x", "long": "v" * 128, "room": "Living Room", "my key": "a,b", "k" * 128: "(x)=!y", "q": 'say "hi"'}


@pytest.mark.parametrize(("selector", "key"), [
    ("tier-=x", "tier-"),
    ("long=" + "v" * 128, "long"),
    ('room="Living Room"', "room"),
    ('room in ("Living Room", cellar)', "room"),
    ('"my key" = "a,b"', "my key"),
    ('"my key" in ("a,b")', "my key"),
    ("k" * 128 + '="(x)=!y"', "k" * 128),
    ('q="say \\"hi\\""', "q"),
    ('q in ("say \\"hi\\"", "x)")', "q"),
], ids=lambda v: v[:24])
def test_every_label_a_node_or_workload_may_hold_can_be_selected(selector: str, key: str) -> None:
    assert parse_selector(selector).matches(ODD)
    assert not parse_selector(selector).matches({k: v for k, v in ODD.items() if k != key})
    assert parse_selector(f"{selector},room!=attic").matches(ODD), "and with another requirement after it"


@pytest.mark.parametrize("selector", ["room=attic,", "=attic", "room in attic", "room in ()", "room in (a",
                                      "room) in (a)", "room=a b", "a=b=c", "-bad=x", "room ~ x", "x" * 2000,
                                      'room="unterminated', 'room="a" "b"', 'room in ("a)', "k=" + "v" * 129,
                                      "k" * 129 + "=v", 'room="' + "v" * 129 + '"', 'room="bad \\q escape"'],
                         ids=lambda v: v[:20])
def test_a_bad_selector_is_refused_naming_the_parameter(selector: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_selector(selector)
    assert info.value.path == "labelSelector"


@pytest.mark.parametrize(("raw", "expected"), [(None, 500), ("", 500), ("1", 1), ("5000", 5000)])
def test_limit_defaults_and_bounds(raw: str | None, expected: int) -> None:
    assert parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-1", str(MAX_LIMIT + 1), "ten", "1.5", " ", " 5", "5 ", "+5", "1_0",
                                 "\u0665", "\u00b2", "00000000001" + "0" * 400])
def test_a_bad_limit_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_limit(raw)
    assert info.value.path == "limit"


def _token(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize("token", [
    "not base64 !!", "e30", _token([1]), _token({"v": 2, "r": "nodes", "k": ["a"]}),
    _token({"v": 1, "r": "workloads", "k": ["a"]}), _token({"v": 1, "r": "nodes", "k": ["a", "b"]}),
    _token({"v": 1, "r": "nodes", "k": [3]}), _token({"v": 1, "r": "nodes"}), "A" * 5000,
], ids=["garbage", "empty-object", "list", "version", "other-list", "shape", "type", "no-key", "huge"])
def test_a_bad_continue_token_is_refused_naming_it(token: str) -> None:
    with pytest.raises(SpecError) as info:
        decode_continue(token, "nodes", (str,))
    assert info.value.path == "continue"


def test_a_bool_is_not_an_event_id() -> None:
    with pytest.raises(SpecError):
        decode_continue(_token({"v": 1, "r": "events", "k": [True]}), "events", (int,))


def test_tokens_round_trip_and_are_url_safe() -> None:
    token = encode_continue("replicas", ("default", "web/é", "r-1"))
    assert "=" not in token and "+" not in token and "/" not in token
    assert decode_continue(token, "replicas", (str, str, str)) == ("default", "web/é", "r-1")
    assert page_request({"limit": "2", "continue": token}, "replicas", (str, str, str)) == \
        PageRequest(2, ("default", "web/é", "r-1"))


def test_pages_cover_every_key_once_in_order_with_the_count_left() -> None:
    keys = [(f"n{i:03}",) for i in range(23)]
    seen, req, lefts = [], PageRequest(5), []
    while True:
        page = page_of(keys, req, "nodes")
        seen += page.keys
        lefts.append(page.remaining)
        if page.continue_token is None:
            assert page.metadata() == {}
            break
        assert page.metadata() == {"continue": page.continue_token, "remainingItemCount": page.remaining}
        req = PageRequest(5, decode_continue(page.continue_token, "nodes", (str,)))
    assert seen == keys
    assert lefts == [18, 13, 8, 3, 0]


def test_an_exactly_full_last_page_says_nothing_follows() -> None:
    page = page_of([("a",), ("b",)], PageRequest(2), "nodes")
    assert page.keys == [("a",), ("b",)] and page.continue_token is None


@settings(max_examples=200, deadline=None)
@given(start=st.sets(st.integers(0, 60), max_size=40), limit=st.integers(1, 7),
       churn=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=30))
def test_items_added_ahead_of_the_cursor_are_seen_behind_it_not_and_none_twice(
        start: set[int], limit: int, churn: list[tuple[bool, int]]) -> None:
    """Between pages items are added and removed: every item present throughout is seen exactly once, nothing is
    seen twice, the walk is in key order, and an item added after the cursor is seen, one added behind it not."""
    present = set(start)
    always = set(start)
    seen: list[int] = []
    added_ahead: set[int] = set()
    req = PageRequest(limit)
    steps = iter(churn)
    while True:
        page = page_of(sorted((k,) for k in present), req, "events")
        seen += [k[0] for k in page.keys]
        if page.continue_token is None:
            break
        req = PageRequest(limit, decode_continue(page.continue_token, "events", (int,)))
        assert req.after is not None and isinstance(req.after[0], int)
        cursor = req.after[0]
        for add, key in [next(steps, (True, -1))]:
            if key < 0:
                continue
            if add and key not in present:
                present.add(key)
                if key > cursor:
                    added_ahead.add(key)
            elif not add:
                present.discard(key)
                always.discard(key)
                added_ahead.discard(key)
    assert seen == sorted(set(seen)), "in order, none twice"
    assert always <= set(seen)
    assert added_ahead <= set(seen)
