"""Issue 16, Medium 5: a coordinator whose epoch went back (state.db restored from an older copy) was ignored by
every node, logged only at DEBUG. Agents report the highest epoch they honour; the coordinator notices."""

from __future__ import annotations

import asyncio

from broker import wire
from broker.wire import Heartbeat, NodeStatus, Presence, topics
from tests.coordinator.rest_harness import rest


async def test_a_coordinator_behind_its_nodes_raises_its_epoch_and_says_so() -> None:
    async with rest() as r:
        assert r.coord.epoch == 1
        status = NodeStatus(node_id="pi", presence=Presence.ONLINE, ts=r.coord.clock())
        r.bus.route("pi", topics.node_status("pi"), wire.encode(status), True)
        await asyncio.sleep(0.05)
        hb = Heartbeat(node_id="pi", seq=1, ts=r.coord.clock(), max_epoch=41)
        r.bus.route("pi", topics.node_heartbeat("pi"), wire.encode(hb), False)
        for _ in range(200):
            if r.coord.epoch > 41:
                break
            await asyncio.sleep(0.02)
        assert r.coord.epoch == 42
        assert (await r.store.get("/meta/epoch")).value == b"42"  # type: ignore[union-attr]
        (ev,) = [e for e in r.coord.journal.events if e.reason == "EpochRegressed"]
        assert "41" in ev.message and "restored" in ev.message
        assert (await r.client.get("/readyz")).status == 200


async def test_an_impossible_epoch_from_one_node_is_ignored() -> None:
    """A node that reports an epoch beyond any real one (lying, or broken) must not drag the coordinator's epoch
    past what the wire can carry: every desired state would then be refused, for every node."""
    async with rest() as r:
        status = NodeStatus(node_id="pi", presence=Presence.ONLINE, ts=r.coord.clock())
        r.bus.route("pi", topics.node_status("pi"), wire.encode(status), True)
        await asyncio.sleep(0.05)
        hb = Heartbeat(node_id="pi", seq=1, ts=r.coord.clock(), max_epoch=2**62)
        r.bus.route("pi", topics.node_heartbeat("pi"), wire.encode(hb), False)
        await asyncio.sleep(0.5)  # several rounds
        assert r.coord.epoch == 1
        assert not [e for e in r.coord.journal.events if e.reason == "EpochRegressed"]
