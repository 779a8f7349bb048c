"""`cloudless apply` and `cloudless delete`: reading Workload documents from -f files (YAML or JSON), sending
them, deleting workloads (and gone nodes), and `delete --wait`.

`read_documents` and `load_documents` are shared with `cloudless policy check`, which reads files the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudless.client import ApiError, JSONObject
from cloudless.ctl.core import (
    Ctx,
    UsageError,
    add_command,
    check_name,
    kind_in,
    namespace_arg,
    report,
    require_yaml,
    timeout_arg,
    valid_name,
    wait_until,
    workload_ref,
)

if TYPE_CHECKING:
    from cloudless.ctl.core import Sub


def load_documents(text: str, source: str) -> list[Any]:
    """Documents of a YAML (several, `---`-separated) or JSON (an object or a list of objects) file."""
    looks_json = source.endswith(".json") or text.lstrip().startswith(("{", "["))
    if looks_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if source.endswith(".json"):
                raise UsageError(f"{source}: invalid JSON: {exc.msg} (line {exc.lineno})") from None
        else:
            return data if isinstance(data, list) else [data]
    yaml = require_yaml(f"reading YAML from {source}")
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}: invalid YAML: {problem}{where}") from None


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # "web.yaml", or "web.yaml#2" when the file holds several
    namespace: str
    name: str
    body: JSONObject


def read_documents(paths: Sequence[str], namespace: str | None) -> list[Document]:
    """Every document of every -f file, checked enough to address it; `namespace` fills in a missing one."""
    out: list[Document] = []
    for path in paths:
        source = "<stdin>" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-f {path}: {exc.strerror or exc}") from None
        docs = load_documents(text, source)
        if not docs:
            raise UsageError(f"{source} holds no documents")
        for i, doc in enumerate(docs, 1):
            out.append(_document(doc, f"{source}#{i}" if len(docs) > 1 else source, namespace))
    return out


def _document(doc: object, source: str, namespace: str | None) -> Document:
    if not isinstance(doc, dict):
        raise UsageError(f"{source}: expected a mapping (apiVersion, kind, metadata, spec), got {type(doc).__name__}")
    if doc.get("kind") != "Workload":
        raise UsageError(f"{source}: kind {doc.get('kind')!r} is not supported; only kind: Workload")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise UsageError(f"{source}: metadata.name is required")
    name = check_name(meta["name"], f"{source}: metadata.name")
    doc_ns = meta.get("namespace")
    if doc_ns is not None and not isinstance(doc_ns, str):
        raise UsageError(f"{source}: metadata.namespace must be a string")
    if doc_ns and namespace and doc_ns != namespace:
        raise UsageError(f"{source}: metadata.namespace is {doc_ns!r} but -n says {namespace!r}")
    ns = check_name(doc_ns or namespace or "default", f"{source}: metadata.namespace")
    body = doc if doc_ns or not namespace else {**doc, "metadata": {**meta, "namespace": namespace}}
    return Document(source, ns, name, body)


def cmd_apply(args: argparse.Namespace, ctx: Ctx) -> int:
    failed = 0
    for doc in read_documents(args.filename, args.namespace):
        try:
            result = ctx.api.apply_workload(doc.body)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            report(ctx, exc, prefix=f"{doc.source} ({workload_ref(doc.namespace, doc.name)}): ")
            failed += 1
            continue
        for warning in result.warnings:  # admitted, but the policy has something to say (kubectl's wording)
            ctx.err(f"Warning: {workload_ref(doc.namespace, doc.name)}: {warning}")
        ctx.out(f"workload/{doc.name} {result.verb}")
    return 1 if failed else 0


def cmd_delete(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.filename and (args.kind or args.name):
        raise UsageError("give either `workload NAME` or -f FILE, not both")
    if args.kind == "node" and args.name and not args.filename:
        try:
            ctx.api.delete_node(args.name)
        except ApiError as exc:
            if exc.status == 404 and args.ignore_not_found:
                return 0
            raise
        ctx.out(f"node/{args.name} deleted")
        return 0
    if args.filename:
        targets = [(d.namespace, d.name) for d in read_documents(args.filename, args.namespace)]
    elif args.kind and args.name:
        targets = [(ctx.namespace, args.name)]
    else:
        raise UsageError("what to delete? `cloudless delete workload NAME`, `cloudless delete node ID` or "
                         "`cloudless delete -f FILE`")
    failed = 0
    for ns, name in targets:
        try:
            wl = ctx.api.delete_workload(ns, name)
        except ApiError as exc:
            if exc.status == 404 and args.ignore_not_found:
                continue
            if exc.status in (401, 403) or not args.filename:
                raise
            report(ctx, exc, prefix=f"{workload_ref(ns, name)}: ")
            failed += 1
            continue
        stopping = len((wl.get("status") or {}).get("replicas") or [])
        ctx.out(f"workload/{name} deleted" + (f" ({stopping} replicas stopping)" if stopping else ""))
        if args.wait and not _wait_gone(ctx, ns, name, args.timeout):
            failed += 1
    return 1 if failed else 0


def _wait_gone(ctx: Ctx, ns: str, name: str, timeout: float) -> bool:
    def poll() -> tuple[str | None, bool]:
        try:
            wl = ctx.api.get_workload(ns, name)
        except ApiError as exc:
            if exc.status == 404:
                return None, True
            raise
        left = len((wl.get("status") or {}).get("replicas") or [])
        return f"waiting for {workload_ref(ns, name)} to go away: {left} replicas still stopping", False
    if wait_until(ctx, poll, timeout):
        return True
    report(ctx, UsageError(f"{workload_ref(ns, name)} still exists after {timeout:g}s",
                           hint=f"the coordinator keeps stopping it; check `cloudless describe workload {name}`"))
    return False


# ---- parser ---------------------------------------------------------------------------------------------------

def add_apply_delete(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = add_command(sub, "apply", conn, func=cmd_apply, help="create or update workloads from YAML/JSON files",
                    description="Send each Workload document of the files to the coordinator (PUT): it is created, "
                    "configured (changed) or unchanged. A YAML file may hold several documents separated by `---`; "
                    "a JSON file an object or a list of objects. Every document is checked before the first is sent.",
                    examples="  cloudless apply -f web.yaml\n  cloudless apply -f web.yaml -f db.yaml -n staging\n"
                    "  cat web.json | cloudless apply -f -")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="YAML or JSON file, or - for standard input (repeatable)")
    namespace_arg(p)
    p = add_command(sub, "delete", conn, func=cmd_delete, help="delete a workload (its replicas stop) or a gone node",
                    description="Delete workloads, named or from the files that created them. The coordinator stops "
                    "their replicas; --wait waits until they are gone. `delete node ID` forgets a node that is offline "
                    "or lost and holds no replicas (its presence, dashboard mirror and Home Assistant entities are "
                    "removed); an online node is refused: stop its agent or revoke it first.",
                    examples="  cloudless delete workload web\n  cloudless delete -f web.yaml --wait\n"
                    "  cloudless delete node old-pi")
    p.add_argument("kind", nargs="?", type=kind_in("workload", "node"), metavar="{workload,node}")
    p.add_argument("name", nargs="?", type=valid_name, metavar="NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE", help="delete the workloads in FILE")
    namespace_arg(p)
    p.add_argument("--ignore-not-found", action="store_true", help="a workload or node that does not exist is no error")
    p.add_argument("--wait", action="store_true", help="wait until the workload and its replicas are gone")
    timeout_arg(p, "--wait")
