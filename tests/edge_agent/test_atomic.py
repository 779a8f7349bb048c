"""The agent's one atomic-write helper: exact modes, a stale or planted temp file, and no temp file left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_agent.atomic import atomic_write


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400, 0o444], ids=oct)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "no-sync"])
def test_replaces_with_the_exact_mode(tmp_path: Path, mode: int, sync: bool) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    old = os.umask(0o077)  # a narrow umask does not narrow the asked mode
    try:
        atomic_write(target, b"new", mode, sync=sync)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_stale_or_planted_temp_file_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep")
    (tmp_path / ".f.tmp").symlink_to(elsewhere)
    atomic_write(tmp_path / "f", b"data", owner=(os.getuid(), os.getgid()))
    assert (tmp_path / "f").read_bytes() == b"data" and elsewhere.read_bytes() == b"keep"


def test_a_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "no" / "f", b"x")
