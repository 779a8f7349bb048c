"""Hostile payloads, field level: every field of every kind, nested ones included, refuses wrong types, bad
numbers, bad strings and identifiers, and item caps; required fields are required and unknown ones ignored.
Cases are generated from the message annotations (tests/broker/strategies.py) and applied to the fully populated
builder messages."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from broker import wire
from broker.wire import schema
from broker.wire.messages import MESSAGE_TYPES
from tests.broker.builders import BAD_IDS, kind_id, make_message, make_node_status
from tests.broker.hostile_cases import (
    Path,
    accepts_type,
    assert_wire_error,
    dotted,
    envelope,
    pack,
    raw_str,
    set_at,
    site_id,
    sites,
    splice,
)

# ---- required and unknown fields -------------------------------------------------------------------------------

REQUIRED = [
    pytest.param(cls, f.name, id=f"{kind_id(cls)}:{f.name}")
    for cls in MESSAGE_TYPES
    for f in dataclasses.fields(cls)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


@pytest.mark.parametrize(("cls", "name"), REQUIRED)
def test_missing_required_field_is_refused(cls: type, name: str) -> None:
    env = envelope(make_message(cls))
    del env["b"][name]
    assert_wire_error(pack(env), path=f"b.{name}")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param((), id="envelope"),
        pytest.param(("b",), id="body"),
        pytest.param(("b", "facts"), id="nested-record"),
    ],
)
@pytest.mark.parametrize(
    "extra",
    [None, 1, "text", b"\xff", [1, [2, {"x": 3}]], {"nested": {"deeper": [1.5, math.nan]}}],
    ids=["nil", "int", "str", "bin", "list", "map-with-nan"],
)
def test_unknown_fields_are_ignored(path: tuple[str, ...], extra: object) -> None:
    """Forward compatibility: a newer peer may add fields anywhere; older decoders skip them."""
    message = make_node_status()
    env = envelope(message)
    target: Any = env
    for key in path:
        target = target[key]
    target["added_in_v1_7"] = extra
    assert wire.decode(pack(env)) == message


def test_unknown_fields_in_list_items_are_ignored() -> None:
    message = make_message(wire.DesiredState)
    env = envelope(message)
    env["b"]["replicas"][0]["priority_class"] = "high"
    env["b"]["replicas"][0]["liveness"]["grpc"] = {"service": "x"}
    assert wire.decode(pack(env)) == message


# ---- every field: wrong types, ranges, strings, identifiers, item caps -----------------------------------------

WRONG_VALUES: list[object] = [None, True, 7, 1.5, "text", b"bin", [1], {"x": 1}]

WRONG_TYPE_CASES = [
    pytest.param(cls, path, bad, id=site_id(cls, path, type(bad).__name__))
    for cls, path, fld in sites()
    if path
    for bad in WRONG_VALUES
    if not accepts_type(fld, bad)
]


@pytest.mark.parametrize(("cls", "path", "bad"), WRONG_TYPE_CASES)
def test_wrong_type_in_any_field_is_refused(cls: type, path: Path, bad: object) -> None:
    assert_wire_error(pack(set_at(envelope(make_message(cls)), path, bad)), path=dotted(path))


def _number_cases() -> Iterator[Any]:
    for cls, path, fld in sites():
        if fld.base is float:
            lim = fld.marks.get(schema.Float, schema.Float())
            for name, bad in [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf),
                              ("below", lim.lo - 1.0), ("above", lim.hi * 2 + 1.0)]:
                yield pytest.param(cls, path, bad, id=site_id(cls, path, name))
        elif fld.base is int:
            ilim = fld.marks.get(schema.Int, schema.Int())
            for name, bad in [("below", ilim.lo - 1), ("above", ilim.hi + 1), ("bool", False)]:
                yield pytest.param(cls, path, bad, id=site_id(cls, path, name))


@pytest.mark.parametrize(("cls", "path", "bad"), list(_number_cases()))
def test_non_finite_out_of_range_or_bool_numbers_are_refused(cls: type, path: Path, bad: object) -> None:
    assert_wire_error(pack(set_at(envelope(make_message(cls)), path, bad)), path=dotted(path))


STR_SITES = [(cls, path, fld) for cls, path, fld in sites() if fld.base is str or (
    isinstance(fld.base, type) and issubclass(fld.base, str))]


@pytest.mark.parametrize(
    ("cls", "path"), [pytest.param(cls, path, id=site_id(cls, path)) for cls, path, _ in STR_SITES]
)
@pytest.mark.parametrize("junk", [b"\xff", b"\xc3\x28", b"a\xed\xa0\x80b", b"\xf8\x88\x80\x80\x80"],
                         ids=["ff", "bad-continuation", "encoded-surrogate", "5-byte-form"])
def test_non_utf8_strings_are_refused(cls: type, path: Path, junk: bytes) -> None:
    assert_wire_error(splice(envelope(make_message(cls)), path, raw_str(junk)))


@pytest.mark.parametrize("junk", [b"\xff", b"a\xed\xa0\x80b"], ids=["ff", "encoded-surrogate"])
def test_non_utf8_map_keys_and_kinds_are_refused(junk: bytes) -> None:
    env = envelope(make_node_status())
    packed = pack(env)
    for token in (pack("room"), pack("k"), pack("node.status")):
        assert packed.count(token) == 1
        assert_wire_error(packed.replace(token, raw_str(junk)))


@pytest.mark.parametrize(
    ("cls", "path", "bad"),
    [
        pytest.param(cls, path, "x" * (fld.marks.get(schema.Text, schema.Text()).max_len + 1),
                     id=site_id(cls, path, "too-long"))
        for cls, path, fld in STR_SITES
        if fld.base is str and schema.Ident not in fld.marks
    ]
    + [
        pytest.param(cls, path, "a\x00b", id=site_id(cls, path, "nul"))
        for cls, path, fld in STR_SITES
        if fld.base is str
    ]
    + [
        pytest.param(cls, path, "no-such-member", id=site_id(cls, path, "unknown-member"))
        for cls, path, fld in STR_SITES
        if fld.base is not str
    ],
)
def test_strings_too_long_with_nul_or_outside_the_enum_are_refused(cls: type, path: Path, bad: str) -> None:
    assert_wire_error(pack(set_at(envelope(make_message(cls)), path, bad)), path=dotted(path))


ID_SITES = [(cls, path) for cls, path, fld in STR_SITES if schema.Ident in fld.marks]


@pytest.mark.parametrize(("cls", "path"), [pytest.param(c, p, id=site_id(c, p)) for c, p in ID_SITES])
@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_invalid_identifiers_are_refused(cls: type, path: Path, bad: str) -> None:
    assert_wire_error(pack(set_at(envelope(make_message(cls)), path, bad)), path=dotted(path))


def test_identifier_at_the_length_limit_is_accepted() -> None:
    node_id = "n" + "0" * 62
    assert wire.decode(wire.encode(make_node_status(node_id=node_id))) == make_node_status(node_id=node_id)


def _container_cases() -> Iterator[Any]:
    for cls, path, fld in sites():
        origin = typing.get_origin(fld.base)
        if path and origin in (tuple, dict):
            cap = fld.marks.get(schema.Items, schema.Items()).max_items
            yield pytest.param(cls, path, origin, cap, id=site_id(cls, path, f"cap{cap}"))


@pytest.mark.parametrize(("cls", "path", "origin", "cap"), list(_container_cases()))
def test_item_caps_hold_at_the_boundary(cls: type, path: Path, origin: type, cap: int) -> None:
    env = envelope(make_message(cls))
    parent: Any = env["b"]
    for key in path:
        parent = parent[key]
    sample = parent[0] if origin is tuple else next(iter(parent.values()))

    def filled(n: int) -> object:
        return [sample] * n if origin is tuple else {f"k{i}": sample for i in range(n)}

    assert type(wire.decode(pack(set_at(env, path, filled(cap))))) is cls
    assert_wire_error(pack(set_at(env, path, filled(cap + 1))), path=dotted(path))


def test_map_keys_must_be_strings_of_bounded_length() -> None:
    env = envelope(make_node_status())
    assert_wire_error(pack(set_at(env, ("facts", "labels"), {b"room": "x"})), path="b.facts.labels.<key>")
    assert_wire_error(pack(set_at(env, ("facts", "labels"), {"k" * 129: "x"})), path="b.facts.labels.<key>")
    assert_wire_error(pack(set_at(env, ("facts", "labels"), {"a\x00": "x"})), path="b.facts.labels.<key>")
