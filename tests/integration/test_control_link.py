"""The frugal control link end to end (issue 17): a real agent whose heartbeats are rare stays ONLINE at a real
coordinator well past the coordinator's own heartbeat TTL (the node states its heartbeat maximum and the coordinator
derives its TTL from it), and the same agent killed with SIGKILL is declared lost through its last will, long
before that derived TTL could have run out.

Short timers keep it under a minute: the coordinator's --heartbeat-ttl is 5 s; the agent samples and heartbeats
every 30 s at most (its derived TTL is 1.5 x 30 + 30 = 75 s), with a 10 s MQTT keep-alive. Mosquitto is the broker.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.client import Message, MqttClient
from broker.wire import topics
from tests.integration.agent_env import AgentProc
from tests.integration.cluster_env import CoordinatorProc
from tests.integration.conftest import BrokerUnderTest, make_auth

pytestmark = pytest.mark.integration

COORD_TTL_S = 5.0
HEARTBEAT_S = 30
NODE = "A"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[BrokerUnderTest, CoordinatorProc]]:
    broker = BrokerUnderTest(kind="mosquitto", workdir=tmp_path)
    broker.passwords = make_auth(tmp_path)
    broker.start()
    coord = CoordinatorProc(broker, tmp_path, extra=["--heartbeat-ttl", str(COORD_TTL_S), "--lost-after", "5"])
    try:
        coord.start()
        yield broker, coord
    finally:
        coord.stop()
        broker.stop()


async def test_rare_heartbeats_stay_online_and_a_killed_agent_is_lost_by_its_will(
        cluster: tuple[BrokerUnderTest, CoordinatorProc]) -> None:
    broker, coord = cluster
    beats: list[float] = []
    watcher = MqttClient(broker.settings("coordinator@other"))

    def on_heartbeat(_m: Message) -> None:
        beats.append(time.monotonic())

    await watcher.subscribe(topics.node_heartbeat(NODE), on_heartbeat, qos=0)
    await watcher.start()
    agent = AgentProc(NODE, broker, runtime="process", extra=[
        "--profile", "termux-android", "--heartbeat-interval", str(HEARTBEAT_S),
        "--heartbeat-max-interval", str(HEARTBEAT_S), "--keepalive", "10"])
    try:
        await asyncio.to_thread(agent.start)

        def node() -> dict[str, object]:
            return coord.request("GET", f"/v1/nodes/{NODE}")  # type: ignore[no-any-return]

        deadline = time.monotonic() + 30
        while not (beats and (await asyncio.to_thread(node))["online"]):
            assert time.monotonic() < deadline, f"node never online:\n{coord.log_tail()}\n{agent.log_tail()}"
            await asyncio.sleep(0.2)
        # the node stays online through a heartbeat gap of several coordinator TTLs (a TTL that ignored the node's
        # stated maximum would make it SUSPECT 5 s into the gap)
        first = beats[-1]
        silent_online = 0.0
        deadline = time.monotonic() + 2 * HEARTBEAT_S
        while silent_online < 4 * COORD_TTL_S:
            assert time.monotonic() < deadline, f"no long heartbeat gap seen: {beats}\n{agent.log_tail()}"
            view = await asyncio.to_thread(node)
            if len(beats) == 1 or beats[-1] == first:
                assert view["state"] == "online", (view, time.monotonic() - first, coord.log_tail())
                silent_online = time.monotonic() - first
            else:  # a heartbeat came (thresholds): measure the gap after it
                first = beats[-1]
            await asyncio.sleep(0.5)

        # SIGKILL: the socket closes, the broker publishes the last will, the node is lost long before its 75 s TTL
        killed = time.monotonic()
        await asyncio.to_thread(agent.kill, signal.SIGKILL)
        while (await asyncio.to_thread(node))["state"] != "lost":
            assert time.monotonic() - killed < 30, f"not lost by its will:\n{coord.log_tail()}"
            await asyncio.sleep(0.2)
        events = coord.request("GET", f"/v1/events?object=node/{NODE}")
        assert "last will" in str(events), events
    finally:
        await watcher.stop()
        await asyncio.to_thread(agent.cleanup)
