"""The admin commands: `cloudless apply|get|describe|delete|scale|rollout|logs|exec|cordon|uncordon|drain`.

A thin adapter over `cloudless.client` (HTTP) and `cloudless.render` (text). Each command validates its
arguments before any request (argparse types, then `UsageError`), resolves the server and token only when it
first needs them, and reports failures as `cloudless: error: ...` plus a `cloudless: hint: ...` line. Exit codes:
0 ok, 1 the operation failed (refused, unreachable, rollout failed, timed out), 2 usage or configuration error,
130 interrupted; `exec` exits with the remote command's code. Waits (rollout status, drain, delete --wait) print
progress on stderr; results go to stdout so scripts can parse them.

Never import aiohttp or the coordinator package here: admins run this CLI on machines that have neither.

Modules, one concept each:
- `core`: what every admin command shares (the clock, `UsageError`, argument types, `Ctx`, error reporting,
  `wait_until`, the `watch` loop, the connection flags and `add_command`); `cloudless.top`, `admin_cli` and
  `secrets_cli` use it too.
- `documents`: apply and delete, and reading Workload documents from -f files.
- `get`: get, including events and --watch.
- `rollout`: describe, scale and rollout status|history|undo.
- `operate`: logs and exec on a replica; cordon, uncordon and drain on a node.

This package re-exports what other modules use, so they import from `cloudless.ctl`. Tests that swap the clock
patch `cloudless.ctl.core.CLOCK`, where `as_command` reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudless.ctl.core import (
    Ctx,
    UsageError,
    add_command,
    as_command,
    check_name,
    connection_flags,
    duration_in,
    namespace_arg,
    parse_duration,
    report,
    require_yaml,
    wait_until,
    watch,
)
from cloudless.ctl.documents import Document, add_apply_delete, load_documents, read_documents
from cloudless.ctl.get import add_get, event_object
from cloudless.ctl.operate import add_logs_exec, add_nodes, exit_status, split_exec_words
from cloudless.ctl.overlay import add_overlay
from cloudless.ctl.rollout import add_describe, add_scale_rollout, rollout_verdict

if TYPE_CHECKING:
    from cloudless.ctl.core import Sub as Sub

__all__ = [
    "Ctx", "Document", "UsageError", "add_command", "add_parser", "as_command", "check_name", "connection_flags",
    "duration_in", "event_object", "exit_status", "load_documents", "namespace_arg", "parse_duration",
    "read_documents", "report", "require_yaml", "rollout_verdict", "split_exec_words", "wait_until", "watch",
]


def add_parser(sub: Sub) -> None:
    """Register the commands, in the order `cloudless --help` lists them."""
    conn = connection_flags()
    add_apply_delete(sub, conn)
    add_get(sub, conn)
    add_describe(sub, conn)
    add_scale_rollout(sub, conn)
    add_logs_exec(sub, conn)
    add_nodes(sub, conn)
    add_overlay(sub, conn)
