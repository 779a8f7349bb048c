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
cfg = SimpleNamespace(node_id="n1", cluster_id="c1", podman_socket=None, containers_conf=None, data_dir=Path({data!r}))
runtime = choose_runtime(cfg, {name!r})
print(type(runtime).__name__, "podman" in sys.modules,
      sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "chardet", "charset_normalizer")))
"""


def choose(name: str, tmp_path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", CHOOSE.format(data=str(tmp_path), name=name)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_the_podman_runtime_leaves_rich_and_charset_detection_unloaded_although_installed(tmp_path: Path) -> None:
    """podman-py imports `rich` for progress bars when it can (3 MiB), requests `charset_normalizer` (2.3 MiB):
    the agent never draws a bar, and Podman's API is UTF-8. Their None entries block them, silently."""
    for name in ("rich", "charset_normalizer"):
        assert importlib.util.find_spec(name) is not None, f"{name} should be installed here (amqtt, requests)"
    out = subprocess.run([sys.executable, "-c", CHOOSE.format(data=str(tmp_path), name="podman")], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "PodmanRuntime True ['chardet', 'charset_normalizer', 'rich.progress']"
    assert out.stderr == ""  # requests' warning about the missing charset detection is silenced


def test_the_process_runtime_loads_neither_podman_nor_rich(tmp_path: Path) -> None:
    assert choose("process", tmp_path) == "ProcessRuntime False []"


def test_a_broker_derived_cluster_id_survives_a_change_of_broker_address(tmp_path: Path) -> None:
    """Password-authenticated agents take their cluster id from the broker's address; moving the broker (a name
    instead of an IP, another port) must not orphan the instances labelled with the first id (review finding)."""
    from edge_agent import cluster

    first = cluster.remembered(tmp_path, cluster.of_broker("192.0.2.10", 1883))
    assert cluster.remembered(tmp_path, cluster.of_broker("broker.home.arpa", 8883)) == first
    assert first == cluster.of_broker("192.0.2.10", 1883)
