"""`cloudless get`: nodes, workloads and replicas as tables (or JSON/YAML), events, and `--watch` for both: a
redrawn (terminal) or appended (pipe) view of objects, and events streamed as the coordinator records them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudless import render
from cloudless.client import ApiError, ClientError, JSONObject, ListPage
from cloudless.ctl.core import (
    KINDS,
    Ctx,
    UsageError,
    add_command,
    check_name,
    check_output,
    duration_in,
    int_in,
    kind_in,
    namespace_arg,
    output_arg,
    transient,
    valid_name,
    watch,
)

if TYPE_CHECKING:
    from cloudless.ctl.core import Sub


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


def _pages(args: argparse.Namespace, ctx: Ctx) -> Iterator[ListPage] | None:
    """A list's pages as the coordinator sends them (filtered by it), for the kinds listed a page at a time."""
    ns = None if args.all_namespaces else ctx.namespace
    match args.kind, args.name:
        case "node", None:
            return ctx.api.node_pages(selector=args.selector, state=args.state, zone=args.zone, limit=args.limit)
        case "workload", None:
            return ctx.api.workload_pages(ns, selector=args.selector, limit=args.limit)
        case "service", None:
            return ctx.api.service_pages(ns, limit=args.limit)
        case "replica", None:
            return ctx.api.replica_pages(namespace=ns, workload=args.workload, node=args.node, limit=args.limit)
    return None


def _fetch(args: argparse.Namespace, ctx: Ctx) -> Callable[[], JSONObject | list[JSONObject]]:
    ns = None if args.all_namespaces else ctx.namespace

    def every() -> list[JSONObject]:
        pages = _pages(args, ctx)
        assert pages is not None
        return [item for page in pages for item in page.items]
    match args.kind, args.name:
        case "node" | "workload" | "service" | "replica", None:
            return every
        case "node", name:
            return lambda: ctx.api.get_node(name)
        case "peer", node:
            return lambda: ctx.api.list_peers(node)
        case "service", name:
            return lambda: ctx.api.get_service(ctx.namespace, name)
        case "workload", name:
            return lambda: ctx.api.get_workload(ctx.namespace, name)
        case "replica", name:
            def replicas() -> JSONObject | list[JSONObject]:
                items = ctx.api.list_replicas(namespace=ns, workload=args.workload, node=args.node)
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
        case "peer":
            return render.peers_table(items, now, wide=wide)
        case "service":
            return render.services_table(items, wide=wide, namespaces=all_ns)
        case _:
            return render.replicas_table(items, now, wide=wide, namespaces=all_ns)


def _grid(args: argparse.Namespace, items: list[JSONObject], now: float) -> render.Grid | None:
    """A list page's table headers and rows (None: a kind whose table is shown whole, as `_show` does)."""
    wide, all_ns = args.output == "wide", bool(args.all_namespaces)
    match args.kind:
        case "node":
            return render.nodes_grid(items, now, wide=wide)
        case "workload":
            return render.workloads_grid(items, now, wide=wide, namespaces=all_ns)
        case "service":
            return render.services_grid(items, wide=wide, namespaces=all_ns)
        case "replica":
            return render.replicas_grid(items, now, wide=wide, namespaces=all_ns)
    return None


def cmd_get(args: argparse.Namespace, ctx: Ctx) -> int:
    check_output(args.output)
    _check_filters(args)  # before events too: no filter applies to them, and a silently ignored flag misleads
    if args.kind == "event":
        obj = event_object(args.name, ctx.namespace) if args.name else None
        return _watch_events(args, ctx, obj) if args.watch else _list_events(args, ctx, obj)
    if args.name is not None:
        check_name(args.name, f"{args.kind} name")
    fetch = _fetch(args, ctx)
    if args.watch:
        return _watch(args, ctx, fetch)
    pages = _pages(args, ctx) if args.name is None else None
    if pages is not None:
        return _print_pages(args, ctx, pages)
    data = fetch()
    if isinstance(data, list) and not data and args.output in ("table", "wide"):
        ctx.err(_none_found(args, ctx))
        return 0
    ctx.out(_show(args, data, ctx.clock.time()))
    return 0


EVENTS_SHOWN = 100  # `get events` without --limit: the newest this many
FILTERS = {"selector": ("node", "workload"), "state": ("node",), "zone": ("node",)}


def _check_filters(args: argparse.Namespace) -> None:
    for flag, kinds in FILTERS.items():
        if getattr(args, flag) is not None and (args.kind not in kinds or args.name is not None):
            raise UsageError(f"--{flag} filters a list of {' or '.join(k + 's' for k in kinds)}, "
                             f"not {'one ' + args.kind if args.name else args.kind + 's'}")


def _none_found(args: argparse.Namespace, ctx: Ctx) -> str:
    where = "" if args.kind == "node" or args.all_namespaces else f" in namespace {ctx.namespace!r}"
    return f"No {args.kind}s found{where}."


def _print_pages(args: argparse.Namespace, ctx: Ctx, pages: Iterator[ListPage]) -> int:
    """A list as its pages arrive: a table prints each page as it comes (the header once; each page's columns at
    least as wide as the first page's, so they line up), so a long list shows progress; JSON and YAML are one
    document, so they wait for the last page and say on stderr how far they got meanwhile."""
    table = args.output in ("table", "wide")
    got: list[JSONObject] = []
    shown = 0
    widths: list[int] = []  # the first page's column widths: the pages after it line up with it
    for page in pages:
        if table and page.items:
            grid = _grid(args, page.items, ctx.clock.time())
            if grid is None:
                text = _show(args, page.items, ctx.clock.time())
                ctx.out(text if not shown else text.split("\n", 1)[1] if "\n" in text else "")
            else:
                widths = widths or render.widths_of(*grid)
                ctx.out(render.table(*grid, widths=widths, header=not shown))
            shown += len(page.items)
        elif not table:
            got += page.items
            if page.more:
                left = f", {page.remaining} to go" if page.remaining is not None else ""
                ctx.err(f"... {len(got)} {args.kind}s so far{left}")
    if table and not shown:
        ctx.err(_none_found(args, ctx))
    elif not table:
        ctx.out(_show(args, got, ctx.clock.time()))
    return 0


def _watch(args: argparse.Namespace, ctx: Ctx, fetch: Callable[[], JSONObject | list[JSONObject]]) -> int:
    """Redraw every interval on a terminal; elsewhere append a new rendering each time the data changed (the data,
    not the text: ages in the text change every time)."""
    return watch(ctx, args.interval, fetch,
                 title=lambda stamp: f"Every {args.interval:g}s: cloudless get {args.kind}s   {stamp}"
                 "   (Ctrl-C to stop)",
                 show=lambda data: _show(args, data, ctx.clock.time()),
                 key=lambda data: json.dumps(data, sort_keys=True))


def sorted_events(items: list[JSONObject]) -> list[JSONObject]:
    return sorted(items, key=lambda e: (render.to_epoch(e.get("time")) or 0.0, _event_id(e)))


def _event_id(event: JSONObject) -> int:
    value = event.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _list_events(args: argparse.Namespace, ctx: Ctx, obj: str | None) -> int:
    items = sorted_events(ctx.api.list_events(object_ref=obj, event_type=args.type,
                                                     limit=args.limit or EVENTS_SHOWN))
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
                if not transient(exc):
                    raise
                state.warn_outage(exc)
            except ClientError as exc:
                if not transient(exc):
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
                                             limit=self.args.limit or EVENTS_SHOWN)
            self.outage = False
            return batch
        except ClientError as exc:
            if not transient(exc):
                raise
            self.warn_outage(exc)
            return []

    def show(self, batch: list[JSONObject]) -> None:
        """Print the events not seen yet (an event is new when its id is above every id seen so far)."""
        new = [e for e in sorted_events(batch)
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


# ---- parser ---------------------------------------------------------------------------------------------------

def add_get(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = add_command(sub, "get", conn, func=cmd_get, help="list nodes, workloads, replicas, services or events",
                    description="Show one or many objects as a table (or -o json/yaml). NAME picks one; for events it "
                    "is the object they are about: NAME (a workload), workload/NAME or node/ID; for peers it is a "
                    "node (its overlay paths; every node's without NAME).",
                    examples="  cloudless get nodes -o wide\n  cloudless get workloads -A\n"
                    "  cloudless get workload web -o yaml\n  cloudless get replicas --workload web\n"
                    "  cloudless get events node/pi-1 --watch\n"
                    "  cloudless get peers pi-1 -o wide      # pi-1's overlay paths: lan/direct/relayed, RTT, bytes\n"
                    "  cloudless get services -A             # names, virtual addresses, ports, ready endpoints\n"
                    "  cloudless get nodes -l room=attic --state online   # filtered by the coordinator\n"
                    "  cloudless get nodes --zone lab --limit 1000         # 1,000 a request, every page")
    p.add_argument("kind", type=kind_in("node", "workload", "replica", "event", "peer", "service"),
                   metavar="{nodes,workloads,replicas,services,events,peers}")
    p.add_argument("name", nargs="?", metavar="NAME")
    namespace_arg(p)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="workloads/replicas/services of every namespace")
    output_arg(p)
    p.add_argument("-w", "--watch", action="store_true",
                   help="keep watching until Ctrl-C: redraw on a terminal, else print again on change; "
                   "events are streamed as they happen")
    p.add_argument("--interval", type=duration_in(1, 3600), default=2.0, metavar="DURATION",
                   help="how often --watch asks the coordinator, 1s..1h (default 2s)")
    p.add_argument("--workload", type=valid_name, help="replicas: only this workload's")
    p.add_argument("--node", type=valid_name, help="replicas: only those on this node")
    p.add_argument("--type", dest="type", metavar="TYPE", help="events: only this type (e.g. Warning)")
    p.add_argument("--limit", type=int_in(1, 5000), metavar="N",
                   help="lists: items per request (the coordinator's default, 500, without it); the list is complete "
                   "either way: the CLI asks for the next page until the last. Events: only the newest N "
                   "(default 100)")
    p.add_argument("-l", "--selector", metavar="SELECTOR",
                   help="nodes/workloads: only those whose labels match, Kubernetes syntax "
                   "(e.g. 'zone=attic,tier!=db,gpu,arch in (aarch64,x86_64)'); the coordinator filters")
    p.add_argument("--state", choices=("online", "suspect", "offline", "lost"),
                   help="nodes: only those in this state")
    p.add_argument("--zone", metavar="ZONE", help="nodes: only those in this zone")
