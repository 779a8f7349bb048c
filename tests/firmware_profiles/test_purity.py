"""The cores of firmware_profiles do no I/O: only probe.py (the adapter) and loader.py (files) may."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "firmware_profiles"
CORES = ["detect.py", "gates.py", "model.py", "schema.py", "units.py", "errors.py"]
FORBIDDEN = {
    "os", "sys", "io", "pathlib", "platform", "importlib", "psutil", "time", "datetime", "random", "socket",
    "subprocess", "asyncio", "shutil", "glob", "firmware_profiles.probe", "firmware_profiles.loader",
}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", CORES)
def test_core_imports_no_io(module: str) -> None:
    bad = {m for m in imported_modules(PACKAGE / module) if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_package_needs_only_the_stdlib() -> None:
    """The agent runs on tiny devices: only probe.py may use psutil (imported lazily and guarded)."""
    for path in PACKAGE.glob("*.py"):
        allowed = {"firmware_profiles", "__future__", *(["psutil"] if path.name == "probe.py" else [])}
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in allowed, (path.name, name)
