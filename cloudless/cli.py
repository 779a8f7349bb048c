"""Entry point of the `cloudless` console script."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cloudless import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudless",
        description="Cloudless: one compute fabric from the devices you already own.",
    )
    parser.add_argument("--version", action="version", version=f"cloudless {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity of daemons (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from broker import cli as broker_cli
    from cloudless import up
    from coordinator import cli as coordinator_cli
    from edge_agent import cli as agent_cli

    broker_cli.add_parser(sub)
    agent_cli.add_parser(sub)
    coordinator_cli.add_parser(sub)
    up.add_parser(sub)
    from cloudless import ctl
    ctl.add_parser(sub)
    from cloudless import admin_cli
    admin_cli.add_parser(sub)
    from cloudless import policy_cli
    policy_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.log_level != "DEBUG":  # amqtt and its state machine narrate every packet at INFO
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from broker.errors import BrokerConfigError

    try:
        return int(args.func(args) or 0)
    except BrokerConfigError as exc:
        print(f"cloudless: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
