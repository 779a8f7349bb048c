"""Shared cases for the hostile-payload tests (test_wire_hostile_bytes.py, test_wire_hostile_fields.py): payload
builders and the field sites generated from the message annotations."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, settings

from broker import wire
from broker.wire import codec
from broker.wire.messages import MESSAGE_TYPES
from tests.broker.builders import kind_id, make_message
from tests.broker.strategies import Field, field_types, unwrap

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- helpers ---------------------------------------------------------------------------------------------------

Path = tuple[str | int, ...]
SENTINEL = "\u2603sentinel\u2603"


def envelope(message: object) -> dict[str, Any]:
    """The plain (msgpack-able) envelope of a message; mutate it, then `pack()` it."""
    return {"v": wire.PROTOCOL_MAJOR, "k": type(message).KIND, "b": codec.to_body(message)}  # type: ignore[attr-defined]


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def set_at(env: dict[str, Any], path: Path, value: object) -> dict[str, Any]:
    """A deep copy of `env` with the value at `path` (below the body `b`) replaced."""
    env = copy.deepcopy(env)
    parent: Any = env
    keys: Path = ("b", *path)
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    return env


def splice(env: dict[str, Any], path: Path, raw: bytes) -> bytes:
    """Pack `env` with the raw msgpack bytes `raw` at `path`: for encodings msgpack itself would not produce."""
    packed = pack(set_at(env, path, SENTINEL))
    token = pack(SENTINEL)
    assert packed.count(token) == 1
    return packed.replace(token, raw)


def raw_str(data: bytes) -> bytes:
    """A msgpack str header followed by arbitrary (possibly non-UTF-8) bytes."""
    assert len(data) < 32
    return bytes([0xA0 | len(data)]) + data


def dotted(path: Path) -> str:
    """The WireError.path the schema reports for a body path."""
    return "b" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def walk(tp: Any, value: Any, path: Path = ()) -> Iterator[tuple[Path, Field]]:
    """Every value site in a plain body: the field annotation at each path, nested records and first items too."""
    fld = unwrap(tp)
    yield path, fld
    origin = typing.get_origin(fld.base)
    if dataclasses.is_dataclass(fld.base):
        for name, ftp in field_types(fld.base).items():  # type: ignore[arg-type]
            yield from walk(ftp, value[name], (*path, name))
    elif origin is tuple and value:
        yield from walk(typing.get_args(fld.base)[0], value[0], (*path, 0))
    elif origin is dict and value:
        key = next(iter(value))
        yield from walk(typing.get_args(fld.base)[1], value[key], (*path, key))


def sites() -> Iterator[tuple[type, Path, Field]]:
    for cls in MESSAGE_TYPES:
        body = envelope(make_message(cls))["b"]
        for path, fld in walk(cls, body):
            yield cls, path, fld


def site_id(cls: type, path: Path, suffix: str = "") -> str:
    return f"{kind_id(cls)}:{dotted(path)}" + (f":{suffix}" if suffix else "")


def accepts_type(fld: Field, value: object) -> bool:
    """Whether the schema would accept `value`'s Python type at this site (the value itself may still be bad)."""
    base, origin = fld.base, typing.get_origin(fld.base)
    if value is None:
        return fld.optional
    if base is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if base is int:
        return isinstance(value, int)
    if base is float:
        return isinstance(value, (int, float))
    if base is bytes:
        return isinstance(value, bytes)
    if origin is tuple:
        return isinstance(value, list)
    if origin is dict or dataclasses.is_dataclass(base):
        return isinstance(value, dict)
    return isinstance(value, str)  # str, identifiers, enums


def assert_wire_error(payload: object, path: str | None = None) -> wire.WireError:
    with pytest.raises(wire.WireError) as info:
        wire.decode(payload)
    if path is not None:
        assert info.value.path == path, str(info.value)
    return info.value


def assert_decodes_or_wire_error(payload: object) -> None:
    try:
        message = wire.decode(payload)
    except wire.WireError:
        return
    assert type(message) in MESSAGE_TYPES


GOLDEN_PAYLOADS = {cls: wire.encode(make_message(cls)) for cls in MESSAGE_TYPES}
