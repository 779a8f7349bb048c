"""`cloudless logs` and `exec` (a replica's output, a command run in it) and `cordon`, `uncordon` and `drain`
(a node's schedulability; drain waits until its replicas have moved).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudless import render
from cloudless.client import ClientError, JSONObject, resolve_config
from cloudless.ctl.core import (
    Ctx,
    UsageError,
    add_command,
    connection_flags,
    int_in,
    namespace_arg,
    timeout_arg,
    valid_name,
    wait_until,
    workload_ref,
)

if TYPE_CHECKING:
    from cloudless.ctl.core import Sub


# ---- logs, exec -----------------------------------------------------------------------------------------------

def pick_replica(ctx: Ctx, workload: str, replica: str | None) -> str:
    """The replica asked for, else the workload's first replica that has a node (said on stderr if it had to pick)."""
    if replica is not None:
        return replica
    replicas = ((ctx.api.get_workload(ctx.namespace, workload).get("status") or {}).get("replicas")) or []
    placed = [r for r in replicas if r.get("node") and isinstance(r.get("id"), str)]
    if not placed:
        raise ClientError(f"{workload_ref(ctx.namespace, workload)} has no replica running on a node",
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


FOLLOW_INTERVAL_S = 2.0  # `logs -f` asks again this often (the agent keeps no stream open; see cmd_logs)
FOLLOW_TAIL = 1000  # lines asked for on each poll: more than a replica writes in FOLLOW_INTERVAL_S, or a gap shows


def cmd_logs(args: argparse.Namespace, ctx: Ctx) -> int:
    replica = pick_replica(ctx, args.workload, args.replica)
    output = ctx.api.logs(ctx.namespace, args.workload, replica, tail=args.tail).get("output")
    text = output if isinstance(output, str) else ""
    _write_output(text)
    if not text and not args.follow:
        ctx.err(f"(no output yet from {replica})")
        return 0
    if args.follow:
        return _follow(args, ctx, replica, text.splitlines())
    return 0


def _follow(args: argparse.Namespace, ctx: Ctx, replica: str, seen: list[str]) -> int:
    """`logs -f`: the agent answers a tail, not a stream, so ask again every FOLLOW_INTERVAL_S and print what is new
    (`new_lines`). Ctrl-C ends it with status 0: following until interrupted is what was asked for."""
    if not seen:
        ctx.err(f"(no output yet from {replica}; following, Ctrl-C to stop)")
    try:
        while True:
            ctx.clock.sleep(FOLLOW_INTERVAL_S)
            output = ctx.api.logs(ctx.namespace, args.workload, replica, tail=FOLLOW_TAIL).get("output")
            lines = output.splitlines() if isinstance(output, str) else []
            fresh, gap = new_lines(seen, lines)
            if gap:
                ctx.err(f"(more than {FOLLOW_TAIL} lines since the last look; some were skipped)")
            if fresh:
                _write_output("\n".join(fresh))
            seen = lines
    except KeyboardInterrupt:
        return 0


def new_lines(before: Sequence[str], now: Sequence[str]) -> tuple[list[str], bool]:
    """The lines of tail `now` that follow tail `before` (two looks at the same growing log), and whether the two
    looks share nothing (more was written than a tail holds, or the log started over: then all of `now` is new).
    The longest suffix of `before` that is a prefix of `now` is what both saw."""
    if not before:
        return list(now), False
    for k in range(min(len(before), len(now)), 0, -1):
        if list(before[-k:]) == list(now[:k]):
            return list(now[k:]), False
    return list(now), bool(now)


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
    if args.stdin or args.tty:
        return _interactive(args, ctx, command)
    replica = pick_replica(ctx, args.workload, args.replica)
    if sys.stderr.isatty():
        ctx.err(f"running {command[0]} in {replica} (up to {args.timeout}s) ...")
    result = ctx.api.exec(ctx.namespace, args.workload, replica, command, timeout_seconds=args.timeout)
    _write_output(result.get("output"))
    return exit_status(result.get("exitCode"))


def _interactive(args: argparse.Namespace, ctx: Ctx, command: list[str]) -> int:
    """`exec -i/-t`: a session over the API's WebSocket (cloudless.terminal). `-t` needs a terminal on stdin; without
    one it goes on without (as kubectl does), saying so."""
    from cloudless import terminal

    tty = bool(args.tty)
    if tty and not (os.isatty(0) and os.isatty(1)):
        ctx.err("cloudless: warning: -t needs a terminal on standard input and output; running without one")
        tty = False
    replica = pick_replica(ctx, args.workload, args.replica)
    cfg = resolve_config(server=args.server, token=args.token, config=args.config, env=ctx.env, warn=ctx.warn)
    target = terminal.SessionTarget(cfg.server, cfg.token, cfg.ca, ctx.namespace, args.workload, replica)
    return exit_status(terminal.run(target, command, tty=tty, stdin=bool(args.stdin)))


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

def _exec_arguments(p: argparse.ArgumentParser) -> None:
    namespace_arg(p)
    p.add_argument("-i", "--stdin", action="store_true",
                   help="pass standard input to the command, interactively (Ctrl-C ends the session)")
    p.add_argument("-t", "--tty", action="store_true",
                   help="give the command a terminal: raw mode here, window size followed (with -i: a shell)")
    p.add_argument("--timeout", type=int_in(1, 300), default=30, metavar="SECONDS",
                   help="give the command at most this many seconds, 1..300 (default 30; without -i/-t)")


def _exec_parser() -> argparse.ArgumentParser:
    """What may stand before `--` in `exec WORKLOAD [REPLICA] [options] -- CMD`: argparse cannot split that."""
    p = argparse.ArgumentParser(prog="cloudless exec", add_help=False, parents=[connection_flags()],
                                usage="cloudless exec [options] WORKLOAD [REPLICA] [options] -- CMD [ARG ...]")
    p.add_argument("workload", type=valid_name, metavar="WORKLOAD")
    p.add_argument("replica", nargs="?", type=valid_name, metavar="REPLICA")
    _exec_arguments(p)
    return p


def add_logs_exec(sub: Sub, conn: argparse.ArgumentParser) -> None:
    p = add_command(sub, "logs", conn, func=cmd_logs, help="print a replica's recent output",
                    description="Print the recent output of one replica of a workload (default: its first replica "
                    "that runs on a node).",
                    examples="  cloudless logs web\n  cloudless logs web web-1a2b3 --tail 50\n  cloudless logs -f web")
    p.add_argument("workload", type=valid_name, metavar="WORKLOAD")
    p.add_argument("replica", nargs="?", type=valid_name, metavar="REPLICA")
    namespace_arg(p)
    p.add_argument("--tail", type=int_in(1, 10_000), default=100, metavar="N",
                   help="last N lines, 1..10000 (default 100)")
    p.add_argument("-f", "--follow", action="store_true",
                   help=f"keep printing new output (asks every {FOLLOW_INTERVAL_S:g}s) until Ctrl-C")
    p = add_command(sub, "exec", conn, func=cmd_exec, help="run a command in a replica",
                    description="Run a command inside one replica of a workload (default: its first replica on a node) "
                    "and print its output; exit with the command's exit code. The command comes after `--`. With "
                    "-i and -t it runs interactively on a terminal (admin credential; the session ends when the "
                    "command exits, or after an hour with nothing typed or printed).",
                    examples="  cloudless exec web -- ls -l /\n"
                    "  cloudless exec -it web -- sh\n"
                    "  cloudless exec web web-1a2b3 -n staging -- sh -c 'exit 3'")
    _exec_arguments(p)
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="WORKLOAD [REPLICA] -- CMD [ARG ...]")
    p.set_defaults(workload=None, replica=None)


def add_nodes(sub: Sub, conn: argparse.ArgumentParser) -> None:
    texts = {
        "cordon": ("stop placing new replicas on a node", "Mark a node unschedulable; what runs there stays."),
        "uncordon": ("allow placing replicas on a node again", "Make a cordoned or drained node schedulable."),
        "drain": ("move every replica off a node (e.g. before maintenance)",
                  "Cordon the node and move its replicas elsewhere (the coordinator keeps enough of each "
                  "workload available); wait, showing progress on stderr, until none is left. Exit 1 on timeout "
                  "or if the drain is cancelled (uncordon)."),
    }
    for action, (help_text, description) in texts.items():
        p = add_command(sub, action, conn, func=cmd_node_action, help=help_text, description=description,
                        examples=f"  cloudless {action} pi-1")
        p.add_argument("node", type=valid_name, metavar="NODE")
        p.set_defaults(action=action)
        if action == "drain":
            p.add_argument("--no-wait", action="store_true", help="return as soon as the drain has started")
            timeout_arg(p, "the drain")
