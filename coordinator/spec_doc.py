"""The workload spec reference (`docs/spec.md`), generated from the parser's own field tables.

The same tables `coordinator.spec` parses with and `workload_json_schema()` (and so `/openapi.json`) is built
from are walked here, from `Workload` down: every field gets a row with its full document path
(`spec.ports[].containerPort`), its type, default, constraints and description, and an example. A field added to
any spec dataclass shows up on the next `make docs` with no list to edit; `tests/test_spec_doc.py` fails until
the file is regenerated.

Where each column comes from:
- path, type, default, constraints: the field's kind (`coordinator.spec_kinds`) and its dataclass default,
  written in document form (`kind.dump`), so a default reads as it would be written in YAML.
- description: the `#` comment directly above the field in its dataclass (the code's own word), else
  `coordinator.spec_descriptions.DESCRIPTIONS` (keyed `Class.key`). Cross-field rules live in each object's
  docstring, shown above its table. A field with neither is reported by `missing_descriptions()` (the test
  names it).
- example: the value the first file under `examples/` that sets the field gives it (with a link), else one
  derived from the kind (`_kind_example`): an enum's first non-default value, a number in range, a string from
  `spec_descriptions.STRING_EXAMPLES` (keyed by the string kind's `what`). `missing_examples()` names a field
  with neither. Each object's section also shows it as the first example file that has one writes it.

Pure: the caller reads the spec modules' source text (for the comments) and the example documents and passes
them in; `scripts/gen_spec_doc.py` is the adapter that does, and writes the file.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from coordinator.spec import API_VERSION, Workload
from coordinator.spec_descriptions import DESCRIPTIONS, STRING_EXAMPLES
from coordinator.spec_kinds import (
    Amount,
    Bool,
    Choice,
    Const,
    Int,
    Invalid,
    Kind,
    ListOf,
    MapOf,
    Num,
    Obj,
    Quantity,
    Str,
    field_table,
)

__all__ = [
    "DESCRIPTIONS",
    "STRING_EXAMPLES",
    "Example",
    "FieldDoc",
    "field_comments",
    "header_summary",
    "fields",
    "missing_descriptions",
    "missing_examples",
    "render",
    "spec_classes",
]

GENERATED_BY: Final = "scripts/gen_spec_doc.py"

@dataclass(frozen=True, slots=True)
class Example:
    """A value for a field: from an example file (`source` set) or derived from the field's kind."""

    value: object
    source: str = ""


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One row of the reference: a field at its full document path (`[]` marks a list item)."""

    path: str
    owner: type[Any]  # the dataclass declaring the field
    key: str
    attr: str
    kind: Kind
    required: bool
    default: object  # the default in document form; `_UNSET` when required or unset (None)

    @property
    def ref(self) -> str:
        return f"{self.owner.__name__}.{self.key}"

    @property
    def parent(self) -> str:
        return self.path.rpartition(".")[0]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


def _object_of(kind: Kind) -> type[Any] | None:
    """The dataclass a kind's values are objects of (through lists and maps), if any."""
    match kind:
        case Obj(cls=cls):
            return cls
        case ListOf(item=item):
            return _object_of(item)
        case MapOf(value=value):
            return _object_of(value)
    return None


def _child_path(path: str, kind: Kind) -> str:
    match kind:
        case ListOf(item=item):
            return _child_path(f"{path}[]", item)
        case MapOf(value=value):
            return _child_path(f"{path}.*", value)
    return path


def fields(root: type[Any] = Workload) -> list[FieldDoc]:
    """Every field under `root`, depth first in table order (the order people write documents in)."""
    out: list[FieldDoc] = []

    def walk(cls: type[Any], prefix: str, seen: tuple[type[Any], ...]) -> None:
        for row in field_table(cls):
            path = f"{prefix}.{row.key}" if prefix else row.key
            raw = row.default()
            default = _UNSET if row.required or raw is None or isinstance(raw, Invalid) else row.kind.dump(raw)
            out.append(FieldDoc(path, cls, row.key, row.attr, row.kind, row.required, default))
            child = _object_of(row.kind)
            if child is not None and child not in seen:  # a recursive schema is documented once
                walk(child, _child_path(path, row.kind), (*seen, child))

    walk(root, "", (root,))
    return out


def spec_classes(root: type[Any] = Workload) -> list[type[Any]]:
    """The dataclasses the schema is made of (whose modules' source the comments come from)."""
    seen: list[type[Any]] = [root]
    for f in fields(root):
        child = _object_of(f.kind)
        if child is not None and child not in seen:
            seen.append(child)
    return seen


def field_comments(source: str) -> dict[str, str]:
    """`Class.attr` -> the `#` comment lines directly above that field's line in `source` (a module's text)."""
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: list[str] = []
            i = stmt.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#") and not lines[i].strip().startswith("# ---"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            if above:
                text = " ".join(above)
                out[f"{node.name}.{stmt.target.id}"] = text[0].upper() + text[1:]
    return out


def _description(f: FieldDoc, comments: Mapping[str, str]) -> str:
    return comments.get(f"{f.owner.__name__}.{f.attr}") or DESCRIPTIONS.get(f.ref, "")


def missing_descriptions(comments: Mapping[str, str], root: type[Any] = Workload) -> list[str]:
    """Fields (`Class.key` at a path) that have no description."""
    return sorted({f"{f.ref} (at {f.path})" for f in fields(root) if not _description(f, comments)})


# ---- examples --------------------------------------------------------------------------------------------


def _values_at(doc: object, parts: Sequence[str]) -> Iterator[object]:
    """Every value at a path of `_child_path` parts in a document (`[]` walks every item, `*` every entry)."""
    if not parts:
        yield doc
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        items = doc.get(head[:-2]) if isinstance(doc, dict) else None
        for item in items if isinstance(items, list) else []:
            yield from _values_at(item, rest)
    elif head == "*":
        for value in doc.values() if isinstance(doc, dict) else []:
            yield from _values_at(value, rest)
    elif isinstance(doc, dict) and head in doc:
        yield from _values_at(doc[head], rest)


def _file_example(f: FieldDoc, documents: Sequence[tuple[str, object]]) -> Example | None:
    return _first_at(f.path, documents)


def _richest_at(path: str, documents: Sequence[tuple[str, object]]) -> Example | None:
    """The object at `path` with the most keys in any example document (the first of those), to show a section."""
    parts = [p for p in path.split(".") if p]
    found = [Example(v, source) for source, doc in documents for v in _values_at(doc, parts)]
    return max(found, key=lambda e: len(e.value) if isinstance(e.value, dict) else 0, default=None)


def _first_at(path: str, documents: Sequence[tuple[str, object]]) -> Example | None:
    """The first value any example document has at `path` (`a[].b`: key b of any item of list a)."""
    parts = [p for p in path.split(".") if p]
    for source, doc in documents:
        for value in _values_at(doc, parts):
            return Example(value, source)
    return None


def _kind_example(kind: Kind, default: object) -> object:
    """A value of `kind` that is not its default, or `_UNSET` when none can be derived."""
    match kind:
        case Choice(enum=enum):
            values = [m.value for m in enum if m.value != default] or [m.value for m in enum]
            return values[0]
        case Const(value=value):
            return value
        case Bool():
            return default is not True
        case Int(lo=lo, hi=hi):
            return _number_example(lo, hi, default)
        case Num(lo=lo, hi=hi):
            return _number_example(lo, hi, default)
        case Quantity(resource=resource):
            return "250m" if resource == "cpu" else "64Mi"
        case Amount():
            return "25%" if default != "25%" else 1
        case Str(what=what):
            return STRING_EXAMPLES.get(what, _UNSET)
        case ListOf(item=item) if not isinstance(item, Obj):
            one = _kind_example(item, _UNSET)
            return _UNSET if one is _UNSET else [one]
        case MapOf(key=key, value=value) if not isinstance(value, Obj):
            k, v = _kind_example(key, _UNSET), _kind_example(value, _UNSET)
            return _UNSET if _UNSET in (k, v) else {k: v}
    return _UNSET


def _number_example(lo: float, hi: float, default: object) -> object:
    for candidate in (1, 5, 30, lo, hi):
        if lo <= candidate <= hi and candidate != default:
            return int(candidate) if float(candidate).is_integer() else candidate
    return lo


def _example(f: FieldDoc, documents: Sequence[tuple[str, object]]) -> Example | None:
    if _object_of(f.kind) is not None:
        return None  # an object is shown by its own section's example and its fields' examples
    found = _file_example(f, documents)
    if found is not None:
        return found
    derived = _kind_example(f.kind, f.default)
    return None if derived is _UNSET else Example(derived)


def missing_examples(documents: Sequence[tuple[str, object]], root: type[Any] = Workload) -> list[str]:
    """Leaf fields (not objects) with no example from the example files and none derivable from their kind."""
    return [f.path for f in fields(root) if _object_of(f.kind) is None and _example(f, documents) is None]


# ---- rendering -------------------------------------------------------------------------------------------


def _flow(value: object) -> str:
    """A value as YAML flow text: JSON (valid YAML flow) with strings unquoted where YAML reads them back as the
    same string (`yes`, `8080`, `null` stay quoted)."""
    if isinstance(value, str):
        plain = bool(value) and all(c.isalnum() or c in "-_/.%" for c in value)
        return value if plain and yaml.safe_load(f"[{value}]") == [value] else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def _type(kind: Kind) -> str:
    match kind:
        case Str():
            return "string"
        case Int():
            return "integer"
        case Num():
            return "number"
        case Bool():
            return "boolean"
        case Choice():
            return "string (enum)"
        case Const():
            return "string (constant)"
        case Quantity(resource=resource):
            return f"{resource} quantity"
        case Amount():
            return "integer or percentage"
        case ListOf(item=item):
            return f"list of {_type(item)}"
        case MapOf(key=key, value=value):
            return f"map of {_type(key)} to {_type(value)}"
        case Obj(cls=cls):
            return f"object ({cls.__name__})"
    return type(kind).__name__


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _constraints(kind: Kind) -> list[str]:
    match kind:
        case Str(max_len=max_len, min_len=min_len, pattern=pattern, what=what):
            out = [f"{min_len or 0} to {max_len} characters"]
            if pattern:
                out.append(f"{what}: `{pattern}`" if what == "value" else what)
            return out
        case Int(lo=lo, hi=hi) | Num(lo=lo, hi=hi):
            return [f"{_number(lo)} to {_number(hi)}"]
        case Choice(enum=enum):
            return ["one of " + ", ".join(f"`{_flow(m.value) if m.value else chr(34) * 2}`" for m in enum)]
        case Const(value=value):
            return [f"must be `{value}`"]
        case Quantity(resource="cpu"):
            return ["cores (`2`, `0.5`) or millicores (`500m`)"]
        case Quantity():
            return ["bytes, or with a suffix: `Ki` `Mi` `Gi` `Ti` (1024) or `k` `M` `G` `T` (1000)"]
        case Amount(hi=hi):
            return [f"0 to {hi}, or a percentage `0%` to `100%` of `replicas`"]
        case ListOf(item=item, max_items=max_items, min_items=min_items):
            size = f"{min_items} to {max_items} items" if min_items else f"at most {max_items} items"
            inner = _constraints(item) if not isinstance(item, Obj) else []
            return [size, *(f"each: {c}" for c in inner)]
        case MapOf(key=key, value=value, max_items=max_items):
            keys = _constraints(key)
            values = _constraints(value) if not isinstance(value, Obj) else []
            return [f"at most {max_items} entries", *(f"keys: {c}" for c in keys[1:] or keys),
                    *(f"values: {c}" for c in values)]
    return []


def _anchor(text: str) -> str:
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _example_cell(example: Example | None, link_prefix: str) -> str:
    if example is None:
        return ""
    text = f"`{_cell(_flow(example.value))}`"
    if len(text) > 90:
        text = text[:86] + "…`"
    return f"{text} ([{example.source}]({link_prefix}{example.source}))" if example.source else text


def _default_cell(f: FieldDoc) -> str:
    if f.required:
        return "**required**"
    if f.default is _UNSET:
        return "unset"
    if f.default in ({}, []) and _object_of(f.kind) is not None:
        return "`{}`" if isinstance(f.kind, Obj) else "`[]`"
    return f"`{_cell(_flow(f.default))}`" if f.default != "" else '`""`'


def render(comments: Mapping[str, str], documents: Sequence[tuple[str, object]], *,
           summaries: Mapping[str, str] | None = None, link_prefix: str = "../", root: type[Any] = Workload) -> str:
    """docs/spec.md. `comments`: `field_comments` of the spec modules; `documents`: (path, parsed YAML) of the
    example files, in the order they are searched; `summaries`: what each example file is (its header's first
    sentence); links to them get `link_prefix`."""
    rows = fields(root)
    out = [
        f"# Workload spec reference (`{API_VERSION}`)",
        "",
        f"<!-- Generated by `make docs` ({GENERATED_BY}) from the field tables the coordinator parses with "
        "(coordinator/spec*.py). Do not edit by hand: tests/test_spec_doc.py fails when this file is out of date. -->",
        "",
        "A workload document is YAML (or JSON) with `apiVersion`, `kind`, `metadata` and `spec`. The coordinator "
        "checks every key: an unknown or misspelled key, a wrong type, an out-of-range number or a `null` is an "
        "error naming the field's path, and all problems are reported at once. An absent key takes its default. "
        "`cloudless apply -f FILE` sends a document; `cloudless policy check -f FILE` shows what the admission "
        "policy says about it without applying. The same schema is served as JSON Schema inside `/openapi.json` "
        "(`components.schemas.Workload`).",
        "",
        "Paths use `[]` for \"every item of a list\". **Example** values come from the files under "
        "[examples/](../examples/) where one sets the field; the others are typical values.",
        "",
        "## Contents",
        "",
    ]
    objects = _objects(rows, root)
    out += [f"- [`{path or '(document)'}`](#{_anchor(path or 'document')}) — {cls.__name__}" for path, cls in objects]
    out.append("")
    for path, cls in objects:
        out += _object_section(path, cls, [r for r in rows if r.parent == path and r.owner is cls],
                               comments=comments, documents=documents, link_prefix=link_prefix)
    out += _examples_section(documents, summaries or {}, link_prefix)
    return "\n".join(out).rstrip() + "\n"


def _objects(rows: Sequence[FieldDoc], root: type[Any]) -> list[tuple[str, type[Any]]]:
    """(path, class) of every object in the document, in document order; a class reached at two paths (the
    probes) is documented at each."""
    out: list[tuple[str, type[Any]]] = [("", root)]
    for r in rows:
        cls = _object_of(r.kind)
        if cls is not None:
            out.append((_child_path(r.path, r.kind), cls))
    return out


def _object_section(path: str, cls: type[Any], rows: Sequence[FieldDoc], *, comments: Mapping[str, str],
                    documents: Sequence[tuple[str, object]], link_prefix: str) -> list[str]:
    title = f"`{path}`" if path else "The document"
    paragraphs = (cls.__doc__ or "").strip().split("\n\n")
    doc = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
    out = [f'<a id="{_anchor(path or "document")}"></a>', "", f"## {title}", "",
           f"*{cls.__name__}*: {doc}" if doc else f"*{cls.__name__}*", ""]
    out += _section_example(path, documents, link_prefix)
    out += ["| Field | Type | Default | Constraints | Description | Example |", "|---|---|---|---|---|---|"]
    for f in rows:
        constraints = "; ".join(_constraints(f.kind))
        kind = _cell(_type(f.kind))
        if _object_of(f.kind) is not None:
            kind = f"[{kind}](#{_anchor(_child_path(f.path, f.kind))})"
        out.append("| " + " | ".join([
            f"`{f.path}`", kind, _default_cell(f), _cell(constraints),
            _cell(_description(f, comments)), _example_cell(_example(f, documents), link_prefix),
        ]) + " |")
    out.append("")
    return out


def header_summary(text: str) -> str:
    """The first sentence of a YAML file's leading `#` comment block ("" without one)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines).strip()
    end = words.find(". ")
    return words if end < 0 else words[: end + 1]


def _section_example(path: str, documents: Sequence[tuple[str, object]], link_prefix: str) -> list[str]:
    """The object at `path` as the example file with the fullest one writes it, nested under its keys."""
    if not path:
        return []  # the whole document: see the Examples section
    found = _richest_at(path, documents)
    if found is None:
        return []
    nested: object = found.value
    for part in reversed(path.split(".")):
        nested = {part[:-2]: [nested]} if part.endswith("[]") else {part: nested}
    text = yaml.safe_dump(nested, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
    return [f"Example, from [{found.source}]({link_prefix}{found.source}):", "", "```yaml", text.rstrip(), "```", ""]


def _examples_section(documents: Sequence[tuple[str, object]], summaries: Mapping[str, str],
                      link_prefix: str) -> list[str]:
    files = sorted({source for source, _ in documents})
    if not files:
        return []
    out = ["## Examples", "", "Each file is a complete workload that the default admission policy admits "
           "(tests/test_examples.py parses every one with the coordinator's parser and policy):", ""]
    for source in files:
        names = [d.get("metadata", {}).get("name", "?") for s, d in documents if s == source and isinstance(d, dict)]
        about = f": {summaries[source]}" if summaries.get(source) else ""
        out.append(f"- [{source}]({link_prefix}{source}) — workload `{', '.join(names)}`{about}")
    out.append("")
    return out
