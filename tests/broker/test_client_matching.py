"""Dispatch of incoming messages in the MQTT client adapter (broker/client.py `_on_message`): a table of topics and
filters, and a property test against paho's `topic_matches_sub` (the matcher the client used before it dispatched
through the subscription trie, issue 17). Messages go through the real `_on_message` callback with a real paho
`MQTTMessage`; no broker is needed (subscribing while offline only registers the handler)."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.client import Message, MqttClient, MqttSettings


def _client() -> MqttClient:
    return MqttClient(MqttSettings(host="127.0.0.1", port=1, client_id="matching-test"))


def _deliver(client: MqttClient, topic: str, payload: bytes = b"x") -> None:
    m = paho.MQTTMessage(mid=1, topic=topic.encode())
    m.payload = payload
    client._on_message(client._paho, None, m)


def _subscribe_all(client: MqttClient, filters: list[str], got: list[tuple[str, str]]) -> None:
    async def go() -> None:
        for f in filters:
            def handler(msg: Message, f: str = f) -> None:
                got.append((f, msg.topic))

            assert await client.subscribe(f, handler) == -1  # offline: registered, sent on connect

    asyncio.run(go())


def _matched(filters: list[str], topic: str) -> list[str]:
    client, got = _client(), []  # type: ignore[var-annotated]
    _subscribe_all(client, filters, got)
    _deliver(client, topic)
    assert all(t == topic for _, t in got)
    return [f for f, _ in got]


TABLE = [
    # (filter, topic, matches)
    ("cloudless/v1/node/n1/desired", "cloudless/v1/node/n1/desired", True),
    ("cloudless/v1/node/n1/desired", "cloudless/v1/node/n2/desired", False),
    ("cloudless/v1/node/+/heartbeat", "cloudless/v1/node/n7/heartbeat", True),
    ("cloudless/v1/node/+/heartbeat", "cloudless/v1/node/n7/status", False),
    ("cloudless/v1/node/+/heartbeat", "cloudless/v1/node/heartbeat", False),
    ("cloudless/v1/#", "cloudless/v1/node/n7/observed", True),
    ("cloudless/v1/#", "cloudless/v1", True),  # '#' also matches the parent level (MQTT 3.1.1 §4.7.1.2)
    ("cloudless/v1/#", "cloudless/v2/x", False),
    ("#", "anything/at/all", True),
    ("#", "$SYS/broker/uptime", False),  # no leading wildcard matches a '$' topic (§4.7.2)
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("+", "a", True),
    ("+", "a/b", False),
    ("+", "", True),  # an empty topic level is a level (§4.7.1.3)
    ("+/+", "/a", True),
    ("a/+/c", "a//c", True),
    ("a/b", "a/b/", False),
    ("a/b/", "a/b/", True),
    ("a/+", "a", False),
    ("homeassistant/#", "homeassistant/sensor/n1/cpu/config", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "matches"), TABLE,
                         ids=[f"{f}~{t or '<empty>'}" for f, t, _ in TABLE])
def test_table(topic_filter: str, topic: str, matches: bool) -> None:
    assert _matched([topic_filter], topic) == ([topic_filter] if matches else [])
    assert paho.topic_matches_sub(topic_filter, topic) is matches, "the table itself disagrees with paho"


def test_every_matching_handler_runs_once_in_subscription_order() -> None:
    filters = ["cloudless/v1/node/+/status", "cloudless/v1/#", "cloudless/v1/node/n1/status", "other/#", "#"]
    assert _matched(filters, "cloudless/v1/node/n1/status") == [
        "cloudless/v1/node/+/status", "cloudless/v1/#", "cloudless/v1/node/n1/status", "#"]


def test_resubscribing_replaces_the_handler_and_unsubscribing_stops_delivery() -> None:
    client, got = _client(), []  # type: ignore[var-annotated]

    async def go() -> None:
        await client.subscribe("a/+", lambda m: got.append(("first", m.topic)))
        await client.subscribe("a/#", lambda m: got.append(("hash", m.topic)))
        await client.subscribe("a/+", lambda m: got.append(("second", m.topic)))  # keeps its place
        _deliver(client, "a/b")
        await client.unsubscribe("a/#")
        _deliver(client, "a/c")
        await client.unsubscribe("a/+")
        _deliver(client, "a/d")

    asyncio.run(go())
    assert got == [("second", "a/b"), ("hash", "a/b"), ("second", "a/c")]
    assert list(client._subs) == []


def test_a_failing_handler_does_not_stop_the_others() -> None:
    client, got = _client(), []  # type: ignore[var-annotated]

    def boom(_m: Message) -> None:
        raise RuntimeError("handler bug")

    async def go() -> None:
        await client.subscribe("t/#", boom)
        await client.subscribe("t/x", lambda m: got.append(m.payload))

    asyncio.run(go())
    _deliver(client, "t/x", b"still delivered")
    assert got == [b"still delivered"]


# ---- property: the same answer as paho's matcher, for any subscriptions and topic -----------------------------

LEVELS = ["", "a", "b", "node", "$SYS", "$x"]
topics_st = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join)


@st.composite
def filters_st(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return "/".join(levels)


@settings(max_examples=300, deadline=None)
@given(subs=st.lists(st.tuples(st.sampled_from(["sub", "sub", "unsub"]), filters_st()), max_size=12),
       topic=topics_st)
def test_dispatch_equals_paho_topic_matches_sub(subs: list[tuple[str, str]], topic: str) -> None:
    client, got = _client(), []  # type: ignore[var-annotated]
    live: dict[str, None] = {}  # what the old code kept: a dict of filters, in subscription order

    async def go() -> None:
        for op, f in subs:
            if op == "sub":
                def handler(_m: Message, f: str = f) -> None:
                    got.append(f)

                await client.subscribe(f, handler)
                live.setdefault(f)
            else:
                await client.unsubscribe(f)
                live.pop(f, None)

    asyncio.run(go())
    _deliver(client, topic)
    assert got == [f for f in live if paho.topic_matches_sub(f, topic)]
