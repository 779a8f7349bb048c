"""Entry point of the `cloudless` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cloudless import __version__

# command -> the module that registers it; only the chosen command's module is imported, so a small device
# running `cloudless agent` never loads the coordinator, the broker or the admin CLI (memory: see
# docs/benchmarks.md, agent footprint)
REGISTRARS: dict[str, str] = {
    "broker": "broker.cli", "agent": "edge_agent.cli", "coordinator": "coordinator.cli", "up": "cloudless.up",
    **{c: "cloudless.ctl" for c in ("apply", "get", "describe", "delete", "scale", "rollout", "logs", "exec",
                                    "cordon", "uncordon", "drain")},
    "token": "cloudless.admin_cli", "node": "cloudless.admin_cli", "policy": "cloudless.policy_cli",
    "top": "cloudless.top", "secrets": "cloudless.secrets_cli", "storage": "cloudless.storage_cli",
    "relay": "cloudless.relay_cli", "pki": "cloudless.relay_cli", "status": "cloudless.status",
    "version": "cloudless.version", "completion": "cloudless.completion", "down": "cloudless.down",
}


def _command_of(argv: Sequence[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--log-level", "--log-format"):
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudless",
        description="Cloudless: one compute fabric from the devices you already own.",
    )
    parser.add_argument("--version", action="version", version=f"cloudless {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity of daemons (default INFO)")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="daemon logs as text lines or JSON lines (with the node/coordinator id) on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    command = _command_of(sys.argv[1:] if argv is None else argv)
    modules = [REGISTRARS[command]] if command in REGISTRARS else list(dict.fromkeys(REGISTRARS.values()))
    for name in modules:
        importlib.import_module(name).add_parser(sub)
    return parser


def _storage_gateway(parts: Any) -> Any:
    """The S3 gateway for `cloudless coordinator --s3-port` (coordinator/ may not import cloudless/, so it gets this
    from here, on `args`); imported only when called, so other commands never load it."""
    from cloudless.gateway import attach

    return attach(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from cloudless import logs

    logs.configure(args.log_level, args.log_format)
    # the daemons never import this package (the roof): what they need of it is handed down on `args`. A command's
    # own option of the same name wins (`secrets get --version N` is a secret's version, not ours).
    for name, value in (("version", __version__), ("log_identity", logs.set_identity), ("log_to_file", logs.to_file),
                        ("storage_gateway", _storage_gateway)):
        vars(args).setdefault(name, value)
    from broker.errors import BrokerConfigError

    try:
        return int(args.func(args) or 0)
    except BrokerConfigError as exc:
        print(f"cloudless: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
