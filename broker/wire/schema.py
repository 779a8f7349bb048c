"""Typed field constraints and the generic, strict dataclass <-> plain-data converter behind the codec.

Theory of operation: every message is a frozen dataclass whose fields are annotated with Python types plus
optional constraint markers (`Ident`, `Text`, `Int`, ...) via `typing.Annotated`. `compile_schema()` turns a
class into a converter once (cached); `to_plain()` validates and lowers a message to msgpack-able data, and
`from_plain()` validates untrusted plain data and builds the message. Both raise `WireError` naming the field
path. Unknown keys in untrusted maps are ignored (forward compatibility); missing keys take the field default
or fail. Booleans are never accepted where an int is expected (msgpack keeps them distinct, so must we).

Pure: no I/O, no clocks.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.errors import WireError

# Identifier syntax shared by node ids, workload names, replica ids, coordinator ids, ...: safe as one MQTT
# topic level (no '/', '+', '#', NUL; MQTT 3.1.1 §4.7.1), as a DNS-ish label and as a file name.
ID_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})")
ID_MAX_LEN = 63
# An overlay member: a node id, or a service's identity "name@id" (the S3 gateway is "s3@<coordinator id>", a relay
# "relay@<name>"): never a node id, so no node can enrol under it.
MEMBER_PATTERN = re.compile(rf"{ID_PATTERN.pattern}(?:@{ID_PATTERN.pattern})?")


@dataclass(frozen=True, slots=True)
class Ident:
    """A string with identifier syntax (see ID_PATTERN)."""

    max_len: int = ID_MAX_LEN


@dataclass(frozen=True, slots=True)
class Text:
    """A free-form UTF-8 string of at most `max_len` characters."""

    max_len: int = 256


@dataclass(frozen=True, slots=True)
class Member:
    """An overlay member's identity (see MEMBER_PATTERN)."""

    max_len: int = 2 * ID_MAX_LEN + 1


@dataclass(frozen=True, slots=True)
class Hex:
    """A string of exactly `length` lowercase hexadecimal digits (a digest: an object-store chunk id)."""

    length: int = 64


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes of at most `max_len`."""

    max_len: int = 65536


@dataclass(frozen=True, slots=True)
class Int:
    lo: int = 0
    hi: int = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Float:
    lo: float = 0.0
    hi: float = 2.0**40


@dataclass(frozen=True, slots=True)
class Items:
    """A bound on the number of items of a tuple or map."""

    max_items: int = 256


@dataclass(frozen=True, slots=True)
class Keys:
    """Constraints for the keys of a map (values use the other markers)."""

    marker: Ident | Text = Text(128)


Converter = Callable[[Any, str], Any]


def describe(value: object, limit: int = 40) -> str:
    """A short, bounded rendering of an untrusted value for an error message.

    Never `str()`/`repr()` a container from the wire: a value nested ~1000 deep (msgpack's stack allows it)
    makes them raise RecursionError, and decode() must raise only WireError. Scalars are shown (truncated);
    anything else by its type name. Ints are not stringified past 64 bits (CPython refuses > 4300 digits).
    """
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    return f"<{type(value).__name__}>"


def utf8_encodable(value: str) -> bool:
    """False for strings with lone surrogates (e.g. from `surrogateescape`), which have no UTF-8 encoding."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(value: str) -> str | None:
    """Why a string cannot travel as wire text (None: it can). The one rule every free-form string follows, used
    by the codec and by whoever admits strings that will later be sent (the coordinator's workload spec), so a
    document accepted at the API is never one the wire then refuses."""
    if "\x00" in value:
        return "string contains NUL"
    if not utf8_encodable(value):  # msgpack would fail on it while encoding, outside our error type
        return "string is not encodable as UTF-8 (lone surrogate)"
    return None


def is_service_member(peer: str) -> bool:
    """Whether an overlay peer is a member a coordinator runs for a service (`NAME@ID`, MEMBER_PATTERN: the S3
    gateway `s3@<coordinator id>`), not a node: node ids cannot hold '@'. Such members are reached on demand and
    dial the nodes they keep links to (coordinator.overlay, dataplane.overlay)."""
    return "@" in peer


def valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(value: object, path: str, max_len: int = ID_MAX_LEN) -> str:
    if not isinstance(value, str):
        raise WireError(f"expected an identifier string, got {type(value).__name__}", path=path)
    if len(value) > max_len or ID_PATTERN.fullmatch(value) is None:
        raise WireError(
            f"invalid identifier {value[:80]!r}: 1-{max_len} chars of letters, digits, '.', '_', '-', "
            "starting with a letter or digit",
            path=path,
        )
    return value


def _markers(extras: tuple[Any, ...]) -> dict[type, Any]:
    return {type(m): m for m in extras}


def _scalar(tp: Any, marks: dict[type, Any]) -> Converter:
    if tp is bool:

        def conv_bool(v: Any, path: str) -> bool:
            if not isinstance(v, bool):
                raise WireError(f"expected a boolean, got {type(v).__name__}", path=path)
            return v

        return conv_bool
    if tp is int:
        lim = marks.get(Int, Int())

        def conv_int(v: Any, path: str) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise WireError(f"expected an integer, got {type(v).__name__}", path=path)
            if not lim.lo <= v <= lim.hi:
                raise WireError(f"{describe(v)} is outside [{lim.lo}, {lim.hi}]", path=path)
            return v

        return conv_int
    if tp is float:
        flim = marks.get(Float, Float())

        def conv_float(v: Any, path: str) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise WireError(f"expected a number, got {type(v).__name__}", path=path)
            try:
                f = float(v)
            except OverflowError:  # an int beyond float range (only possible on the encode path)
                f = math.inf
            if not math.isfinite(f) or not flim.lo <= f <= flim.hi:
                raise WireError(f"{describe(v)} is outside [{flim.lo}, {flim.hi}]", path=path)
            return f

        return conv_float
    if tp is str:
        ident = marks.get(Ident)
        if ident is not None:
            return lambda v, path: check_id(v, path, ident.max_len)
        member = marks.get(Member)
        if member is not None:

            def conv_member(v: Any, path: str) -> str:
                if not isinstance(v, str) or len(v) > member.max_len or MEMBER_PATTERN.fullmatch(v) is None:
                    raise WireError(f"expected a node id or a member identity NAME@ID, got {describe(v)}", path=path)
                return v

            return conv_member
        hexa = marks.get(Hex)
        if hexa is not None:
            digits = re.compile(f"[0-9a-f]{{{hexa.length}}}")

            def conv_hex(v: Any, path: str) -> str:
                if not isinstance(v, str) or digits.fullmatch(v) is None:
                    raise WireError(f"expected {hexa.length} lowercase hex digits, got {describe(v)}", path=path)
                return v

            return conv_hex
        text = marks.get(Text, Text())

        def conv_str(v: Any, path: str) -> str:
            if not isinstance(v, str):
                raise WireError(f"expected a string, got {type(v).__name__}", path=path)
            if len(v) > text.max_len:
                raise WireError(f"string longer than {text.max_len} characters", path=path)
            if (why := text_problem(v)) is not None:
                raise WireError(why, path=path)
            return v

        return conv_str
    if tp is bytes:
        blob = marks.get(Blob, Blob())

        def conv_bytes(v: Any, path: str) -> bytes:
            if not isinstance(v, bytes):
                raise WireError(f"expected bytes, got {type(v).__name__}", path=path)
            if len(v) > blob.max_len:
                raise WireError(f"more than {blob.max_len} bytes", path=path)
            return v

        return conv_bytes
    if isinstance(tp, type) and issubclass(tp, enum.StrEnum):
        allowed = {m.value: m for m in tp}

        def conv_enum(v: Any, path: str) -> enum.StrEnum:
            if isinstance(v, tp):
                return v
            if not isinstance(v, str) or v not in allowed:
                raise WireError(f"expected one of {sorted(allowed)}, got {describe(v)}", path=path)
            return allowed[v]

        return conv_enum
    raise TypeError(f"unsupported wire type {tp!r}")


def _compile_type(tp: Any, decode: bool) -> Converter:
    marks: dict[type, Any] = {}
    if typing.get_origin(tp) is typing.Annotated:
        tp, *extras = typing.get_args(tp)
        marks = _markers(tuple(extras))
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported, got {tp!r}")
        inner = _compile_type(typing.Annotated[args[0], *marks.values()] if marks else args[0], decode)
        return lambda v, path: None if v is None else inner(v, path)
    if origin is tuple:
        item_tp, ellipsis = typing.get_args(tp)
        assert ellipsis is Ellipsis, "only tuple[X, ...] is supported"
        item = _compile_type(item_tp, decode)
        limit = marks.get(Items, Items()).max_items

        def conv_seq(v: Any, path: str) -> Any:
            if not isinstance(v, (list, tuple)):
                raise WireError(f"expected a list, got {type(v).__name__}", path=path)
            if len(v) > limit:
                raise WireError(f"more than {limit} items", path=path)
            out = [item(x, f"{path}[{i}]") for i, x in enumerate(v)]
            return tuple(out) if decode else out

        return conv_seq
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        assert key_tp is str, "map keys are strings"
        key = _scalar(str, {type(marks.get(Keys, Keys()).marker): marks.get(Keys, Keys()).marker})
        val = _compile_type(val_tp, decode)
        limit = marks.get(Items, Items()).max_items

        def conv_map(v: Any, path: str) -> dict[str, Any]:
            if not isinstance(v, dict):
                raise WireError(f"expected a map, got {type(v).__name__}", path=path)
            if len(v) > limit:
                raise WireError(f"more than {limit} entries", path=path)
            out = {key(k, f"{path}.<key>"): val(x, f"{path}.{k}") for k, x in v.items()}
            # encoding sorts (canonical bytes); only after the keys are checked to be strings, so it cannot fail
            return out if decode else dict(sorted(out.items()))

        return conv_map
    if dataclasses.is_dataclass(tp):
        schema = compile_schema(tp)  # type: ignore[arg-type]
        return schema.from_plain if decode else schema.to_plain
    return _scalar(tp, marks)


class Schema:
    """The compiled converter pair for one dataclass."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls, include_extras=True)
        self._fields = [f for f in dataclasses.fields(cls) if f.init]
        self._dec = {f.name: _compile_type(hints[f.name], decode=True) for f in self._fields}
        self._enc = {f.name: _compile_type(hints[f.name], decode=False) for f in self._fields}
        self._defaults: dict[str, Any] = {
            f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc,operator]
            for f in self._fields
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
        self._required = {
            f.name
            for f in self._fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }

    def from_plain(self, data: Any, path: str = "") -> Any:
        if not isinstance(data, dict):
            raise WireError(f"expected a map, got {type(data).__name__}", path=path)
        kwargs: dict[str, Any] = {}
        for f in self._fields:
            fpath = f"{path}.{f.name}" if path else f.name
            if f.name in data:
                kwargs[f.name] = self._dec[f.name](data[f.name], fpath)
            elif f.name in self._required:
                raise WireError("required field is missing", path=fpath)
        # unknown keys are ignored on purpose: newer peers may add fields (forward compatibility)
        try:
            return self.cls(**kwargs)
        except WireError:
            raise
        except (TypeError, ValueError) as exc:  # a __post_init__ cross-field check
            raise WireError(str(exc), path=path) from None

    def to_plain(self, obj: Any, path: str = "", *, omit_defaults: bool = True) -> dict[str, Any]:
        """Validate and lower `obj`. With `omit_defaults`, fields equal to their default are left out (the
        decoder restores them), which keeps frequent messages such as heartbeats small."""
        if not isinstance(obj, self.cls):
            raise WireError(f"expected {self.cls.__name__}, got {type(obj).__name__}", path=path)
        out: dict[str, Any] = {}
        for f in self._fields:
            value = getattr(obj, f.name)
            if omit_defaults and f.name in self._defaults and value == self._defaults[f.name]:
                continue
            out[f.name] = self._enc[f.name](value, f"{path}.{f.name}" if path else f.name)
        return out


_SCHEMAS: dict[type, Schema] = {}


def compile_schema(cls: type) -> Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = Schema(cls)
    return schema
