"""docs/spec.md is the workload schema, generated (`make docs`, scripts/gen_spec_doc.py over coordinator/spec_doc.py).

A schema change without regenerating fails here; so does a field the document leaves out, one with no description
or no example. The field list is taken from the JSON Schema the coordinator serves (`workload_json_schema`), walked
independently of the generator, so a generator that skipped a field would be caught too."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from coordinator import spec_doc
from coordinator.spec import workload_json_schema
from coordinator.spec_kinds import Checked, Int, ListOf, Obj, Str, spec_field

REPO = Path(__file__).resolve().parents[1]
SPEC_MD = REPO / "docs" / "spec.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_spec_doc", REPO / "scripts" / "gen_spec_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spec_md_is_up_to_date_with_the_schema() -> None:
    gen = _generator()
    assert SPEC_MD.read_text(encoding="utf-8") == gen.generate(), (
        "docs/spec.md is out of date with the workload schema (coordinator/spec*.py) or examples/: run `make docs` "
        "and commit docs/spec.md")


def _schema_paths(node: dict[str, Any], defs: dict[str, Any], prefix: str, seen: tuple[str, ...]) -> Iterator[str]:
    """Every property path in a JSON Schema, following $ref, array items and map values (`[]`, `.*`)."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            return
        node, seen = defs[name], (*seen, name)
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        yield from _schema_paths(sub, defs, path, seen)
    if isinstance(node.get("items"), dict):
        yield from _schema_paths(node["items"], defs, f"{prefix}[]", seen)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_paths(node["additionalProperties"], defs, f"{prefix}.*", seen)
    for branch in node.get("anyOf", []):
        yield from _schema_paths(branch, defs, prefix, seen)


def test_every_schema_field_has_a_row() -> None:
    schema = workload_json_schema()
    paths = sorted(set(_schema_paths(schema, schema["$defs"], "", ())))
    assert len(paths) > 100  # the walk found the schema (a probe alone has 8 fields, at two paths)
    rows = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", SPEC_MD.read_text(encoding="utf-8"), re.M)}
    missing = [p for p in paths if p not in rows]
    assert not missing, f"fields of the workload schema without a row in docs/spec.md: {missing}; run `make docs`"
    assert {f.path for f in spec_doc.fields()} == set(paths)


def test_every_field_has_a_description_and_an_example() -> None:
    gen = _generator()
    assert spec_doc.missing_descriptions(gen.comments()) == [], (
        "describe each of these fields with a `#` comment on the line(s) directly above it in its dataclass "
        "(or in coordinator/spec_descriptions.py), then run `make docs`")
    assert spec_doc.missing_examples(gen.documents()) == [], (
        "set these fields in an example under examples/ (or give their string kind's `what` an example in "
        "coordinator/spec_descriptions.STRING_EXAMPLES), then run `make docs`")


# ---- the generator picks up fields it has never seen --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Backend(Checked):
    """Where traffic goes."""

    # the port behind the service
    target_port: int = field(metadata=spec_field(Int(1, 65535)))
    weights: tuple[int, ...] = field(default=(), metadata=spec_field(ListOf(Int(0, 100), 4)))


@dataclass(frozen=True, slots=True)
class _Service(Checked):
    """A made-up block, standing in for one a later change adds to the spec."""

    # how clients find it
    dns_name: str = field(default="svc", metadata=spec_field(Str(63, 1, r"[a-z]+", "dns label")))
    backends: tuple[_Backend, ...] = field(default=(), metadata=spec_field(ListOf(Obj(_Backend))))


_SOURCE = '''
class _Backend(Checked):
    # the port behind the service
    target_port: int = field(metadata=spec_field(Int(1, 65535)))
    weights: tuple[int, ...] = ()

class _Service(Checked):
    # how clients find it
    dns_name: str = "svc"
'''


def test_new_fields_appear_with_their_comments_and_are_reported_when_undescribed() -> None:
    comments = spec_doc.field_comments(_SOURCE)
    assert comments == {"_Backend.target_port": "The port behind the service",
                        "_Service.dns_name": "How clients find it"}
    docs = [("examples/svc.yaml", {"backends": [{"targetPort": 8080}]})]
    rows = {f.path: f for f in spec_doc.fields(_Service)}
    assert list(rows) == ["dnsName", "backends", "backends[].targetPort", "backends[].weights"]
    text = spec_doc.render(comments, docs, root=_Service)
    assert "| `dnsName` | string | `svc` | 1 to 63 characters; dns label | How clients find it |  |" in text
    assert ("| `backends[].targetPort` | integer | **required** | 1 to 65535 | The port behind the service | "
            "`8080` ([examples/svc.yaml](../examples/svc.yaml)) |") in text
    # undescribed (no comment, not in DESCRIPTIONS) and without an example for a string kind nobody knows
    assert spec_doc.missing_descriptions(comments, _Service) == [
        "_Backend.weights (at backends[].weights)", "_Service.backends (at backends)"]
    assert spec_doc.missing_examples([], _Service) == ["dnsName"]  # the numbers get one derived from their range


def test_example_values_read_back_as_written() -> None:
    """Strings YAML would read as something else (`yes` is a boolean in YAML 1.1, `8080` a number) are quoted."""
    docs = [("examples/svc.yaml", {"dnsName": "yes", "backends": [{"targetPort": 8080, "weights": [1, 2]}]})]
    text = spec_doc.render({}, docs, root=_Service)
    assert '| `"yes"` ([examples/svc.yaml]' in text
    assert "| `[1, 2]` ([examples/svc.yaml]" in text
    docs = [("examples/svc.yaml", {"dnsName": "8080"})]
    assert '| `"8080"` ([examples/svc.yaml]' in spec_doc.render({}, docs, root=_Service)


def test_example_files_are_listed_with_their_header_sentence() -> None:
    text = "# Volumes: scratch space. More words\n# on two lines.\napiVersion: cloudless/v1\n# not header\n"
    assert spec_doc.header_summary(text) == "Volumes: scratch space."
    assert spec_doc.header_summary("apiVersion: cloudless/v1\n") == ""
    docs = [("examples/svc.yaml", {"metadata": {"name": "svc"}})]
    out = spec_doc.render({}, docs, summaries={"examples/svc.yaml": "Volumes: scratch space."}, root=_Service)
    assert "- [examples/svc.yaml](../examples/svc.yaml) — workload `svc`: Volumes: scratch space." in out
