"""examples/termux-process.yaml runs on a non-root process-runtime agent, as it would on a phone under Termux.

A real embedded broker, a real coordinator (default admission policy) and a real agent with `--runtime process`
running as the unprivileged test user (`cloudless-test`, prepared by scripts/setup-rootless.sh): the example is
applied unchanged, becomes ready through its own HTTP readiness probe, answers on its host port, and its process
runs as the agent's user, not root. Every wait is bounded."""

from __future__ import annotations

import json
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.agent_env import AgentProc
from tests.integration.cluster_env import CoordinatorProc, until
from tests.integration.conftest import BrokerUnderTest, make_auth
from tests.need import require_root, unavailable

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "termux-process.yaml"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))  # the example binds every address
        except OSError:
            return False
    return True


@pytest.fixture
def cluster() -> Iterator[tuple[CoordinatorProc, AgentProc]]:
    require_root("the agent runs as the unprivileged test user (runuser)")
    workdir = Path(tempfile.mkdtemp(prefix="cl-process-example-"))
    broker = BrokerUnderTest(kind="embedded", workdir=workdir)
    broker.passwords = make_auth(workdir)
    broker.start()
    coord = CoordinatorProc(broker, workdir)
    agent = AgentProc(node_id="A", broker=broker, runtime="process", rootless=True)
    try:
        coord.start()
        agent.start()
        yield coord, agent
    finally:
        agent.cleanup()
        coord.stop()
        broker.stop()


def test_termux_example_runs_on_a_non_root_process_agent(cluster: tuple[CoordinatorProc, AgentProc]) -> None:
    coord, agent = cluster
    assert agent.user is not None and agent.user.pw_uid != 0
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    port = int(doc["spec"]["ports"][0]["hostPort"])
    if not _port_free(port):
        unavailable(f"port {port} (the example's) is taken on this machine; free it to run this test")
    logs = (coord.log_tail, agent.log_tail)
    until(lambda: any(n["online"] for n in coord.request("GET", "/v1/nodes")["items"]), 60, "node A online", *logs)

    created = coord.apply(doc)
    assert created["metadata"]["name"] == "termux-hello"
    until(lambda: coord.workload("termux-hello")["status"]["ready"] == 1, 120,
          "termux-hello ready (its HTTP readiness probe passing)", *logs)
    replica = coord.workload("termux-hello")["status"]["replicas"][0]
    assert replica["node"] == "A" and replica["state"] == "running"

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as resp:
        assert resp.read().decode().startswith("hello from a process on ")

    # the process runs as the agent's own (non-root) user: an unprivileged agent cannot start anything else
    runs = list((agent.data_dir / "process").glob("p-*/run.json"))
    assert len(runs) == 1, runs
    pid = json.loads(runs[0].read_text())["pid"]
    uid_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    assert {int(u) for u in uid_line.split()[1:]} == {agent.user.pw_uid}
