"""Spec kinds: a small typed-schema library for documents parsed from YAML/JSON into frozen dataclasses.

A `Kind` says how one document value is parsed (`parse`: checked and converted), written back (`dump`: the
canonical form) and described (`schema`: JSON Schema, draft 2020-12). Scalars (`Str`, `Int`, `Num`, `Bool`,
`Choice`, `Const`, `Quantity`, `Amount`) and containers (`ListOf`, `MapOf`, `Obj`) compose. An object is a
frozen dataclass whose fields carry their kind in `dataclasses.field(metadata=spec_field(...))`, with the
document key (camelCase, derived from the attribute name unless given); `field_table` reads that table once per
class and `Obj` walks it to parse, dump and describe the object, so parser, writer and schema cannot drift.

Parsing does not stop at the first error: every kind appends (field path, message) pairs such as
`("spec.ports[1].containerPort", ...)` to one `Problems` list and returns the `INVALID` marker for a bad value.
Unknown or misspelled keys are errors (with a difflib suggestion), never silently dropped. After `Obj` builds a
dataclass it adds the object's cross-field rules from its `_problems()` method (see `Checked`). `null` is
rejected like any other wrong type: an absent key means "use the default".

Nothing here knows about workloads: `coordinator/spec.py` uses it for the workload schema (and
`coordinator/policy.py` for policy documents). Pure: no I/O, no clocks.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from broker.wire.schema import text_problem
from firmware_profiles import units as quantity
from firmware_profiles.errors import QuantityError

__all__ = [
    "INVALID",
    "Amount",
    "Bool",
    "Checked",
    "Choice",
    "Const",
    "Int",
    "IntOrPercent",
    "Invalid",
    "Kind",
    "ListOf",
    "MapOf",
    "Num",
    "Obj",
    "Problems",
    "Quantity",
    "Str",
    "TableField",
    "field_table",
    "spec_field",
]

Problems = list[tuple[str, str]]


class Invalid:
    """Marker returned by a Kind whose value was bad (the problem is already recorded)."""


INVALID: Final = Invalid()


def _type_name(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case list() | tuple():
            return "array"
        case dict():
            return "object"
    return type(value).__name__


def _bad(problems: Problems, path: str, message: str) -> Invalid:
    problems.append((path, message))
    return INVALID


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


class Kind:
    """How one document value is validated (`parse`), written back (`dump`) and described (`schema`)."""

    __slots__ = ()

    def parse(self, value: object, path: str, problems: Problems) -> object:
        raise NotImplementedError

    def dump(self, value: Any) -> object:
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Str(Kind):
    max_len: int = 256
    min_len: int = 0
    pattern: str = ""  # matched in full; written to JSON Schema anchored, so keep to the ECMA-262 subset
    what: str = "value"

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if not isinstance(value, str):
            return _bad(problems, path, f"expected string, got {_type_name(value)}")
        if len(value) < self.min_len:
            return _bad(problems, path, "must not be empty" if self.min_len == 1 else f"shorter than {self.min_len}")
        if len(value) > self.max_len:
            return _bad(problems, path, f"too long: {len(value)} characters, at most {self.max_len}")
        if (why := text_problem(value)) is not None:  # the wire's rule: a document accepted here must be sendable
            return _bad(problems, path, why)
        if self.pattern and re.fullmatch(self.pattern, value) is None:
            return _bad(problems, path, f"invalid {self.what}: {value[:80]!r}")
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "maxLength": self.max_len}
        if self.min_len:
            out["minLength"] = self.min_len
        # no NUL, as the wire requires (lone surrogates cannot be said in a JSON Schema; the parser refuses them)
        out["pattern"] = f"^(?![\\s\\S]*\\u0000)(?:{self.pattern})$" if self.pattern else "^[^\\u0000]*$"
        return out


@dataclass(frozen=True, slots=True)
class Int(Kind):
    lo: int
    hi: int

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if isinstance(value, float) and value.is_integer():  # JSON Schema's "integer" admits 3.0
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return _bad(problems, path, f"expected integer, got {_type_name(value)}")
        if not self.lo <= value <= self.hi:
            return _bad(problems, path, f"must be between {self.lo} and {self.hi}, got {value}")
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True, slots=True)
class Num(Kind):
    lo: float
    hi: float

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return _bad(problems, path, f"expected number, got {_type_name(value)}")
        if not self.lo <= value <= self.hi:
            return _bad(problems, path, f"must be between {self.lo:g} and {self.hi:g}, got {value}")
        return float(value)

    def dump(self, value: Any) -> object:
        return int(value) if float(value).is_integer() else value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "number", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True, slots=True)
class Bool(Kind):
    def parse(self, value: object, path: str, problems: Problems) -> object:
        if not isinstance(value, bool):
            return _bad(problems, path, f"expected boolean, got {_type_name(value)}")
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Choice(Kind):
    enum: type[StrEnum]

    def parse(self, value: object, path: str, problems: Problems) -> object:
        allowed = [m.value for m in self.enum]
        if not isinstance(value, str) or value not in allowed:
            shown = ", ".join(json.dumps(a) for a in allowed)
            got = json.dumps(value) if isinstance(value, str) else _type_name(value)
            hint = _suggest(value, allowed) if isinstance(value, str) else ""
            return _bad(problems, path, f"must be one of {shown}; got {got}{hint}")
        return self.enum(value)

    def dump(self, value: Any) -> object:
        return str(value)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "enum": [m.value for m in self.enum]}


@dataclass(frozen=True, slots=True)
class Const(Kind):
    value: str

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if value != self.value:
            return _bad(problems, path, f"must be {json.dumps(self.value)}, got {json.dumps(value, default=str)}")
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"const": self.value}


@dataclass(frozen=True, slots=True)
class Quantity(Kind):
    """CPU (-> millicores) or memory (-> bytes); see `firmware_profiles.units`."""

    resource: str  # "cpu" | "memory"

    def parse(self, value: object, path: str, problems: Problems) -> object:
        try:
            return quantity.parse_cpu(value) if self.resource == "cpu" else quantity.parse_memory(value)
        except QuantityError as exc:
            return _bad(problems, path, str(exc))

    def dump(self, value: Any) -> object:
        return quantity.format_cpu(value) if self.resource == "cpu" else quantity.format_memory(value)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        pattern = quantity.CPU_PATTERN if self.resource == "cpu" else quantity.MEMORY_PATTERN
        return {"anyOf": [{"type": "string", "pattern": f"^(?:{pattern})$"}, {"type": "number", "minimum": 0}]}


@dataclass(frozen=True, slots=True)
class IntOrPercent:
    """A count (`2`) or a percentage of the replica count (`"25%"`), like Kubernetes' IntOrString."""

    value: int
    percent: bool = False

    def resolve(self, total: int, *, round_up: bool) -> int:
        if not self.percent:
            return self.value
        scaled = self.value * total
        return -(-scaled // 100) if round_up else scaled // 100

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


_PERCENT = r"(?:[0-9]{1,2}|100)%"


# the most replicas one workload may ask for (issue 17: a fleet of 5,000 nodes runs workloads of thousands); a
# node's share is bounded apart from this, by what one desired-state message carries (scheduler.filters)
MAX_REPLICAS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Amount(Kind):
    """Kind for `IntOrPercent`: an integer in [0, hi] or a string "N%" with N in [0, 100]."""

    hi: int = MAX_REPLICAS

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if isinstance(value, str):
            m = re.fullmatch(_PERCENT, value)
            if m is None:
                return _bad(problems, path, f'expected an integer or a percentage like "25%", got {value[:40]!r}')
            return IntOrPercent(int(value[:-1]), percent=True)
        count = Int(0, self.hi).parse(value, path, problems)
        return IntOrPercent(count) if isinstance(count, int) else count

    def dump(self, value: Any) -> object:
        return str(value) if value.percent else value.value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        percent = {"type": "string", "pattern": f"^(?:{_PERCENT})$"}
        return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": self.hi}, percent]}


@dataclass(frozen=True, slots=True)
class ListOf(Kind):
    item: Kind
    max_items: int = 64
    min_items: int = 0

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if not isinstance(value, list):
            return _bad(problems, path, f"expected array, got {_type_name(value)}")
        if len(value) > self.max_items:
            return _bad(problems, path, f"too many items: {len(value)}, at most {self.max_items}")
        if len(value) < self.min_items:
            return _bad(problems, path, f"needs at least {self.min_items} item(s)")
        items = [self.item.parse(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return INVALID if any(isinstance(i, Invalid) for i in items) else tuple(items)

    def dump(self, value: Any) -> object:
        return [self.item.dump(v) for v in value]

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.item.schema(defs), "maxItems": self.max_items}
        if self.min_items:
            out["minItems"] = self.min_items
        return out


@dataclass(frozen=True, slots=True)
class MapOf(Kind):
    key: Str
    value: Kind
    max_items: int = 64

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if not isinstance(value, dict):
            return _bad(problems, path, f"expected object, got {_type_name(value)}")
        if len(value) > self.max_items:
            return _bad(problems, path, f"too many entries: {len(value)}, at most {self.max_items}")
        out: dict[str, object] = {}
        for k, v in value.items():
            sub = f"{path}[{json.dumps(k, default=str)}]"
            key, val = self.key.parse(k, sub, problems), self.value.parse(v, sub, problems)
            if not isinstance(key, Invalid) and not isinstance(val, Invalid):
                out[str(key)] = val
        return out if len(out) == len(value) else INVALID

    def dump(self, value: Any) -> object:
        return {k: self.value.dump(value[k]) for k in sorted(value)}

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        key_schema = {k: v for k, v in self.key.schema(defs).items() if k != "type"}
        return {
            "type": "object",
            "propertyNames": key_schema,
            "additionalProperties": self.value.schema(defs),
            "maxProperties": self.max_items,
        }


@dataclass(frozen=True, slots=True)
class TableField:
    """One row of an object's field table, derived from a dataclass field."""

    key: str
    attr: str
    kind: Kind
    required: bool
    default: Callable[[], object]


@dataclass(frozen=True, slots=True)
class Obj(Kind):
    """A nested object whose fields are described by the dataclass `cls` (see `spec_field`)."""

    cls: type[Any]

    def parse(self, value: object, path: str, problems: Problems) -> object:
        if not isinstance(value, dict):
            return _bad(problems, path, f"expected object, got {_type_name(value)}")
        table = field_table(self.cls)
        known = [f.key for f in table]
        before = len(problems)
        for key in value:
            if key not in known:
                shown = key if isinstance(key, str) else repr(key)
                hint = _suggest(key, known) if isinstance(key, str) else ""
                problems.append((_join(path, shown), f"unknown field{hint}"))
        kwargs: dict[str, object] = {}
        for f in table:
            if f.key in value:
                kwargs[f.attr] = f.kind.parse(value[f.key], _join(path, f.key), problems)
            elif f.required:
                problems.append((_join(path, f.key), "required field is missing"))
        if len(problems) > before:
            return INVALID
        obj = self.cls(**kwargs)
        problems.extend((_join(path, rel), msg) for rel, msg in obj._problems())
        return INVALID if len(problems) > before else obj

    def dump(self, value: Any) -> object:
        out: dict[str, object] = {}
        for f in field_table(self.cls):
            v = getattr(value, f.attr)
            if f.required or v != f.default():
                out[f.key] = f.kind.dump(v)
        return out

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        name = self.cls.__name__
        if name not in defs:
            defs[name] = {}  # reserve first: recursion-safe
            table = field_table(self.cls)
            body: dict[str, Any] = {
                "type": "object",
                "description": (self.cls.__doc__ or name).strip().splitlines()[0],
                "properties": {f.key: f.kind.schema(defs) for f in table},
                "additionalProperties": False,
            }
            required = [f.key for f in table if f.required]
            if required:
                body["required"] = required
            body.update(getattr(self.cls, "SCHEMA_EXTRA", {}))
            defs[name] = body
        return {"$ref": f"#/$defs/{name}"}


def _suggest(word: str, choices: list[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    match = lowered.get(word.lower()) or next(iter(difflib.get_close_matches(word, choices, n=1, cutoff=0.6)), None)
    return f" (did you mean {json.dumps(match)}?)" if match else ""


_META = "cloudless.spec"


def spec_field(kind: Kind, *, key: str = "", required: bool = False) -> dict[str, object]:
    """Field metadata: `field(default=..., metadata=spec_field(Int(0, 9)))`. A field without default is required."""
    return {_META: (kind, key, required)}


def _camel(attr: str) -> str:
    head, *rest = attr.split("_")
    return head + "".join(p.capitalize() for p in rest)


_TABLES: dict[type[Any], tuple[TableField, ...]] = {}


def field_table(cls: type[Any]) -> tuple[TableField, ...]:
    """The (cached) field table of a spec dataclass, in declaration order."""
    cached = _TABLES.get(cls)
    if cached is not None:
        return cached
    rows = []
    for f in dataclasses.fields(cls):
        kind, key, required = f.metadata[_META]
        if f.default is not dataclasses.MISSING:
            default: Callable[[], object] = functools.partial(lambda v: v, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        else:
            default, required = (lambda: INVALID), True
        rows.append(TableField(key or _camel(f.name), f.name, kind, required, default))
    _TABLES[cls] = table = tuple(rows)
    return table


class Checked:
    """Mixin: spec classes override `_problems` to report cross-field rules as (relative path, message)."""

    __slots__ = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        return iter(())
