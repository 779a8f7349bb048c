"""Routine agent restarts are not crashes (issue 16, item 4).

A real broker, a real coordinator and a real agent (process runtime) restarted with SIGTERM twenty times in quick
succession, some right after it started a replica: every stop must reach the broker as a clean goodbye (the
offline status, then DISCONNECT), never as the agent's last will, so the coordinator records no NodeLost and
replaces nothing. Bounded: twenty restarts, each wait capped."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import wire
from broker.client import Message, MqttClient
from broker.wire import NodeStatus, Presence, topics
from tests.integration.agent_env import AgentProc
from tests.integration.cluster_env import CoordinatorProc, sleeper, until
from tests.integration.conftest import BrokerUnderTest, make_auth

pytestmark = pytest.mark.integration
RESTARTS = 20


@pytest.fixture(params=["embedded", "mosquitto"])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[BrokerUnderTest, CoordinatorProc, AgentProc]]:
    workdir = Path(tempfile.mkdtemp(prefix="cl-restarts-"))
    broker = BrokerUnderTest(kind=request.param, workdir=workdir)
    broker.passwords = make_auth(workdir)
    broker.start()
    coord = CoordinatorProc(broker, workdir)
    agent = AgentProc(node_id="A", broker=broker, runtime="process")
    try:
        coord.start()
        yield broker, coord, agent
    finally:
        agent.cleanup()
        coord.stop()
        broker.stop()


def _wait_log(agent: AgentProc, needle: str, after: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in agent.log_path.read_text(errors="replace")[after:]:
            return True
        time.sleep(0.02)
    return False


async def test_twenty_quick_sigterm_restarts_are_no_crash(
    cluster: tuple[BrokerUnderTest, CoordinatorProc, AgentProc],
) -> None:
    broker, coord, agent = cluster
    wills: list[float] = []

    def on_status(m: Message) -> None:
        msg = wire.decode_node_message(m.topic, m.payload)
        if isinstance(msg, NodeStatus) and msg.presence is Presence.OFFLINE and msg.ts == 0.0 and not m.retain:
            wills.append(time.monotonic())

    watcher = MqttClient(broker.settings("coordinator@other"))
    await watcher.start()
    await watcher.wait_connected(10)
    await watcher.subscribe(topics.node_status("A"), on_status)
    try:
        agent.start()
        until(lambda: any(n["online"] for n in coord.request("GET", "/v1/nodes")["items"]), 30, "node A online",
              coord.log_tail, agent.log_tail)
        for i in range(RESTARTS):
            mark = agent.log_path.stat().st_size
            if i % 2:  # right after it started a replica: a new one per round, SIGTERM as soon as it is created
                coord.apply(sleeper("s", 1 + i // 2))
                assert await asyncio.to_thread(_wait_log, agent, "creating s-", mark, 30), agent.log_tail()
            agent.kill(signal.SIGTERM)
            agent.start()
        # the verdict on a will comes within a second; give it a few and the last restart time to settle
        await asyncio.sleep(3)
        until(lambda: any(n["online"] for n in coord.request("GET", "/v1/nodes")["items"]), 30, "node A online",
              coord.log_tail, agent.log_tail)
        lost = coord.request("GET", "/v1/events?reason=NodeLost")["items"]
        assert not wills, f"{len(wills)} of {RESTARTS} SIGTERM restarts published the last will\n{agent.log_tail()}"
        assert lost == [], lost
    finally:
        await watcher.stop()
