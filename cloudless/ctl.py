"""The admin commands: `cloudless apply|get|describe|delete|scale|rollout|logs|exec|cordon|uncordon|drain`.

A thin adapter over `cloudless.client` (HTTP) and `cloudless.render` (text). Each command validates its
arguments before any request (argparse types, then `UsageError`), resolves the server and token only when it
first needs them, and reports failures as `cloudless: error: ...` plus a `cloudless: hint: ...` line. Exit codes:
0 ok, 1 the operation failed (refused, unreachable, rollout failed, timed out), 2 usage or configuration error,
130 interrupted; `exec` exits with the remote command's code. Waits (rollout status, drain, delete --wait) print
progress on stderr; results go to stdout so scripts can parse them.

Never import aiohttp or the coordinator package here: admins run this CLI on machines that have neither.

Size: this file is past the style guide's ~600 lines because the CLI was scoped to three modules (client,
render, ctl). Its seams are marked by the section rules below; the natural split is a `cloudless/ctl/` package
with `documents` (apply/delete -f), `waits` (wait_until, watches), `commands` and `parsers`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from cloudless import render
from cloudless.client import (
    ApiError,
    ClientError,
    ConfigError,
    ConnectionFailed,
    CoordinatorClient,
    JSONObject,
    resolve_config,
)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_REPLICAS = 1000
POLL_INTERVAL_S = 1.0  # rollout status, drain and delete --wait
STILL_WAITING_S = 15.0  # repeat an unchanged progress line this often, so a long wait never looks hung
KINDS = {"node": "node", "nodes": "node", "no": "node", "workload": "workload", "workloads": "workload",
         "wl": "workload", "replica": "replica", "replicas": "replica", "event": "event", "events": "event",
         "ev": "event"}
ROLLBACK_PHASES = ("rolling-back", "rolled-back")


class Clock(Protocol):
    def time(self) -> float: ...
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


CLOCK: Clock = SystemClock()  # tests swap in a FakeClock: waits and ages without real time


class UsageError(Exception):
    """Bad arguments or input files, found before any request (exit 2)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


# ---- argument types -------------------------------------------------------------------------------------------

def check_name(value: str, what: str = "name") -> str:
    if not NAME_RE.fullmatch(value):
        raise UsageError(f"{what} {value!r} is invalid: use 1-63 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return value


def _name(text: str) -> str:
    try:
        return check_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value
    return parse


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h` or `1m30s` in seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s, 5m or 1h, got {text!r}")
    h, m, s = match.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def _duration_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_duration(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g}s and {high:g}s, got {text!r}")
        return value
    return parse


def _kind(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        kind = KINDS.get(text.lower())
        if kind not in allowed:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(allowed)}, got {text!r}")
        return kind
    return parse


# ---- context --------------------------------------------------------------------------------------------------

@dataclass
class Ctx:
    args: argparse.Namespace
    clock: Clock
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @cached_property
    def api(self) -> CoordinatorClient:
        cfg = resolve_config(server=self.args.server, token=self.args.token, config=self.args.config, env=self.env,
                             warn=self.warn)
        return CoordinatorClient(cfg.server, cfg.token, ca=cfg.ca)

    def out(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

    def err(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        self.err(f"cloudless: warning: {text}")

    @property
    def namespace(self) -> str:
        return str(getattr(self.args, "namespace", None) or "default")


def report(ctx: Ctx, exc: ClientError | UsageError, prefix: str = "") -> None:
    ctx.err(f"cloudless: error: {prefix}{exc.message}")
    if isinstance(exc, ApiError):
        if exc.field and not exc.errors and exc.field not in exc.message:
            ctx.err(f"  field: {exc.field}")
        for e in exc.errors:
            ctx.err(f"  {e.path}: {e.message}")
    if exc.hint:
        ctx.err(f"cloudless: hint: {exc.hint}")


Handler = Callable[[argparse.Namespace, Ctx], int]


def _command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        ctx = Ctx(args, CLOCK)
        try:
            return handler(args, ctx)
        except (UsageError, ConfigError) as exc:
            report(ctx, exc)
            return 2
        except ClientError as exc:
            report(ctx, exc)
            return 1
    return run


def require_yaml(why: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise UsageError(f"{why} needs PyYAML, which is not installed",
                         hint="`pip install pyyaml`, or use JSON (-o json, or a .json file)") from None
    return yaml


def _transient(exc: ClientError) -> bool:
    return isinstance(exc, ConnectionFailed) or (isinstance(exc, ApiError) and exc.status == 503)


def _ref(namespace: str, name: str) -> str:
    return f"workload/{name}" if namespace == "default" else f"workload/{namespace}/{name}"


# ---- apply / delete -f ----------------------------------------------------------------------------------------

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
            report(ctx, exc, prefix=f"{doc.source} ({_ref(doc.namespace, doc.name)}): ")
            failed += 1
            continue
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
            report(ctx, exc, prefix=f"{_ref(ns, name)}: ")
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
        return f"waiting for {_ref(ns, name)} to go away: {left} replicas still stopping", False
    if wait_until(ctx, poll, timeout):
        return True
    report(ctx, UsageError(f"{_ref(ns, name)} still exists after {timeout:g}s",
                           hint=f"the coordinator keeps stopping it; check `cloudless describe workload {name}`"))
    return False


def wait_until(ctx: Ctx, poll: Callable[[], tuple[str | None, bool]], timeout: float) -> bool:
    """Poll until `poll` says done; print each new progress line (and a reminder when it stalls) on stderr."""
    start = ctx.clock.monotonic()
    last, last_shown = None, start
    while True:
        try:
            line, done = poll()
        except ClientError as exc:
            if not _transient(exc):
                raise
            line, done = f"{exc.message}; retrying", False
        now = ctx.clock.monotonic()
        if line and (line != last or now - last_shown >= STILL_WAITING_S):
            ctx.err(line if line != last else f"{line} (still waiting, {now - start:.0f}s)")
            last, last_shown = line, now
        if done:
            return True
        if now - start >= timeout:
            return False
        ctx.clock.sleep(min(POLL_INTERVAL_S, max(0.0, timeout - (now - start))))


# ---- get ------------------------------------------------------------------------------------------------------

def _check_output(fmt: str) -> None:
    if fmt == "yaml":
        require_yaml("-o yaml")


def event_object(name: str, namespace: str) -> str:
    """`get events NAME`: NAME, workload/NAME, workload/NS/NAME or node/ID -> the events' object reference."""
    parts = name.split("/")
    kind = KINDS.get(parts[0].lower()) if len(parts) > 1 else "workload"
    match kind, parts[1:] or parts:
        case "node", [ident]:
            return f"node/{check_name(ident, 'node id')}"
        case "workload", [ident]:
            return f"workload/{namespace}/{check_name(ident, 'workload name')}"
        case "workload", [ns, ident]:
            return f"workload/{check_name(ns, 'namespace')}/{check_name(ident, 'workload name')}"
    raise UsageError(f"events NAME: {name!r} must be NAME, workload/NAME, workload/NAMESPACE/NAME or node/ID")


def _fetch(args: argparse.Namespace, ctx: Ctx) -> Callable[[], JSONObject | list[JSONObject]]:
    ns = None if args.all_namespaces else ctx.namespace
    match args.kind, args.name:
        case "node", None:
            return ctx.api.list_nodes
        case "node", name:
            return lambda: ctx.api.get_node(name)
        case "workload", None:
            return lambda: ctx.api.list_workloads(ns)
        case "workload", name:
            return lambda: ctx.api.get_workload(ctx.namespace, name)
        case "replica", name:
            def replicas() -> JSONObject | list[JSONObject]:
                items = ctx.api.list_replicas(namespace=ns, workload=args.workload, node=args.node)
                if name is None:
                    return items
                found = [r for r in items if r.get("id") == name]
                if not found:
                    raise ClientError(f"replica {name!r} not found" + (f" in namespace {ns!r}" if ns else ""),
                                      hint="list replicas with `cloudless get replicas -A`")
                return found[0]
            return replicas
    raise AssertionError(args.kind)


def _show(args: argparse.Namespace, data: JSONObject | list[JSONObject], now: float) -> str:
    if args.output in ("json", "yaml"):
        return render.dump(data if isinstance(data, dict) else {"items": data}, args.output)
    items = [data] if isinstance(data, dict) else data
    wide, all_ns = args.output == "wide", bool(args.all_namespaces)
    match args.kind:
        case "node":
            return render.nodes_table(items, now, wide=wide)
        case "workload":
            return render.workloads_table(items, now, wide=wide, namespaces=all_ns)
        case _:
            return render.replicas_table(items, now, wide=wide, namespaces=all_ns)


def cmd_get(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    if args.kind == "event":
        obj = event_object(args.name, ctx.namespace) if args.name else None
        return _watch_events(args, ctx, obj) if args.watch else _list_events(args, ctx, obj)
    if args.name is not None:
        check_name(args.name, f"{args.kind} name")
    fetch = _fetch(args, ctx)
    if args.watch:
        return _watch(args, ctx, fetch)
    data = fetch()
    if isinstance(data, list) and not data and args.output in ("table", "wide"):
        where = "" if args.kind == "node" or args.all_namespaces else f" in namespace {ctx.namespace!r}"
        ctx.err(f"No {args.kind}s found{where}.")
        return 0
    ctx.out(_show(args, data, ctx.clock.time()))
    return 0


def _watch(args: argparse.Namespace, ctx: Ctx, fetch: Callable[[], JSONObject | list[JSONObject]]) -> int:
    """Redraw every interval on a terminal; elsewhere append a new rendering each time the data changed."""
    tty = sys.stdout.isatty()
    last, outage = None, False
    try:
        while True:
            try:
                data = fetch()
                outage = False
            except ClientError as exc:
                if not _transient(exc):
                    raise
                if not outage:
                    ctx.warn(f"{exc.message}; retrying every {args.interval:g}s")
                outage = True
            else:
                snapshot = json.dumps(data, sort_keys=True)
                if tty:
                    stamp = time.strftime("%H:%M:%S", time.localtime(ctx.clock.time()))
                    ctx.out(f"\x1b[H\x1b[2JEvery {args.interval:g}s: cloudless get {args.kind}s   {stamp}"
                            f"   (Ctrl-C to stop)\n\n{_show(args, data, ctx.clock.time())}")
                elif snapshot != last:
                    ctx.out(("\n" if last is not None else "") + _show(args, data, ctx.clock.time()))
                last = snapshot
            ctx.clock.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _sorted_events(items: list[JSONObject]) -> list[JSONObject]:
    return sorted(items, key=lambda e: (render.to_epoch(e.get("time")) or 0.0, _event_id(e)))


def _event_id(event: JSONObject) -> int:
    value = event.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _list_events(args: argparse.Namespace, ctx: Ctx, obj: str | None) -> int:
    items = _sorted_events(ctx.api.list_events(object_ref=obj, event_type=args.type, limit=args.limit))
    if args.output in ("json", "yaml"):
        ctx.out(render.dump({"items": items}, args.output))
    elif not items:
        ctx.err("No events found.")
    else:
        ctx.out(render.events_table(items, ctx.clock.time()))
    return 0


EVENT_STREAM_WIDTHS = (4, 7, 18, 24)  # so rows streamed later line up with the header more often than not


def _watch_events(args: argparse.Namespace, ctx: Ctx, obj: str | None) -> int:
    """The newest --limit events, then each new one as the coordinator records it (server-sent events on
    /v1/events/stream, resumed after the last id seen when the connection drops). A coordinator without the
    stream endpoint is polled every --interval instead."""
    state = _EventWatch(args, ctx, obj)
    try:
        state.show(state.fetch(None))
        while True:
            try:
                for e in ctx.api.stream_events(object_ref=obj, event_type=args.type,
                                               after=state.last_id if state.last_id >= 0 else None):
                    state.show([e])
                    state.outage = False
            except ApiError as exc:
                if exc.status == 404:
                    return state.poll()
                if not _transient(exc):
                    raise
                state.warn_outage(exc)
            except ClientError as exc:
                if not _transient(exc):
                    raise
                state.warn_outage(exc)
            ctx.clock.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


@dataclass
class _EventWatch:
    args: argparse.Namespace
    ctx: Ctx
    obj: str | None
    last_id: int = -1
    since: float | None = None
    widths: list[int] | None = None
    outage: bool = False

    def warn_outage(self, exc: ClientError) -> None:
        if not self.outage:
            self.ctx.warn(f"{exc.message}; retrying every {self.args.interval:g}s")
        self.outage = True

    def fetch(self, since: float | None) -> list[JSONObject]:
        try:
            batch = self.ctx.api.list_events(object_ref=self.obj, event_type=self.args.type, since=since,
                                             limit=self.args.limit)
            self.outage = False
            return batch
        except ClientError as exc:
            if not _transient(exc):
                raise
            self.warn_outage(exc)
            return []

    def show(self, batch: list[JSONObject]) -> None:
        """Print the events not seen yet (an event is new when its id is above every id seen so far)."""
        new = [e for e in _sorted_events(batch)
               if _event_id(e) > self.last_id or (_event_id(e) < 0 and self.widths is None)]
        self.widths = _print_events(self.args, self.ctx, new, self.widths)
        if new:
            self.last_id = max(self.last_id, *(_event_id(e) for e in new))
            self.since = render.to_epoch(new[-1].get("time")) or self.since

    def poll(self) -> int:
        """Ask with since=<newest event's time> every --interval (coordinators without the stream)."""
        while True:
            self.ctx.clock.sleep(self.args.interval)
            self.show(self.fetch(self.since))


def _print_events(args: argparse.Namespace, ctx: Ctx, events: list[JSONObject],
                  widths: list[int] | None) -> list[int]:
    if args.output == "json":
        for e in events:
            ctx.out(json.dumps(e))
    elif args.output == "yaml":
        for e in events:
            ctx.out("---\n" + render.to_yaml(e))
    rows = render.event_rows(events, ctx.clock.time())
    if args.output in ("table", "wide") and widths is None:
        ctx.out(render.table(render.EVENT_HEADERS, rows, widths=EVENT_STREAM_WIDTHS))
    elif args.output in ("table", "wide") and rows:
        ctx.out(render.table([], rows, widths=widths or ()))
    return widths or render.widths_of(render.EVENT_HEADERS, rows, EVENT_STREAM_WIDTHS)


# ---- describe, scale, rollout ---------------------------------------------------------------------------------

def _events_for(ctx: Ctx, obj: str) -> list[JSONObject]:
    """Recent events of one object; describe still works (with a warning) if the coordinator has none to give."""
    try:
        return _sorted_events(ctx.api.list_events(object_ref=obj, limit=20))
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        ctx.warn(f"events unavailable: {exc.message}")
        return []


def cmd_describe(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.kind == "node":
        node = ctx.api.get_node(args.name)
        replicas = ctx.api.list_replicas(node=args.name)
        ctx.out(render.describe_node(node, replicas, _events_for(ctx, f"node/{args.name}"), ctx.clock.time()))
    else:
        wl = ctx.api.get_workload(ctx.namespace, args.name)
        events = _events_for(ctx, f"workload/{ctx.namespace}/{args.name}")
        ctx.out(render.describe_workload(wl, events, ctx.clock.time()))
    return 0


def cmd_scale(args: argparse.Namespace, ctx: Ctx) -> int:
    ctx.api.scale_workload(ctx.namespace, args.name, args.replicas)
    ctx.out(f"workload/{args.name} scaled to {args.replicas} replica{'s' if args.replicas != 1 else ''}")
    return 0


def rollout_verdict(first_phase: str | None, phase: str | None) -> str | None:
    """"ok", "failed" or None (keep waiting) for `rollout status`, given the first phase this wait saw.

    The coordinator reports a rollback (asked for, or automatic after a failed rollout) as rolling-back, then
    rolled-back. A wait that began while a rollout was progressing and then sees a rollback watched that rollout
    fail; a wait that began in a rollback phase (say, after `rollout undo`) succeeds once it is rolled back.
    """
    if phase == "failed" or (phase in ROLLBACK_PHASES and first_phase not in ROLLBACK_PHASES):
        return "failed"
    if phase in ("complete", "rolled-back"):
        return "ok"
    return None


def cmd_rollout_status(args: argparse.Namespace, ctx: Ctx) -> int:
    ref = _ref(ctx.namespace, args.name)
    seen: list[JSONObject] = []  # [first status, latest status]

    def poll() -> tuple[str | None, bool]:
        status = ctx.api.rollout_status(ctx.namespace, args.name)
        if args.revision is not None and status.get("revision") != args.revision:
            raise ClientError(f"{ref} is at revision {status.get('revision')}, not {args.revision}",
                              hint=f"see `cloudless rollout history workload {args.name}`")
        seen[:] = [seen[0] if seen else status, status]
        return render.rollout_line(ref, status), rollout_verdict(seen[0].get("phase"), status.get("phase")) is not None
    if not wait_until(ctx, poll, args.timeout):
        raise ClientError(f"timed out after {args.timeout:g}s waiting for {ref} to roll out",
                          hint="the rollout goes on without you: rerun `cloudless rollout status`, "
                          f"or look at `cloudless describe workload {args.name}`")
    last = seen[-1]
    if rollout_verdict(seen[0].get("phase"), last.get("phase")) == "failed":
        what = "was rolled back" if last.get("phase") in ROLLBACK_PHASES else "failed"
        undo = f"; go back with `cloudless rollout undo workload {args.name}`" if what == "failed" else ""
        raise ClientError(f"rollout of {ref} {what}: {last.get('message') or 'no reason given'}",
                          hint=f"see `cloudless describe workload {args.name}`{undo}")
    verb = "rolled back" if last.get("phase") == "rolled-back" else "rolled out"
    ctx.out(f"{ref} successfully {verb} (revision {last.get('revision')})")
    return 0


def cmd_rollout_history(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    items = ctx.api.rollout_history(ctx.namespace, args.name)
    if args.revision is not None:
        items = [i for i in items if i.get("revision") == args.revision]
        if not items:
            raise ClientError(f"{_ref(ctx.namespace, args.name)} has no revision {args.revision}",
                              hint=f"list them with `cloudless rollout history workload {args.name}`")
    if args.output in ("json", "yaml"):
        ctx.out(render.dump({"items": items}, args.output))
        return 0
    current = ctx.api.rollout_status(ctx.namespace, args.name).get("revision")
    ctx.out(render.history_table(items, ctx.clock.time(), current=current))
    return 0


def cmd_rollout_undo(args: argparse.Namespace, ctx: Ctx) -> int:
    wl = ctx.api.rollback(ctx.namespace, args.name, args.revision)
    target = f"revision {args.revision}" if args.revision is not None else "the previous revision"
    now_at = (wl.get("metadata") or {}).get("revision")
    ctx.out(f"workload/{args.name} rolled back to {target}" + (f" (now revision {now_at})" if now_at else ""))
    ctx.err(f"follow it with `cloudless rollout status workload {args.name}`")
    return 0


# ---- logs, exec -----------------------------------------------------------------------------------------------

def pick_replica(ctx: Ctx, workload: str, replica: str | None) -> str:
    """The replica asked for, else the workload's first replica that has a node (said on stderr if it had to pick)."""
    if replica is not None:
        return replica
    replicas = ((ctx.api.get_workload(ctx.namespace, workload).get("status") or {}).get("replicas")) or []
    placed = [r for r in replicas if r.get("node") and isinstance(r.get("id"), str)]
    if not placed:
        raise ClientError(f"{_ref(ctx.namespace, workload)} has no replica running on a node",
                          hint=f"see `cloudless describe workload {workload}`; if it has 0 replicas, "
                          f"`cloudless scale workload {workload} --replicas 1`")
    if len(replicas) > 1:
        ctx.err(f"using replica {placed[0]['id']} on {placed[0]['node']} ({len(replicas)} replicas; "
                "name one to choose)")
    return str(placed[0]["id"])


def _write_output(output: object) -> None:
    text = output if isinstance(output, str) else ""
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def cmd_logs(args: argparse.Namespace, ctx: Ctx) -> int:
    replica = pick_replica(ctx, args.workload, args.replica)
    _write_output(ctx.api.logs(ctx.namespace, args.workload, replica, tail=args.tail).get("output"))
    return 0


def split_exec_words(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """`WORKLOAD [REPLICA] [options] -- CMD...` -> (the part before `--`, the command)."""
    if "--" not in words:
        raise UsageError("put the command after `--`, e.g. `cloudless exec web -- ls -l /`")
    i = list(words).index("--")
    head, command = list(words[:i]), list(words[i + 1:])
    if not command:
        raise UsageError("no command after `--`")
    return head, command


def exit_status(code: object) -> int:
    """A remote exit code as this process's status: -N (killed by signal N) -> 128+N, like a shell."""
    if not isinstance(code, int) or isinstance(code, bool):
        return 1
    if code < 0:
        return min(255, 128 - code)
    return min(code, 255)


def cmd_exec(args: argparse.Namespace, ctx: Ctx) -> int:
    head, command = split_exec_words(args.words)
    # options may also sit between WORKLOAD and `--`: parse that part again with the same definitions
    _exec_parser().parse_args(head, namespace=args)
    replica = pick_replica(ctx, args.workload, args.replica)
    if sys.stderr.isatty():
        ctx.err(f"running {command[0]} in {replica} (up to {args.timeout}s) ...")
    result = ctx.api.exec(ctx.namespace, args.workload, replica, command, timeout_seconds=args.timeout)
    _write_output(result.get("output"))
    return exit_status(result.get("exitCode"))


# ---- nodes ----------------------------------------------------------------------------------------------------

def cmd_node_action(args: argparse.Namespace, ctx: Ctx) -> int:
    action, node_id = args.action, args.node
    node = ctx.api.node_action(node_id, action)
    if action != "drain":
        ctx.out(f"node/{node_id} {action}ed")
        return 0
    if args.no_wait:
        ctx.out(f"node/{node_id} draining ({render.text(node.get('replicas'))} replicas to move)")
        return 0

    last: JSONObject = node

    def poll() -> tuple[str | None, bool]:
        nonlocal last
        last = ctx.api.get_node(node_id)
        left = last.get("replicas")
        # Done when nothing is left on it, or when the coordinator says it stopped draining.
        return f"node/{node_id}: draining, {render.text(left)} replicas left", left == 0 or not last.get("draining")
    if not wait_until(ctx, poll, args.timeout):
        raise ClientError(f"node/{node_id} still has replicas after {args.timeout:g}s",
                          hint=f"the coordinator keeps draining; see `cloudless describe node {node_id}`")
    if last.get("replicas") != 0:  # the coordinator stopped draining it: someone ran uncordon
        raise ClientError(f"node/{node_id} is no longer draining, with {render.text(last.get('replicas'))} "
                          "replicas still on it", hint="was it uncordoned? run `cloudless drain` again to resume")
    ctx.out(f"node/{node_id} drained")
    return 0


# ---- parsers --------------------------------------------------------------------------------------------------

if TYPE_CHECKING:  # argparse's subparsers class is private and generic only in typeshed
    Sub: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def _connection() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (flag > environment > config file)")
    g.add_argument("--server", metavar="URL", help="coordinator REST API, e.g. http://127.0.0.1:8470 "
                   "(env CLOUDLESS_SERVER; default from the config file, else http://127.0.0.1:8470)")
    g.add_argument("--token", metavar="TOKEN", help="API bearer token (env CLOUDLESS_TOKEN; default from the "
                   "config file)")
    g.add_argument("--config", metavar="PATH", help="config file written by `cloudless up` (env CLOUDLESS_CONFIG; "
                   "default $XDG_CONFIG_HOME/cloudless/config.json, i.e. ~/.config/cloudless/config.json)")
    return p


def _namespace_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", type=_name, metavar="NS", help="namespace (default: default)")


def _output_arg(p: argparse.ArgumentParser, choices: Sequence[str] = render.OUTPUT_FORMATS) -> None:
    p.add_argument("-o", "--output", choices=choices, default="table",
                   help="table for people (wide: more columns), json/yaml for scripts (default table)")


def _timeout_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--timeout", type=_duration_in(1, 24 * 3600), default=300.0, metavar="DURATION",
                   help=f"give up waiting for {what} after this long, e.g. 90s, 5m, 1h (default 5m); exit 1")


def _add(sub: Sub, name: str, conn: argparse.ArgumentParser, *, help: str, description: str,
         examples: str, func: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, parents=[conn], epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=_command(func))
    return p


def add_parser(sub: Sub) -> None:
    conn = _connection()
    _add_apply_delete(sub, conn)
    _add_get_describe(sub, conn)
    _add_scale_rollout(sub, conn)
    _add_logs_exec(sub, conn)
    _add_nodes(sub, conn)


def _add_apply_delete(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = _add(sub, "apply", conn, func=cmd_apply, help="create or update workloads from YAML/JSON files",
             description="Send each Workload document of the files to the coordinator (PUT): it is created, "
             "configured (changed) or unchanged. A YAML file may hold several documents separated by `---`; "
             "a JSON file an object or a list of objects. Every document is checked before the first is sent.",
             examples="  cloudless apply -f web.yaml\n  cloudless apply -f web.yaml -f db.yaml -n staging\n"
             "  cat web.json | cloudless apply -f -")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="YAML or JSON file, or - for standard input (repeatable)")
    _namespace_arg(p)
    p = _add(sub, "delete", conn, func=cmd_delete, help="delete a workload (its replicas stop) or a gone node",
             description="Delete workloads, named or from the files that created them. The coordinator stops "
             "their replicas; --wait waits until they are gone. `delete node ID` forgets a node that is offline "
             "or lost and holds no replicas (its presence, dashboard mirror and Home Assistant entities are "
             "removed); an online node is refused: stop its agent or revoke it first.",
             examples="  cloudless delete workload web\n  cloudless delete -f web.yaml --wait\n"
             "  cloudless delete node old-pi")
    p.add_argument("kind", nargs="?", type=_kind("workload", "node"), metavar="{workload,node}")
    p.add_argument("name", nargs="?", type=_name, metavar="NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE", help="delete the workloads in FILE")
    _namespace_arg(p)
    p.add_argument("--ignore-not-found", action="store_true", help="a workload or node that does not exist is no error")
    p.add_argument("--wait", action="store_true", help="wait until the workload and its replicas are gone")
    _timeout_arg(p, "--wait")


def _add_get_describe(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = _add(sub, "get", conn, func=cmd_get, help="list nodes, workloads, replicas or events",
             description="Show one or many objects as a table (or -o json/yaml). NAME picks one; for events it "
             "is the object they are about: NAME (a workload), workload/NAME or node/ID.",
             examples="  cloudless get nodes -o wide\n  cloudless get workloads -A\n"
             "  cloudless get workload web -o yaml\n  cloudless get replicas --workload web\n"
             "  cloudless get events node/pi-1 --watch")
    p.add_argument("kind", type=_kind("node", "workload", "replica", "event"),
                   metavar="{nodes,workloads,replicas,events}")
    p.add_argument("name", nargs="?", metavar="NAME")
    _namespace_arg(p)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="workloads/replicas of every namespace")
    _output_arg(p)
    p.add_argument("-w", "--watch", action="store_true",
                   help="keep watching until Ctrl-C: redraw on a terminal, else print again on change; "
                   "events are streamed as they happen")
    p.add_argument("--interval", type=_duration_in(1, 3600), default=2.0, metavar="DURATION",
                   help="how often --watch asks the coordinator, 1s..1h (default 2s)")
    p.add_argument("--workload", type=_name, help="replicas: only this workload's")
    p.add_argument("--node", type=_name, help="replicas: only those on this node")
    p.add_argument("--type", dest="type", metavar="TYPE", help="events: only this type (e.g. Warning)")
    p.add_argument("--limit", type=_int_in(1, 1000), default=100, metavar="N",
                   help="events: at most N (default 100)")
    p = _add(sub, "describe", conn, func=cmd_describe, help="explain a node or workload in detail",
             description="Everything about one node (capacity, usage, gates, its replicas) or workload "
             "(conditions, each replica's node and state, why unplaced replicas fit no node), with its recent "
             "events.",
             examples="  cloudless describe node pi-1\n  cloudless describe workload web -n staging")
    p.add_argument("kind", type=_kind("node", "workload"), metavar="{node,workload}")
    p.add_argument("name", type=_name, metavar="NAME")
    _namespace_arg(p)


def _add_scale_rollout(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = _add(sub, "scale", conn, func=cmd_scale, help="set a workload's replica count",
             description="Set how many replicas of a workload should run (0..1000).",
             examples="  cloudless scale workload web --replicas 3")
    p.add_argument("kind", type=_kind("workload"), metavar="workload")
    p.add_argument("name", type=_name, metavar="NAME")
    p.add_argument("--replicas", type=_int_in(0, MAX_REPLICAS), required=True, metavar="N",
                   help=f"desired replicas, 0..{MAX_REPLICAS}")
    _namespace_arg(p)
    p = sub.add_parser("rollout", help="watch, list or undo a workload's rollouts",
                       description="Follow the rollout of a workload's latest revision, list its revisions, or "
                       "roll back to an earlier one.")
    actions = p.add_subparsers(dest="rollout_action", metavar="ACTION", required=True)
    s = _add(actions, "status", conn, func=cmd_rollout_status, help="wait until the rollout completes or fails",
             description="Wait, showing progress on stderr, until the rollout is complete (exit 0) or failed / "
             "rolled back (exit 1); exit 1 on timeout too (the rollout itself goes on).",
             examples="  cloudless rollout status workload web --timeout 10m")
    h = _add(actions, "history", conn, func=cmd_rollout_history, help="list a workload's revisions",
             description="List the revisions of a workload: when, which image, and why.",
             examples="  cloudless rollout history workload web\n"
             "  cloudless rollout history workload web --revision 3 -o json")
    u = _add(actions, "undo", conn, func=cmd_rollout_undo, help="roll back to the previous (or a given) revision",
             description="Roll a workload back to the previous revision, or to --revision N.",
             examples="  cloudless rollout undo workload web\n  cloudless rollout undo workload web --revision 2")
    for a in (s, h, u):
        a.add_argument("kind", type=_kind("workload"), metavar="workload")
        a.add_argument("name", type=_name, metavar="NAME")
        _namespace_arg(a)
    s.add_argument("--revision", type=_int_in(1, 2**31), metavar="N", help="fail unless the rollout is of revision N")
    _timeout_arg(s, "the rollout")
    h.add_argument("--revision", type=_int_in(1, 2**31), metavar="N", help="show only revision N")
    _output_arg(h, ("table", "json", "yaml"))
    u.add_argument("--revision", type=_int_in(1, 2**31), metavar="N", help="revision to go back to (default: "
                   "the previous one)")


def _exec_arguments(p: argparse.ArgumentParser) -> None:
    _namespace_arg(p)
    p.add_argument("--timeout", type=_int_in(1, 300), default=30, metavar="SECONDS",
                   help="give the command at most this many seconds, 1..300 (default 30)")


def _exec_parser() -> argparse.ArgumentParser:
    """What may stand before `--` in `exec WORKLOAD [REPLICA] [options] -- CMD`: argparse cannot split that."""
    p = argparse.ArgumentParser(prog="cloudless exec", add_help=False, parents=[_connection()],
                                usage="cloudless exec [options] WORKLOAD [REPLICA] [options] -- CMD [ARG ...]")
    p.add_argument("workload", type=_name, metavar="WORKLOAD")
    p.add_argument("replica", nargs="?", type=_name, metavar="REPLICA")
    _exec_arguments(p)
    return p


def _add_logs_exec(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = _add(sub, "logs", conn, func=cmd_logs, help="print a replica's recent output",
             description="Print the recent output of one replica of a workload (default: its first replica "
             "that runs on a node).",
             examples="  cloudless logs web\n  cloudless logs web web-1a2b3 --tail 50")
    p.add_argument("workload", type=_name, metavar="WORKLOAD")
    p.add_argument("replica", nargs="?", type=_name, metavar="REPLICA")
    _namespace_arg(p)
    p.add_argument("--tail", type=_int_in(1, 10_000), default=100, metavar="N",
                   help="last N lines, 1..10000 (default 100)")
    p = _add(sub, "exec", conn, func=cmd_exec, help="run a command in a replica",
             description="Run a command inside one replica of a workload (default: its first replica on a node) "
             "and print its output; exit with the command's exit code. The command comes after `--`.",
             examples="  cloudless exec web -- ls -l /\n  cloudless exec web web-1a2b3 -n staging -- sh -c 'exit 3'")
    _exec_arguments(p)
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="WORKLOAD [REPLICA] -- CMD [ARG ...]")
    p.set_defaults(workload=None, replica=None)


def _add_nodes(sub: Sub, conn: argparse.ArgumentParser) -> None:
    texts = {
        "cordon": ("stop placing new replicas on a node", "Mark a node unschedulable; what runs there stays."),
        "uncordon": ("allow placing replicas on a node again", "Make a cordoned or drained node schedulable."),
        "drain": ("move every replica off a node (e.g. before maintenance)",
                  "Cordon the node and move its replicas elsewhere (the coordinator keeps enough of each "
                  "workload available); wait, showing progress on stderr, until none is left. Exit 1 on timeout "
                  "or if the drain is cancelled (uncordon)."),
    }
    for action, (help_text, description) in texts.items():
        p = _add(sub, action, conn, func=cmd_node_action, help=help_text, description=description,
                 examples=f"  cloudless {action} pi-1")
        p.add_argument("node", type=_name, metavar="NODE")
        p.set_defaults(action=action)
        if action == "drain":
            p.add_argument("--no-wait", action="store_true", help="return as soon as the drain has started")
            _timeout_arg(p, "the drain")
