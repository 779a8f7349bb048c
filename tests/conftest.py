"""Suite-wide guard: every test must leave the test process's working directory reachable.

Subprocesses started by later tests inherit it (`python -m cloudless ...` imports the checkout from it); a test that
leaves it unreachable (a mount or namespace change under it) would fail everything after it with confusing errors
(`No module named cloudless`, `getcwd() failed`). That test is failed by name instead, and the directory restored
so the rest of the suite runs on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _working_directory_stays_reachable() -> Iterator[None]:
    yield
    try:
        os.getcwd()
    except OSError as exc:
        os.chdir(ROOT)
        pytest.fail(f"this test left the working directory unreachable ({exc}); restored to {ROOT}")
