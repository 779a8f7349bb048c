"""Two clusters on one machine (issue 16, item 2): two brokers, two agents that both call themselves node `A`,
one (rootful) Podman. Neither agent may take the other's containers for orphans: each runs its own replica,
created once and never stopped, for as long as the test watches. Desired state is published by hand, as each
cluster's coordinator would. (The shared tmpfs of secret files: tests/edge_agent/test_secrets.py.)"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.wire import ReplicaState
from tests.edge_agent.builders import make_desired, make_spec
from tests.integration.agent_env import IMAGE, AgentProc, Observer, run_podman
from tests.integration.conftest import BrokerUnderTest, make_auth, require_binary

pytestmark = pytest.mark.integration
WATCH_S = 10.0


@pytest.fixture
def two() -> Iterator[list[tuple[BrokerUnderTest, AgentProc]]]:
    require_binary("podman")
    pairs = []
    try:
        for _ in range(2):
            workdir = Path(tempfile.mkdtemp(prefix="cl-two-"))
            broker = BrokerUnderTest(kind="embedded", workdir=workdir)
            broker.passwords = make_auth(workdir)
            broker.start()
            agent = AgentProc(node_id="A", broker=broker, runtime="podman")
            agent.extra += ["--podman-socket", str(agent.workdir / "podman.sock")]
            pairs.append((broker, agent))
        yield pairs
    finally:
        for broker, agent in pairs:
            agent.cleanup()
            broker.stop()


def containers_of_node_a() -> dict[str, str]:
    """replica -> container id of every container labelled node A on this Podman, whichever cluster."""
    fmt = '{{.ID}} {{index .Labels "cloudless.replica"}}'
    out = run_podman(["ps", "-a", "--filter", "label=cloudless.node=A", "--format", fmt])
    return {parts[1]: parts[0] for line in out.splitlines() if len(parts := line.split()) == 2}


async def test_two_clusters_with_a_node_of_the_same_name_leave_each_other_alone(
    two: list[tuple[BrokerUnderTest, AgentProc]],
) -> None:
    (b1, a1), (b2, a2) = two
    assert a1.cluster_id != a2.cluster_id
    async with Observer(b1) as o1, Observer(b2) as o2:
        for agent in (a1, a2):
            agent.start()
        rids = {"one-0": (o1, a1), "two-0": (o2, a2)}
        for rid, (obs, _agent) in rids.items():
            await obs.publish_desired(make_desired("A", make_spec(rid, workload=rid[:-2], image=IMAGE,
                                                                  command=("sleep", "300")), generation=1))
        for rid, (obs, agent) in rids.items():
            await obs.until(lambda o=obs, r=rid: (x := o.replica("A", r)) is not None  # type: ignore[misc]
                            and x.state is ReplicaState.RUNNING, 90, f"{rid} running", agent)
        first = containers_of_node_a()
        assert set(first) >= set(rids), first
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            now = containers_of_node_a()
            for rid in rids:
                assert now.get(rid) == first[rid], (f"{rid}: container replaced or removed ({first} -> {now})\n"
                                                    f"--- agent 1 ---\n{a1.log_tail()}\n--- agent 2 ---\n"
                                                    f"{a2.log_tail()}")
            await asyncio.sleep(0.5)
        for rid, (obs, _agent) in rids.items():
            r = obs.replica("A", rid)
            assert r is not None and r.state is ReplicaState.RUNNING and r.restarts == 0, (rid, r)
