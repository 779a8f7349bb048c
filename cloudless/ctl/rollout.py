"""`cloudless describe`, `scale` and `rollout status|history|undo`: one object in detail, a workload's replica
count, and following or undoing its rollouts.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cloudless import render
from cloudless.client import ApiError, ClientError, JSONObject
from cloudless.ctl.core import (
    Ctx,
    add_command,
    check_output,
    int_in,
    kind_in,
    namespace_arg,
    output_arg,
    timeout_arg,
    valid_name,
    wait_until,
    workload_ref,
)
from cloudless.ctl.get import sorted_events

if TYPE_CHECKING:
    from cloudless.ctl.core import Sub

ROLLBACK_PHASES = ("rolling-back", "rolled-back")

MAX_REPLICAS = 10_000  # coordinator.spec.MAX_REPLICAS: the CLI imports no server package (tests/cli/test_imports.py)


def _events_for(ctx: Ctx, obj: str) -> list[JSONObject]:
    """Recent events of one object; describe still works (with a warning) if the coordinator has none to give."""
    try:
        return sorted_events(ctx.api.list_events(object_ref=obj, limit=20))
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        ctx.warn(f"events unavailable: {exc.message}")
        return []


def _peers_of(ctx: Ctx, node: str) -> list[JSONObject]:
    """The node's overlay peers; a coordinator without the overlay API (older: a 404 for a node just found) is not
    an error here."""
    try:
        return ctx.api.list_peers(node)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return []


def cmd_describe(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.kind == "node":
        node = ctx.api.get_node(args.name)
        replicas = ctx.api.list_replicas(node=args.name)
        ctx.out(render.describe_node(node, replicas, _events_for(ctx, f"node/{args.name}"), ctx.clock.time(),
                                     peers=_peers_of(ctx, args.name)))
    elif args.kind == "service":
        svc = ctx.api.get_service(ctx.namespace, args.name)
        ctx.out(render.describe_service(svc, _events_for(ctx, f"service/{ctx.namespace}/{args.name}"),
                                        ctx.clock.time()))
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
    ref = workload_ref(ctx.namespace, args.name)
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
    check_output(args.output)
    items = ctx.api.rollout_history(ctx.namespace, args.name)
    if args.revision is not None:
        items = [i for i in items if i.get("revision") == args.revision]
        if not items:
            raise ClientError(f"{workload_ref(ctx.namespace, args.name)} has no revision {args.revision}",
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


# ---- parsers --------------------------------------------------------------------------------------------------

def add_describe(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = add_command(sub, "describe", conn, func=cmd_describe, help="explain a node, workload or service in detail",
                    description="Everything about one node (capacity, usage, gates, its replicas), workload "
                    "(conditions, each replica's node and state, why unplaced replicas fit no node) or service "
                    "(name, virtual address, ports, every endpoint with its health, ingress), with its recent events.",
                    examples="  cloudless describe node pi-1\n  cloudless describe workload web -n staging\n"
                    "  cloudless describe service web")
    p.add_argument("kind", type=kind_in("node", "workload", "service"), metavar="{node,workload,service}")
    p.add_argument("name", type=valid_name, metavar="NAME")
    namespace_arg(p)


def add_scale_rollout(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = add_command(sub, "scale", conn, func=cmd_scale, help="set a workload's replica count",
                    description="Set how many replicas of a workload should run (0..10000).",
                    examples="  cloudless scale workload web --replicas 3")
    p.add_argument("kind", type=kind_in("workload"), metavar="workload")
    p.add_argument("name", type=valid_name, metavar="NAME")
    p.add_argument("--replicas", type=int_in(0, MAX_REPLICAS), required=True, metavar="N",
                   help=f"desired replicas, 0..{MAX_REPLICAS}")
    namespace_arg(p)
    p = sub.add_parser("rollout", help="watch, list or undo a workload's rollouts",
                       description="Follow the rollout of a workload's latest revision, list its revisions, or "
                       "roll back to an earlier one.")
    actions = p.add_subparsers(dest="rollout_action", metavar="ACTION", required=True)
    s = add_command(actions, "status", conn, func=cmd_rollout_status,
                    help="wait until the rollout completes or fails",
                    description="Wait, showing progress on stderr, until the rollout is complete (exit 0) or failed / "
                    "rolled back (exit 1); exit 1 on timeout too (the rollout itself goes on).",
                    examples="  cloudless rollout status workload web --timeout 10m")
    h = add_command(actions, "history", conn, func=cmd_rollout_history, help="list a workload's revisions",
                    description="List the revisions of a workload: when, which image, and why.",
                    examples="  cloudless rollout history workload web\n"
                    "  cloudless rollout history workload web --revision 3 -o json")
    u = add_command(actions, "undo", conn, func=cmd_rollout_undo,
                    help="roll back to the previous (or a given) revision",
                    description="Roll a workload back to the previous revision, or to --revision N.",
                    examples="  cloudless rollout undo workload web\n"
                    "  cloudless rollout undo workload web --revision 2")
    for a in (s, h, u):
        a.add_argument("kind", type=kind_in("workload"), metavar="workload")
        a.add_argument("name", type=valid_name, metavar="NAME")
        namespace_arg(a)
    s.add_argument("--revision", type=int_in(1, 2**31), metavar="N", help="fail unless the rollout is of revision N")
    timeout_arg(s, "the rollout")
    h.add_argument("--revision", type=int_in(1, 2**31), metavar="N", help="show only revision N")
    output_arg(h, ("table", "json", "yaml"))
    u.add_argument("--revision", type=int_in(1, 2**31), metavar="N", help="revision to go back to (default: "
                   "the previous one)")
