"""Hypothesis strategies for wire messages, derived from the dataclass annotations and the constraint markers in
`broker.wire.schema` (the same information the codec compiles), so a new field or kind is covered without editing
this file. An annotation this module does not understand raises TypeError: extend `strategy_for` alongside the
schema.

Collections are capped at a few items (`COLLECTION_CAP`) to keep examples small and fast; the hostile tests check
the real item caps at their boundaries.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st

from broker.wire import schema

COLLECTION_CAP = 3
BLOB_CAP = 512  # Blob fields allow 1 MiB; random megabytes would only slow the run down

# Any character msgpack can carry in a str and the schema accepts in a Text: no lone surrogates, no NUL.
TEXT_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


@dataclass(frozen=True)
class Field:
    """An annotation taken apart: the base type, its constraint markers and whether None is allowed."""

    base: Any
    marks: dict[type, Any]
    optional: bool


def unwrap(tp: Any) -> Field:
    """`Annotated[X, markers...] | None` -> Field(X, {type(marker): marker}, optional=True)."""
    optional = False
    marks: dict[type, Any] = {}
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only X | None unions are supported, got {tp!r}")
        optional, tp = True, args[0]
    if typing.get_origin(tp) is typing.Annotated:
        tp, *extras = typing.get_args(tp)
        marks = {type(m): m for m in extras}
    return Field(tp, marks, optional)


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation (with markers) for every init field of a wire dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def ids(max_len: int = schema.ID_MAX_LEN) -> st.SearchStrategy[str]:
    """Valid identifiers: exactly the strings ID_PATTERN accepts, up to `max_len` characters."""
    return st.from_regex(schema.ID_PATTERN, fullmatch=True).filter(lambda s: len(s) <= max_len)


def texts(max_len: int) -> st.SearchStrategy[str]:
    return st.text(TEXT_CHARS, max_size=max_len)


def _scalar(base: Any, marks: dict[type, Any]) -> st.SearchStrategy[Any]:
    if base is bool:
        return st.booleans()
    if base is int:
        lim = marks.get(schema.Int, schema.Int())
        return st.integers(lim.lo, lim.hi)
    if base is float:
        flim = marks.get(schema.Float, schema.Float())
        return st.floats(flim.lo, flim.hi, allow_nan=False, allow_infinity=False)
    if base is str:
        if schema.Ident in marks:
            return ids(marks[schema.Ident].max_len)
        if schema.Member in marks:
            top = marks[schema.Member].max_len
            return st.from_regex(schema.MEMBER_PATTERN, fullmatch=True).filter(lambda s: len(s) <= top)
        if schema.Hex in marks:
            n = marks[schema.Hex].length
            return st.text("0123456789abcdef", min_size=n, max_size=n)
        return texts(marks.get(schema.Text, schema.Text()).max_len)
    if base is bytes:
        return st.binary(max_size=min(marks.get(schema.Blob, schema.Blob()).max_len, BLOB_CAP))
    if isinstance(base, type) and issubclass(base, enum.StrEnum):
        return st.sampled_from(list(base))
    raise TypeError(f"no strategy for wire type {base!r}: extend tests/broker/strategies.py")


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for valid values of one annotated wire type."""
    fld = unwrap(tp)
    inner = _inner(fld)
    return st.none() | inner if fld.optional else inner


def _inner(fld: Field) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(fld.base)
    limit = fld.marks.get(schema.Items, schema.Items()).max_items
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(fld.base)
        return st.lists(strategy_for(item_tp), max_size=min(limit, COLLECTION_CAP)).map(tuple)
    if origin is dict:
        _key_tp, val_tp = typing.get_args(fld.base)
        key_marker = fld.marks.get(schema.Keys, schema.Keys()).marker
        keys = ids(key_marker.max_len) if isinstance(key_marker, schema.Ident) else texts(key_marker.max_len)
        return st.dictionaries(keys, strategy_for(val_tp), max_size=min(limit, COLLECTION_CAP))
    if dataclasses.is_dataclass(fld.base):
        return messages(fld.base)  # type: ignore[arg-type]
    return _scalar(fld.base, fld.marks)


@cache
def messages(cls: type) -> st.SearchStrategy[Any]:
    """Valid instances of a wire dataclass (a message kind or a nested record)."""
    return st.builds(cls, **{name: strategy_for(tp) for name, tp in field_types(cls).items()})
