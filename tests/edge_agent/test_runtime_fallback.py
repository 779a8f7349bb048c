"""An agent without its Podman support runs the process runtime with one clear warning (issue 15, item 4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.runtime import choice

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("requested", "on_path", "missing", "expected", "warns"), [
    ("auto", True, None, "podman", False),
    ("auto", False, None, "process", False),
    ("auto", True, "requests", "process", True),
    ("auto", False, "requests", "process", False),
    ("podman", True, None, "podman", False),
    ("podman", False, None, "podman", False),  # asked for: Podman's own error says what is missing
    ("podman", True, "podman", "process", True),
    ("process", True, None, "process", False),
], ids=["auto", "auto-no-podman", "auto-no-extra", "auto-neither", "profile", "profile-no-program",
        "profile-no-extra", "process"])
def test_decide(requested: str, on_path: bool, missing: str | None, expected: str, warns: bool) -> None:
    got = choice.decide(requested, podman_on_path=on_path, missing_module=missing)
    assert got.name == expected and bool(got.warning) is warns
    if warns:
        assert f"'{missing}' is missing" in got.warning and "[podman]" in got.warning and "\n" not in got.warning


def test_without_requests_installed_the_agent_gets_the_process_runtime(tmp_path: Path) -> None:
    """A real interpreter where `requests` cannot be found (a meta-path finder hides it, as a venv without the
    extra would) and `podman` is on PATH: the choice is the process runtime, with the warning, no traceback."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "podman").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "podman").chmod(0o755)
    code = """
import sys
import importlib.machinery
class Blocker(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split('.')[0] == 'requests':
            return None
        return super().find_spec(name, path, target)
sys.meta_path = [m for m in sys.meta_path if m is not importlib.machinery.PathFinder] + [Blocker]
sys.modules.pop('requests', None)
from edge_agent.runtime import choice
c = choice.choose('podman')
print(c.name)
print(c.warning)
"""
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=env, check=True)
    name, warning = out.stdout.splitlines()[:2]
    assert name == "process" and "'requests' is missing" in warning
    assert out.stderr == ""
