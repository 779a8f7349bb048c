"""`cloudless overlay`: the data-plane overlay between devices — ping one node from another (the path found, the
round trips), keep a connection between two nodes, and the overlay at a glance (relays, each node's NAT class and
candidates, the direct share)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cloudless import render
from cloudless.client import JSONObject
from cloudless.ctl.core import Ctx, UsageError, add_command, duration_in, int_in, output_arg, valid_name

if TYPE_CHECKING:
    from cloudless.ctl.core import Sub


def _pair(args: argparse.Namespace) -> tuple[str, str]:
    if args.a == args.b:
        raise UsageError(f"{args.a} and {args.b} are the same node; name two nodes")
    return args.a, args.b


def cmd_ping(args: argparse.Namespace, ctx: Ctx) -> int:
    source, target = _pair(args)
    ctx.err(f"asking {source} to reach {target} over the overlay (up to {args.timeout:g}s: the first connection "
            "starts through a relay and may move to a direct path)...")
    result = ctx.api.overlay_ping(source, target, count=args.count, timeout=args.timeout)
    if args.output in ("json", "yaml"):
        ctx.out(render.dump(result, args.output))
        return 0
    ctx.out(ping_text(result))
    return 0 if result.get("rttsMs") else 1


def ping_text(result: JSONObject) -> str:
    path = str(result.get("path", "?"))
    via = f" via {result.get('relay')}" if path == "relayed" and result.get("relay") else ""
    at = f" {result.get('address')}" if path in ("lan", "direct") and result.get("address") else ""
    rtts = [float(x) for x in result.get("rttsMs") or [] if isinstance(x, int | float)]
    lines = [f"{result.get('from')} -> {result.get('peer')}: {path}{via}{at}"]
    if isinstance(result.get("connectMs"), int | float):
        lines.append(f"  connected in {result['connectMs']:.1f} ms")
    if rtts:
        ordered = sorted(rtts)
        lines.append(f"  {len(rtts)} round trips: min {ordered[0]:.2f} ms, median {ordered[len(ordered) // 2]:.2f} ms, "
                     f"max {ordered[-1]:.2f} ms")
    if result.get("error"):
        lines.append(f"  error: {result['error']}")
    return "\n".join(lines)


def cmd_connect(args: argparse.Namespace, ctx: Ctx) -> int:
    a, b = _pair(args)
    resp = ctx.api.overlay_pair("connect", a, b)
    ctx.out(f"{a} <-> {b}: kept{'' if resp.get('new') else ' (already)'}; watch the path with "
            f"`cloudless get peers {a}`")
    return 0


def cmd_disconnect(args: argparse.Namespace, ctx: Ctx) -> int:
    a, b = _pair(args)
    resp = ctx.api.overlay_pair("disconnect", a, b)
    ctx.out(f"{a} <-> {b}: " + ("no longer kept" if resp.get("was") else "was not kept (nothing to do)"))
    return 0


def cmd_status(args: argparse.Namespace, ctx: Ctx) -> int:
    summary = ctx.api.overlay_summary()
    if args.output in ("json", "yaml"):
        ctx.out(render.dump(summary, args.output))
        return 0
    relays = summary.get("relays") or []
    lines = ["Relays: " + (", ".join(f"{r.get('id')} ({', '.join(r.get('addresses') or [])})" for r in relays)
                           if relays else "none (start the coordinator with --relay, or `cloudless up`)")]
    share = summary.get("directShare")
    lines.append("Direct share: " + (f"{share * 100:.0f}% of live paths" if isinstance(share, int | float)
                                     else "no live path"))
    rows = []
    for n in summary.get("nodes") or []:
        on = n.get("enabled")
        state = "on" if on else "off" if on is False else "unknown"
        cands = ", ".join(f"{c.get('kind')} {c.get('address')}" for c in n.get("candidates") or [])
        rows.append([str(n.get("node")), state, str(n.get("nat")), ", ".join(n.get("relays") or []) or "-",
                     str(n.get("peers")), cands or (str(n.get("disabled")) if not on else "-")])
    lines += ["", render.table(["NODE", "OVERLAY", "NAT", "RELAYS", "PEERS", "CANDIDATES / WHY OFF"], rows)]
    ctx.out("\n".join(lines))
    return 0


def add_overlay(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = sub.add_parser("overlay", help="the device-to-device overlay: ping, connect, status",
                       description="The QUIC overlay between devices (docs/overlay.md): every connection starts "
                       "through a relay and moves to a direct path when hole punching finds one.")
    actions = p.add_subparsers(dest="overlay_action", metavar="ACTION", required=True)
    ping = add_command(actions, "ping", conn, func=cmd_ping, help="reach node B from node A and time round trips",
                       description="Ask node A to reach node B over the overlay (connecting through a relay first, "
                       "then directly when it can) and measure round trips. Prints the path used (lan, direct or "
                       "relayed via which relay) and the RTTs; exit 1 when no round trip completed.",
                       examples="  cloudless overlay ping pi-kitchen laptop\n"
                       "  cloudless overlay ping phone vps --count 20 -o json")
    connect = add_command(actions, "connect", conn, func=cmd_connect, help="keep a connection between two nodes",
                          description="Keep an overlay connection between nodes A and B (until `overlay "
                          "disconnect`); the coordinator tells both about each other; `get peers` shows the path.",
                          examples="  cloudless overlay connect pi-kitchen laptop")
    disconnect = add_command(actions, "disconnect", conn, func=cmd_disconnect,
                             help="stop keeping a connection between two nodes",
                             description="Undo `overlay connect A B`.",
                             examples="  cloudless overlay disconnect pi-kitchen laptop")
    for q in (ping, connect, disconnect):
        q.add_argument("a", type=valid_name, metavar="A", help="a node")
        q.add_argument("b", type=valid_name, metavar="B", help="another node")
    ping.add_argument("--count", type=int_in(1, 100), default=5, metavar="N", help="round trips, 1..100 (default 5)")
    ping.add_argument("--timeout", type=duration_in(1, 120), default=30.0, metavar="DURATION",
                      help="give up after this long, 1s..2m (default 30s)")
    output_arg(ping, ("table", "json", "yaml"))
    status = add_command(actions, "status", conn, func=cmd_status, help="relays, each node's NAT and candidates",
                         description="The overlay at a glance: the relays nodes hold links to, each node's overlay "
                         "(on/off and why), NAT class, candidates and peer count, and the share of direct paths.",
                         examples="  cloudless overlay status\n  cloudless overlay status -o json")
    output_arg(status, ("table", "json", "yaml"))
