"""A small JSON Schema (2020-12) validator for the subset `workload_json_schema()` uses.

Used when the `jsonschema` package is not installed; `validate()` prefers the real library when it is.
Returns the list of problems (empty = valid) so tests can assert on agreement with the parser.
"""

from __future__ import annotations

import re
from typing import Any


def validate(doc: Any, schema: dict[str, Any]) -> list[str]:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        return _check(doc, schema, schema, "")
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


def _check(v: Any, s: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    out: list[str] = []
    if "$ref" in s:
        name = s["$ref"].removeprefix("#/$defs/")
        out += _check(v, root["$defs"][name], root, at)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            return [*out, f"{at}: not {s['type']}"]
    if "const" in s and not _same(v, s["const"]):
        out.append(f"{at}: not const {s['const']!r}")
    if "enum" in s and not any(_same(v, e) for e in s["enum"]):
        out.append(f"{at}: not in enum")
    if isinstance(v, str):
        if len(v) > s.get("maxLength", 1 << 60) or len(v) < s.get("minLength", 0):
            out.append(f"{at}: length")
        if "pattern" in s and re.search(s["pattern"], v) is None:
            out.append(f"{at}: pattern {s['pattern']}")
    if _TYPES["number"](v) and not s.get("minimum", float("-inf")) <= v <= s.get("maximum", float("inf")):
        out.append(f"{at}: range")
    if isinstance(v, list):
        if len(v) > s.get("maxItems", 1 << 60) or len(v) < s.get("minItems", 0):
            out.append(f"{at}: item count")
        if "items" in s:
            for i, item in enumerate(v):
                out += _check(item, s["items"], root, f"{at}[{i}]")
    if isinstance(v, dict):
        out += _check_object(v, s, root, at)
    for sub in s.get("allOf", []):
        out += _check(v, sub, root, at)
    if "anyOf" in s and all(_check(v, sub, root, at) for sub in s["anyOf"]):
        out.append(f"{at}: anyOf")
    if "oneOf" in s and sum(not _check(v, sub, root, at) for sub in s["oneOf"]) != 1:
        out.append(f"{at}: oneOf")
    if "not" in s and not _check(v, s["not"], root, at):
        out.append(f"{at}: not")
    if "if" in s:
        branch = s.get("then") if not _check(v, s["if"], root, at) else s.get("else")
        if branch is not None:
            out += _check(v, branch, root, at)
    return out


def _check_object(v: dict[str, Any], s: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    out = [f"{at}.{k}: required" for k in s.get("required", []) if k not in v]
    if len(v) > s.get("maxProperties", 1 << 60):
        out.append(f"{at}: too many properties")
    props = s.get("properties", {})
    for k, item in v.items():
        if "propertyNames" in s:
            out += _check(k, {"type": "string", **s["propertyNames"]}, root, f"{at}.{k}")
        if k in props:
            out += _check(item, props[k], root, f"{at}.{k}")
        elif s.get("additionalProperties") is False:
            out.append(f"{at}.{k}: additional property")
        elif isinstance(s.get("additionalProperties"), dict):
            out += _check(item, s["additionalProperties"], root, f"{at}.{k}")
    return out


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b
