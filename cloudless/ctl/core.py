"""The core the admin commands share: the clock, `UsageError`, argument types, `Ctx`, error reporting, waits
(`wait_until`), the --watch loop (`watch`) and the argparse helpers (connection flags, -n, -o, --timeout,
`add_command`).

`cloudless.top`, `cloudless.admin_cli` and `cloudless.secrets_cli` build on this too, so every admin command
takes the same connection flags, resolves the server and token the same way and reports failures alike.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from cloudless import render
from cloudless.client import ApiError, ClientError, ConfigError, ConnectionFailed, CoordinatorClient, resolve_config

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
POLL_INTERVAL_S = 1.0  # rollout status, drain and delete --wait
STILL_WAITING_S = 15.0  # repeat an unchanged progress line this often, so a long wait never looks hung
KINDS = {"node": "node", "nodes": "node", "no": "node", "workload": "workload", "workloads": "workload",
         "wl": "workload", "replica": "replica", "replicas": "replica", "event": "event", "events": "event",
         "ev": "event", "peer": "peer", "peers": "peer", "service": "service", "services": "service",
         "svc": "service"}
CLEAR = "\x1b[H\x1b[2J"  # cursor home + erase display (ECMA-48 CUP, ED 2)

T = TypeVar("T")


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


def valid_name(text: str) -> str:
    try:
        return check_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def int_in(low: int, high: int) -> Callable[[str], int]:
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


def duration_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_duration(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g}s and {high:g}s, got {text!r}")
        return value
    return parse


def kind_in(*allowed: str) -> Callable[[str], str]:
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


def as_command(handler: Handler) -> Callable[[argparse.Namespace], int]:
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


def check_output(fmt: str) -> None:
    if fmt == "yaml":
        require_yaml("-o yaml")


def transient(exc: ClientError) -> bool:
    return isinstance(exc, ConnectionFailed) or (isinstance(exc, ApiError) and exc.status == 503)


def workload_ref(namespace: str, name: str) -> str:
    return f"workload/{name}" if namespace == "default" else f"workload/{namespace}/{name}"


# ---- waits ----------------------------------------------------------------------------------------------------

def wait_until(ctx: Ctx, poll: Callable[[], tuple[str | None, bool]], timeout: float) -> bool:
    """Poll until `poll` says done; print each new progress line (and a reminder when it stalls) on stderr."""
    start = ctx.clock.monotonic()
    last, last_shown = None, start
    while True:
        try:
            line, done = poll()
        except ClientError as exc:
            if not transient(exc):
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


def watch(ctx: Ctx, interval: float, fetch: Callable[[], T], *, title: Callable[[str], str],
          show: Callable[[T], str], key: Callable[[T], str]) -> int:
    """Fetch every `interval` until Ctrl-C (exit 0). On a terminal, redraw the screen: `title(HH:MM:SS)`, then
    `show(data)`; elsewhere append `show(data)` only when `key(data)` changed. A transient failure is warned
    about once per outage and retried."""
    tty = sys.stdout.isatty()
    last: str | None = None
    outage = False
    try:
        while True:
            try:
                data = fetch()
                outage = False
            except ClientError as exc:
                if not transient(exc):
                    raise
                if not outage:
                    ctx.warn(f"{exc.message}; retrying every {interval:g}s")
                outage = True
            else:
                snapshot = key(data)
                if tty:
                    stamp = time.strftime("%H:%M:%S", time.localtime(ctx.clock.time()))
                    ctx.out(f"{CLEAR}{title(stamp)}\n\n{show(data)}")
                elif snapshot != last:  # a pipe or a log file gets a new rendering only when something changed
                    ctx.out(("\n" if last is not None else "") + show(data))
                last = snapshot
            ctx.clock.sleep(interval)
    except KeyboardInterrupt:
        return 0


# ---- parsers --------------------------------------------------------------------------------------------------

if TYPE_CHECKING:  # argparse's subparsers class is private and generic only in typeshed
    Sub: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def connection_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (flag > environment > config file)")
    g.add_argument("--server", metavar="URL", help="coordinator REST API, e.g. http://127.0.0.1:8470 "
                   "(env CLOUDLESS_SERVER; default from the config file, else http://127.0.0.1:8470)")
    g.add_argument("--token", metavar="TOKEN", help="API bearer token (env CLOUDLESS_TOKEN; default from the "
                   "config file)")
    g.add_argument("--config", metavar="PATH", help="config file written by `cloudless up` (env CLOUDLESS_CONFIG; "
                   "default $XDG_CONFIG_HOME/cloudless/config.json, i.e. ~/.config/cloudless/config.json)")
    return p


def namespace_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", type=valid_name, metavar="NS", help="namespace (default: default)")


def output_arg(p: argparse.ArgumentParser, choices: Sequence[str] = render.OUTPUT_FORMATS) -> None:
    p.add_argument("-o", "--output", choices=choices, default="table",
                   help="table for people (wide: more columns), json/yaml for scripts (default table)")


def timeout_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--timeout", type=duration_in(1, 24 * 3600), default=300.0, metavar="DURATION",
                   help=f"give up waiting for {what} after this long, e.g. 90s, 5m, 1h (default 5m); exit 1")


def add_command(sub: Sub, name: str, conn: argparse.ArgumentParser, *, help: str, description: str,
                examples: str, func: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, parents=[conn], epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=as_command(func))
    return p
