"""Issue 15 item 7: an enrolled node that is offline stays listed after a coordinator restart, until deleted.

Membership lives only in memory and is rebuilt from the broker's retained node status; the store keeps no record
of which nodes exist. With the broker's retained state kept, a restart still lists the offline node (the first
test). The embedded broker that `cloudless up` runs keeps its retained messages in memory only, and `up` restarts
it with the coordinator: then nothing tells the new coordinator the node exists and it vanishes from `get nodes`
(the second test: the coordinator keeps each node's last status in its store, /members/<id>).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from broker import wire
from broker.wire import NodeFacts, NodeStatus, Presence, topics
from coordinator.membership import WILL_TS
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.store import SqliteStore
from tests.pair.fakebus import FakeBroker

FACTS = NodeFacts(arch="aarch64", os="linux", cpu_count=4, memory_bytes=4 * 1024**3, runtime="process",
                  abilities=("process",), profile="raspberry-pi-4")


async def _until(pred: object, what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _coordinator(db: Path, bus: FakeBroker) -> tuple[Coordinator, SqliteStore]:
    store = SqliteStore(str(db))
    coord = Coordinator(CoordinatorConfig(coordinator_id="c1", tick_s=0.05), store=store,
                        mqtt=bus.client("coordinator@c1"))  # type: ignore[arg-type]
    await coord.start()
    return coord, store


async def _node_came_and_went(bus: FakeBroker, coord: Coordinator) -> None:
    """The node joins, then its agent dies: the broker publishes its last will (retained, ts 0)."""
    node = bus.client("pi")
    await node.start()
    node.publish_nowait(topics.node_status("pi"), wire.encode(NodeStatus(
        node_id="pi", presence=Presence.ONLINE, ts=time.time(), facts=FACTS)), retain=True)
    await _until(lambda: "pi" in coord.cluster.members, "the node joined")
    node.publish_nowait(topics.node_status("pi"), wire.encode(NodeStatus(
        node_id="pi", presence=Presence.OFFLINE, ts=WILL_TS, facts=FACTS)), retain=True)
    await _until(lambda: coord.cluster.members["pi"].state.value != "online", "the node went offline")
    await asyncio.sleep(0.3)  # a few rounds: whatever the coordinator records about the node is written


async def test_an_offline_node_stays_listed_across_a_restart_when_the_broker_kept_its_status(tmp_path: Path) -> None:
    bus = FakeBroker()
    coord, store = await _coordinator(tmp_path / "state.db", bus)
    await _node_came_and_went(bus, coord)
    await coord.stop()
    await store.close()
    coord, store = await _coordinator(tmp_path / "state.db", bus)  # the same broker: its retained status replays
    try:
        await _until(lambda: "pi" in coord.cluster.members, "the node listed again")
        assert coord.cluster.members["pi"].state.value != "online"
    finally:
        await coord.stop()
        await store.close()


async def test_an_offline_node_stays_listed_across_a_restart_of_coordinator_and_broker(tmp_path: Path) -> None:
    bus = FakeBroker()
    coord, store = await _coordinator(tmp_path / "state.db", bus)
    await _node_came_and_went(bus, coord)
    await coord.stop()
    await store.close()
    coord, store = await _coordinator(tmp_path / "state.db", FakeBroker())  # `make up` again: a fresh broker
    try:
        await asyncio.sleep(0.5)  # the settle period's start: retained state (there is none) would arrive now
        assert "pi" in coord.cluster.members, "the enrolled, offline node vanished from the node list"
        info = coord.cluster.members["pi"]
        assert info.state.value in ("offline", "lost")
        assert info.status is not None and info.status.facts.arch == "aarch64", "its last facts are kept"
    finally:
        await coord.stop()
        await store.close()
