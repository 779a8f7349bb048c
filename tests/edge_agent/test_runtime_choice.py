"""Which runtime `cloudless agent` builds, and what choosing it loads into the agent's long-lived process."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHOOSE = """
import sys
from pathlib import Path
from types import SimpleNamespace
from edge_agent.cli import choose_runtime
cfg = SimpleNamespace(node_id="n1", podman_socket=None, containers_conf=None, data_dir=Path({data!r}))
runtime = choose_runtime(cfg, {name!r})
print(type(runtime).__name__, "podman" in sys.modules,
      sorted(m for m in sys.modules if m == "rich" or m.startswith("rich.")))
"""


def choose(name: str, tmp_path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", CHOOSE.format(data=str(tmp_path), name=name)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_the_podman_runtime_leaves_rich_unloaded_although_it_is_installed(tmp_path: Path) -> None:
    """podman-py imports `rich` for progress bars when it can (3 MiB); the agent never draws them."""
    assert importlib.util.find_spec("rich") is not None, "rich (amqtt's dependency) should be installed here"
    assert choose("podman", tmp_path) == "PodmanRuntime True ['rich.progress']"  # the None entry that blocks it


def test_the_process_runtime_loads_neither_podman_nor_rich(tmp_path: Path) -> None:
    assert choose("process", tmp_path) == "ProcessRuntime False []"
