"""`cloudless version`: this CLI's version and, when the coordinator answers, the coordinator's (GET /healthz).

Exit 0 when both are known (or with --client, which asks no server), 1 when the coordinator could not be asked:
the client line is printed either way.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cloudless import __version__
from cloudless.client import ClientError
from cloudless.ctl import Ctx, add_command, connection_flags

if TYPE_CHECKING:
    from cloudless.ctl import Sub


def cmd_version(args: argparse.Namespace, ctx: Ctx) -> int:
    ctx.out(f"client       cloudless {__version__}")
    if args.client:
        return 0
    try:
        health = ctx.api.request("GET", "/healthz", timeout=5.0).body
    except ClientError as exc:
        ctx.err(f"coordinator  not reachable: {exc.message}")
        if exc.hint:
            ctx.err(f"cloudless: hint: {exc.hint}")
        return 1
    server = health.get("version") if isinstance(health, dict) else None
    # a coordinator older than the version field answers /healthz without one
    ctx.out(f"coordinator  cloudless {server or 'unknown (older than 0.1)'} at {ctx.api.server}")
    return 0


def add_parser(sub: Sub) -> None:
    p = add_command(sub, "version", connection_flags(), func=cmd_version,
                    help="print the CLI's version and the coordinator's",
                    description="Print this CLI's version and, when the coordinator answers, its version too "
                    "(exit 1 when it cannot be asked; --client asks no server).",
                    examples="  cloudless version\n  cloudless version --client")
    p.add_argument("--client", action="store_true", help="only this CLI's version (no request)")
