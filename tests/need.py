"""What a test needs from the machine: a test whose system package, user or privilege is missing is skipped on a
developer's machine (saying what to run), and fails under CI, where `make test` installs everything."""

from __future__ import annotations

import os

import pytest


def unavailable(msg: str) -> None:
    """Skip loudly, or fail in CI where every system package must be present."""
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{why}: run as root")
