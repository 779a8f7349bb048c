"""The MQTT behaviour Cloudless relies on, proven against both brokers (embedded amqtt-based, and Mosquitto with
the generated configuration): retained state, last wills (clean loss and silent keep-alive expiry), persistent
sessions, QoS 1 redelivery, ACLs, and the amqtt retained-message leak closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from broker import wire
from broker.client import Message, MqttClient, Will
from broker.errors import MqttError
from broker.wire import topics
from tests.integration.conftest import BrokerUnderTest
from tests.integration.rawmqtt import PUBLISH, RawClient

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0


async def eventually(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@asynccontextmanager
async def connected(broker: BrokerUnderTest, user: str, **kw: object) -> AsyncIterator[MqttClient]:
    client = MqttClient(broker.settings(user, **kw))  # type: ignore[arg-type]
    await client.start()
    try:
        await client.wait_connected(10)
        yield client
    finally:
        await client.stop()


def status(node: str, presence: wire.Presence) -> bytes:
    return wire.encode(wire.NodeStatus(node_id=node, presence=presence, ts=NOW))


def desired(node: str, generation: int = 1) -> bytes:
    return wire.encode(wire.DesiredState(node_id=node, generation=generation, epoch=1, issued_at=NOW))


async def test_retained_state_reaches_a_late_subscriber(broker: BrokerUnderTest) -> None:
    async with connected(broker, "coordinator@test") as coord:
        assert await coord.publish(topics.node_desired("A"), desired("A", 7), qos=1, retain=True) == "delivered"
    got: list[Message] = []
    async with connected(broker, "A") as node:
        await node.subscribe(topics.node_desired("A"), got.append)
        await eventually(lambda: len(got) == 1, what="retained desired state")
        msg = got[0]
        assert msg.retain is True
        decoded = wire.decode_node_message(msg.topic, msg.payload)
        assert isinstance(decoded, wire.DesiredState) and decoded.generation == 7


async def test_last_will_on_abrupt_connection_loss(broker: BrokerUnderTest) -> None:
    seen: list[Message] = []
    async with connected(broker, "coordinator@test") as coord:
        await coord.subscribe(topics.node_channel_filter(topics.Channel.STATUS), seen.append)
        will = Will(topics.node_status("A"), status("A", wire.Presence.OFFLINE), qos=1, retain=True)
        node = MqttClient(broker.settings("A", will=will))
        await node.start()
        await node.wait_connected(10)
        await node.publish(topics.node_status("A"), status("A", wire.Presence.ONLINE), qos=1, retain=True)
        await eventually(lambda: len(seen) == 1, what="online status")
        await node.abort()  # no DISCONNECT packet: the broker must publish the will
        await eventually(lambda: len(seen) == 2, what="the last will")
        last = wire.decode_node_message(seen[-1].topic, seen[-1].payload)
        assert isinstance(last, wire.NodeStatus) and last.presence is wire.Presence.OFFLINE
    # and the will was retained: a late reader sees the node offline
    late: list[Message] = []
    async with connected(broker, "coordinator@test") as reader:
        await reader.subscribe(topics.node_status("A"), late.append)
        await eventually(lambda: len(late) == 1, what="retained will")
        assert wire.decode_as(late[0].payload, wire.NodeStatus).presence is wire.Presence.OFFLINE


async def test_clean_disconnect_does_not_publish_the_will(broker: BrokerUnderTest) -> None:
    seen: list[Message] = []
    async with connected(broker, "coordinator@test") as coord:
        await coord.subscribe(topics.node_status("B"), seen.append)
        will = Will(topics.node_status("B"), status("B", wire.Presence.OFFLINE))
        async with connected(broker, "B", will=will) as node:
            await node.publish(topics.node_status("B"), status("B", wire.Presence.ONLINE), qos=1, retain=True)
            await eventually(lambda: len(seen) == 1, what="online status")
        await asyncio.sleep(1.0)  # bounded: the will would have arrived by now
        assert len(seen) == 1


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_the_embedded_broker_sends_no_wills_when_it_shuts_itself_down(broker: BrokerUnderTest) -> None:
    """A will says a client was lost (MQTT 3.1.1 §3.1.2.5: an I/O error, keep-alive expiry, a close without
    DISCONNECT, a protocol error); a broker closing every connection because it stops says nothing about its
    clients. Were the wills sent, a coordinator still connected would take every node for lost and replace its
    replicas as the broker goes down. For contrast, a client whose socket dies gets its will out. Embedded broker
    only: Mosquitto (2.0.11) does publish every connected client's will when it stops on SIGTERM."""
    def willing(node: str) -> RawClient:
        raw, rc = broker.raw(node, will=(topics.node_status(node), status(node, wire.Presence.OFFLINE), 1, False))
        assert rc == 0
        return raw

    # the willing clients connect before the watcher: amqtt closes sessions in connection order at shutdown, so
    # wills sent then would still find the watcher subscribed (all but the last one's, which races its cleanup)
    gone = willing("B")
    stayed = [willing(n) for n in ("A", "C", "D")]
    watcher, rc = broker.raw("coordinator@test")
    try:
        assert rc == 0
        assert watcher.subscribe(topics.node_channel_filter(topics.Channel.STATUS), qos=1) == 1
        gone.close()  # no DISCONNECT: B's will must come
        wills = [p.publish_fields()[0] for p in watcher.publishes(2.0)]
        assert wills == [topics.node_status("B")], "the abruptly closed client's will, and only it"
        broker.stop()  # SIGTERM: the broker closes A's, C's and D's connections (and ours) itself
        after: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pkt = watcher.read(timeout=deadline - time.monotonic())
            except EOFError:  # the broker closed our connection: whatever it sent before is in `after`
                break
            if pkt is not None and pkt.ptype == PUBLISH:
                after.append(pkt.publish_fields()[0])
        else:
            raise AssertionError("the stopped broker's connection to the watcher never closed")
        assert after == [], f"wills sent while the broker shut down: {after}"
    finally:
        for raw in (watcher, gone, *stayed):
            raw.close()


async def test_last_will_when_a_silent_client_outlives_its_keepalive(broker: BrokerUnderTest) -> None:
    seen: list[tuple[float, Message]] = []
    async with connected(broker, "coordinator@test") as coord:
        await coord.subscribe(topics.node_status("C"), lambda m: seen.append((time.monotonic(), m)))
        will = (topics.node_status("C"), status("C", wire.Presence.OFFLINE), 1, True)
        # a raw client that connects with keep-alive 1 s and then never sends another byte (a powered-off device:
        # its TCP connection is never closed)
        raw, rc = await asyncio.to_thread(broker.raw, "C", keepalive=1, will=will)
        assert rc == 0
        start = time.monotonic()
        try:
            await eventually(lambda: len(seen) == 1, timeout=10, what="will after keep-alive expiry")
        finally:
            raw.close()
        elapsed = seen[0][0] - start
        # MQTT 3.1.1 §3.1.2.10: not before 1 keep-alive period (1 s), about 1.5 s in practice
        assert elapsed >= 1.0, f"will published after only {elapsed:.2f}s"
        assert wire.decode_as(seen[0][1].payload, wire.NodeStatus).presence is wire.Presence.OFFLINE


async def test_pinging_client_is_not_disconnected(broker: BrokerUnderTest) -> None:
    raw, rc = await asyncio.to_thread(broker.raw, "D", keepalive=1)
    assert rc == 0
    try:
        for _ in range(6):  # 3 s of pings every 0.5 s: well past 1.5x keep-alive
            raw.ping()
            pkt = await asyncio.to_thread(raw.read, 2.0)
            assert pkt is not None and pkt.ptype == 13, f"expected PINGRESP, got {pkt}"
            await asyncio.sleep(0.5)
    finally:
        raw.close()


async def test_persistent_session_queues_qos1_while_offline(broker: BrokerUnderTest) -> None:
    got: list[Message] = []
    async with connected(broker, "A", clean=False) as node:
        await node.subscribe(topics.node_cmd("A"), got.append, qos=1)
    # A is offline now (clean disconnect, session kept). Commands published meanwhile must be queued.
    async with connected(broker, "coordinator@test") as coord:
        for i in range(3):
            req = wire.CommandRequest(request_id=f"r{i}", node_id="A", command=wire.CommandName.PING,
                                      reply_to=topics.node_reply("A"), deadline=NOW + 60)
            await coord.publish(topics.node_cmd("A"), wire.encode(req), qos=1)
    raw, rc = await asyncio.to_thread(broker.raw, "A", clean=False)  # no SUBSCRIBE: only the session delivers
    try:
        assert rc == 0
        pubs = await asyncio.to_thread(raw.publishes, 3.0)
        ids = [wire.decode_as(p.publish_fields()[2], wire.CommandRequest).request_id for p in pubs]
        assert ids == ["r0", "r1", "r2"]
        assert all(p.retain is False for p in pubs), "queued messages are not retained messages (§3.3.1.9)"
        for p in pubs:
            raw.puback(p.publish_fields()[1])  # type: ignore[arg-type]
    finally:
        raw.close()


async def test_unacknowledged_qos1_is_resent_after_reconnect(broker: BrokerUnderTest) -> None:
    raw, rc = await asyncio.to_thread(broker.raw, "B", clean=False)
    assert rc == 0
    assert await asyncio.to_thread(raw.subscribe, topics.node_cmd("B"), 1) == 1
    async with connected(broker, "coordinator@test") as coord:
        req = wire.CommandRequest(request_id="once", node_id="B", command=wire.CommandName.PING,
                                  reply_to=topics.node_reply("B"), deadline=NOW + 60)
        await coord.publish(topics.node_cmd("B"), wire.encode(req), qos=1)
        first = await asyncio.to_thread(raw.publishes, 2.0)
        assert len(first) == 1 and first[0].qos == 1 and not first[0].dup
        raw.close()  # never sent PUBACK
        await asyncio.sleep(0.5)
        raw2, rc2 = await asyncio.to_thread(broker.raw, "B", clean=False)
        try:
            assert rc2 == 0
            again = await asyncio.to_thread(raw2.publishes, 3.0)
            assert len(again) == 1, f"expected the unacknowledged message again, got {again}"
            assert again[0].dup, "a resent QoS 1 PUBLISH carries DUP=1 (§4.4)"
            assert wire.decode_as(again[0].publish_fields()[2], wire.CommandRequest).request_id == "once"
            raw2.puback(again[0].publish_fields()[1])  # type: ignore[arg-type]
        finally:
            raw2.close()


async def test_client_publish_waits_offline_and_is_delivered_after_reconnect(broker: BrokerUnderTest) -> None:
    seen: list[Message] = []
    async with connected(broker, "coordinator@test") as coord:
        await coord.subscribe(topics.node_observed("A"), seen.append)
        node = MqttClient(broker.settings("A"))
        await node.start()
        await node.wait_connected(10)
        broker.stop()
        await eventually(lambda: not node.connected, what="node to notice the broker is gone")
        observed = wire.ObservedState(node_id="A", generation=3, epoch=1, ts=NOW)
        pending = node.publish_nowait(topics.node_observed("A"), wire.encode(observed), qos=1, retain=True)
        hb = node.publish_nowait(topics.node_heartbeat("A"), b"hb", qos=0, droppable=True)
        assert node.outbox_size() == 2
        broker.start()  # same port
        try:
            assert await asyncio.wait_for(pending, 60) == "delivered"
            assert await asyncio.wait_for(hb, 10) == "delivered"
            await coord.wait_connected(60)
        finally:
            await node.stop()
    # the retained observed state survived as the broker's record
    async with connected(broker, "coordinator@test") as reader:
        late: list[Message] = []
        await reader.subscribe(topics.node_observed("A"), late.append)
        await eventually(lambda: len(late) == 1, what="observed state published after reconnect")
        assert wire.decode_as(late[0].payload, wire.ObservedState).generation == 3


async def test_node_acl_confines_a_node_to_its_own_topics(broker: BrokerUnderTest) -> None:
    async with connected(broker, "coordinator@test") as coord:
        await coord.publish(topics.node_desired("B"), desired("B"), qos=1, retain=True)
        seen_by_coord: list[Message] = []
        await coord.subscribe(topics.node_channel_filter(topics.Channel.STATUS), seen_by_coord.append)
        async with connected(broker, "A") as a:
            # cannot subscribe to B's desired state, nor to wildcards that cover it
            leaked: list[Message] = []
            for forbidden in (topics.node_desired("B"), topics.node_cmd("B"), topics.node_filter("B"),
                              topics.node_channel_filter(topics.Channel.DESIRED), "#", "cloudless/#"):
                if broker.kind == "embedded":
                    with pytest.raises(MqttError, match="refused"):
                        await a.subscribe(forbidden, leaked.append)
                else:
                    # Mosquitto grants a SUBSCRIBE outside the ACL and filters every delivery instead
                    # (docs/security.md); what matters is that nothing of B's ever arrives, checked below.
                    try:
                        await a.subscribe(forbidden, leaked.append)
                    except MqttError:
                        pass
            await coord.publish(topics.node_desired("B"), desired("B", 2), qos=1, retain=True)
            await coord.publish(topics.node_cmd("B"), b"cmd-for-B", qos=1)
            await asyncio.sleep(0.5)
            assert [m.topic for m in leaked if "/node/B/" in m.topic] == []
            for f in list(a._subs):
                await a.unsubscribe(f)
            # can subscribe to its own
            assert await a.subscribe(topics.node_desired("A"), lambda m: None) == 1
            # cannot publish into B's status (the broker drops it), can into its own
            await a.publish(topics.node_status("B"), status("B", wire.Presence.OFFLINE), qos=1, retain=True)
            await a.publish(topics.node_status("A"), status("A", wire.Presence.ONLINE), qos=1, retain=True)
            await eventually(lambda: any(m.topic == topics.node_status("A") for m in seen_by_coord))
            await asyncio.sleep(0.3)
            assert [m.topic for m in seen_by_coord] == [topics.node_status("A")]
            # cannot pose as a coordinator
            await a.publish(topics.node_desired("A"), desired("A", 99), qos=1, retain=True)
            await a.publish(topics.leader(), b"x", qos=1, retain=True)
    # nothing A tried to write landed in the retained store
    raw, rc = await asyncio.to_thread(broker.raw, "coordinator@test")
    try:
        assert rc == 0
        await asyncio.to_thread(raw.subscribe, topics.all_filter(), 1)
        pubs = await asyncio.to_thread(raw.publishes, 1.5)
        retained = {p.publish_fields()[0]: p.publish_fields()[2] for p in pubs}
        assert topics.leader() not in retained
        assert wire.decode_as(retained[topics.node_desired("A")] if topics.node_desired("A") in retained
                              else desired("A", 0), wire.DesiredState).generation != 99
        assert topics.node_status("B") not in retained
    finally:
        raw.close()


async def test_a_client_that_subscribes_to_nothing_receives_nothing(broker: BrokerUnderTest) -> None:
    # the amqtt leak: retained messages replayed on connect for every filter in the broker-wide table
    async with connected(broker, "coordinator@test") as coord:
        for node in ("A", "B", "C"):
            await coord.publish(topics.node_desired(node), desired(node), qos=1, retain=True)
        await coord.subscribe(topics.node_channel_filter(topics.Channel.DESIRED), lambda m: None)
        async with connected(broker, "dashboard@test") as dash:
            await dash.subscribe(topics.dash_filter(), lambda m: None)
            # (other identities than the two connected above: the client id is the username)
            for user in ("A", "coordinator@other", "dashboard@other"):
                raw, rc = await asyncio.to_thread(broker.raw, user)
                try:
                    assert rc == 0
                    packets = await asyncio.to_thread(raw.publishes, 1.5)
                    got = [p.publish_fields()[0] for p in packets]
                    assert got == [], f"{user} subscribed to nothing but received {got}"
                finally:
                    raw.close()


async def test_retained_replay_respects_the_readers_acl(broker: BrokerUnderTest) -> None:
    async with connected(broker, "coordinator@test") as coord:
        await coord.publish(topics.node_desired("A"), desired("A"), qos=1, retain=True)
        await coord.publish(topics.node_desired("B"), desired("B"), qos=1, retain=True)
        await coord.publish(topics.dash("cluster"), b'{"nodes": 2}', qos=1, retain=True)
    # the dashboard identity may read the mirror only
    raw, rc = await asyncio.to_thread(broker.raw, "dashboard@test")
    try:
        assert rc == 0
        assert await asyncio.to_thread(raw.subscribe, topics.dash_filter(), 1) in (0, 1)
        pubs = await asyncio.to_thread(raw.publishes, 1.5)
        assert [p.publish_fields()[0] for p in pubs] == [topics.dash("cluster")]
        granted = await asyncio.to_thread(raw.subscribe, topics.all_filter(), 1, 2)
        # the embedded broker refuses the SUBSCRIBE; Mosquitto grants it and filters every delivery instead
        assert granted == 0x80 if broker.kind == "embedded" else granted in (0, 1, 0x80)
        # (Mosquitto replays the mirror again for the new filter, which the dashboard may read)
        leaked = [p.publish_fields()[0] for p in await asyncio.to_thread(raw.publishes, 1.0)]
        assert [t for t in leaked if t != topics.dash("cluster")] == []
    finally:
        raw.close()


async def test_will_on_another_nodes_topic_is_refused(broker: BrokerUnderTest) -> None:
    seen: list[Message] = []
    async with connected(broker, "coordinator@test") as coord:
        await coord.subscribe(topics.node_status("B"), seen.append)
        will = (topics.node_status("B"), status("B", wire.Presence.OFFLINE), 1, True)
        try:
            raw, _ = await asyncio.to_thread(broker.raw, "A", will=will)
        except (AssertionError, OSError, EOFError):
            raw = None
        if raw is not None:
            raw.close()  # abrupt: if the will had been accepted it would be published now
        await asyncio.sleep(1.5)
        assert seen == [], "A planted a will on B's status topic"


@pytest.mark.parametrize("user,password", [("A", "wrong"), (None, None), ("nobody", "x")],
                         ids=["bad-password", "anonymous", "unknown-user"])
async def test_bad_credentials_are_refused(broker: BrokerUnderTest, user: str | None, password: str | None) -> None:
    raw, rc = await asyncio.to_thread(broker.raw, user, password=password)
    raw.close()
    assert rc in (4, 5), f"expected CONNACK 4/5 (bad credentials / not authorized), got {rc}"


async def test_raw_publish_packets_are_publish(broker: BrokerUnderTest) -> None:
    # sanity for the raw client used above
    raw, rc = await asyncio.to_thread(broker.raw, "A")
    try:
        assert rc == 0
        assert await asyncio.to_thread(raw.subscribe, topics.node_desired("A"), 1) == 1
        async with connected(broker, "coordinator@test") as coord:
            await coord.publish(topics.node_desired("A"), desired("A"), qos=1)
        pubs = await asyncio.to_thread(raw.publishes, 2.0)
        assert [p.ptype for p in pubs] == [PUBLISH]
    finally:
        raw.close()
