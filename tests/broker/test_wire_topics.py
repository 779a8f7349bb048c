"""The topic tree (broker/wire/topics.py): spelling, id checks, parsing, and QoS/retain as declared."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import wire
from broker.acl import topic_matches, valid_filter, valid_topic_name
from broker.wire import topics
from broker.wire.topics import Channel, TopicSpec
from tests.broker.builders import BAD_IDS
from tests.broker.strategies import ids

NODE_FUNCS: dict[Channel, Callable[[str], str]] = {
    Channel.STATUS: topics.node_status,
    Channel.HEARTBEAT: topics.node_heartbeat,
    Channel.DESIRED: topics.node_desired,
    Channel.OBSERVED: topics.node_observed,
    Channel.CMD: topics.node_cmd,
    Channel.REPLY: topics.node_reply,
    Channel.OVERLAY: topics.node_overlay,
    Channel.PEERS: topics.node_peers,
    Channel.SERVICES: topics.node_services,
    Channel.TTY_IN: topics.node_tty_in,
    Channel.TTY_OUT: topics.node_tty_out,
}

# The declared QoS/retain per channel (ARCHITECTURE §3), restated so a change to topics.py is deliberate.
DECLARED = {
    Channel.STATUS: TopicSpec(qos=1, retain=True),
    Channel.HEARTBEAT: TopicSpec(qos=0, retain=False),
    Channel.DESIRED: TopicSpec(qos=1, retain=True),
    Channel.OBSERVED: TopicSpec(qos=1, retain=True),
    Channel.CMD: TopicSpec(qos=1, retain=False),
    Channel.REPLY: TopicSpec(qos=1, retain=False),
    Channel.OVERLAY: TopicSpec(qos=1, retain=True),
    Channel.PEERS: TopicSpec(qos=1, retain=True),
    Channel.SERVICES: TopicSpec(qos=1, retain=True),
    Channel.TTY_IN: TopicSpec(qos=1, retain=False),
    Channel.TTY_OUT: TopicSpec(qos=1, retain=False),
}


def test_every_channel_has_a_topic_function_and_a_declared_spec() -> None:
    assert set(NODE_FUNCS) == set(Channel) == set(topics.NODE_CHANNELS) == set(DECLARED)


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_node_topics_are_spelled_under_the_root(channel: Channel) -> None:
    assert NODE_FUNCS[channel]("pi-1") == f"cloudless/v1/node/pi-1/{channel.value}"
    assert topics.node_topic("pi-1", channel) == NODE_FUNCS[channel]("pi-1")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        pytest.param(topics.coord_status("coord-a"), "cloudless/v1/coord/coord-a/status", id="coord-status"),
        pytest.param(topics.leader(), "cloudless/v1/coord/leader", id="leader"),
        pytest.param(topics.dash("nodes", "pi-1"), "cloudless/v1/dash/nodes/pi-1", id="dash"),
        pytest.param(topics.node_channel_filter(Channel.STATUS), "cloudless/v1/node/+/status", id="channel-filter"),
        pytest.param(topics.node_filter("pi-1"), "cloudless/v1/node/pi-1/#", id="node-filter"),
        pytest.param(topics.coord_status_filter(), "cloudless/v1/coord/+/status", id="coord-filter"),
        pytest.param(topics.dash_filter(), "cloudless/v1/dash/#", id="dash-filter"),
        pytest.param(topics.all_filter(), "cloudless/v1/#", id="all-filter"),
    ],
)
def test_other_topics_and_filters_are_spelled_as_documented(topic: str, expected: str) -> None:
    assert topic == expected


ID_TAKING: dict[str, Callable[[str], str]] = {
    **{f"node_{ch.value}": fn for ch, fn in NODE_FUNCS.items()},
    "node_filter": topics.node_filter,
    "coord_status": topics.coord_status,
    "dash-first-level": topics.dash,
    "dash-later-level": lambda level: topics.dash("nodes", level),
}


@pytest.mark.parametrize("func", ID_TAKING.values(), ids=ID_TAKING.keys())
@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_topic_functions_refuse_bad_ids(func: Callable[[str], str], bad: str) -> None:
    with pytest.raises(wire.WireError):
        func(bad)


@pytest.mark.parametrize("bad", [None, 1, b"pi-1"], ids=repr)
def test_topic_functions_refuse_non_string_ids(bad: object) -> None:
    with pytest.raises(wire.WireError):
        topics.node_status(bad)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(node_id=ids())
def test_node_topics_parse_back_and_are_valid_mqtt_topics(node_id: str) -> None:
    for channel, func in NODE_FUNCS.items():
        topic = func(node_id)
        assert valid_topic_name(topic)
        assert topics.parse_node_topic(topic) == topics.NodeTopic(node_id, channel)
        assert topic_matches(topic, topics.node_filter(node_id))
        assert topic_matches(topic, topics.node_channel_filter(channel))
        assert topic_matches(topic, topics.all_filter())
        assert topics.spec_for(topic) == DECLARED[channel]


def test_filters_are_valid_mqtt_filters() -> None:
    for topic_filter in [topics.node_filter("pi-1"), topics.coord_status_filter(), topics.dash_filter(),
                         topics.all_filter(), *(topics.node_channel_filter(ch) for ch in Channel)]:
        assert valid_filter(topic_filter), topic_filter


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "cloudless/v1/node/",
        "cloudless/v1/node/pi-1",
        "cloudless/v1/node/pi-1/",
        "cloudless/v1/node/pi-1/status/extra",
        "cloudless/v1/node//status",
        "cloudless/v1/node/+/status",
        "cloudless/v1/node/#",
        "cloudless/v1/node/pi-1/#",
        "cloudless/v1/node/a b/status",
        "cloudless/v1/node/pi-1/unknown",
        "cloudless/v1/node/pi-1/STATUS",
        "cloudless/v2/node/pi-1/status",
        "/cloudless/v1/node/pi-1/status",
        "cloudless/v1/coord/c/status",
        "cloudless/v1/node/pi-1/status\x00",
    ],
    ids=repr,
)
def test_parse_node_topic_refuses_anything_but_a_node_topic(topic: str) -> None:
    with pytest.raises(wire.WireError):
        topics.parse_node_topic(topic)


@pytest.mark.parametrize(
    ("topic", "spec"),
    [
        pytest.param(topics.coord_status("coord-a"), TopicSpec(qos=1, retain=True), id="coord-status"),
        pytest.param(topics.leader(), TopicSpec(qos=1, retain=True), id="leader"),
        pytest.param(topics.dash("nodes", "pi-1"), TopicSpec(qos=0, retain=True), id="dash"),
        pytest.param(topics.dash("summary"), TopicSpec(qos=0, retain=True), id="dash-one-level"),
        pytest.param(topics.coord_status("leader"), TopicSpec(qos=1, retain=True), id="coord-named-leader"),
    ],
)
def test_spec_for_other_topics_is_as_declared(topic: str, spec: TopicSpec) -> None:
    assert topics.spec_for(topic) == spec
    assert topics.COORD_STATUS_SPEC == topics.LEADER_SPEC == TopicSpec(qos=1, retain=True)
    assert TopicSpec(qos=0, retain=True) == topics.DASH_SPEC


@pytest.mark.parametrize(
    "topic",
    ["", "cloudless", "cloudless/v1", "cloudless/v2/coord/leader", "other/cloudless/v1/dash/x", "homeassistant/x",
     "$SYS/broker/uptime", "cloudless/v1/node/pi-1/bogus", "cloudless/v1/node/+/status"],
    ids=repr,
)
def test_spec_for_refuses_topics_outside_the_tree(topic: str) -> None:
    with pytest.raises(wire.WireError):
        topics.spec_for(topic)


@pytest.mark.parametrize(
    "topic",
    ["cloudless/v1/coord/+/status", "cloudless/v1/coord/#", "cloudless/v1/coord/a/b/c", "cloudless/v1/coord/a b/x",
     "cloudless/v1/coord/a b/status", "cloudless/v1/coord/a/status/x", "cloudless/v1/coord/leader/x",
     "cloudless/v1/coord/a", "cloudless/v1/coord/", "cloudless/v1/coord", "cloudless/v1/coord//status",
     "cloudless/v1/coord/+", "cloudless/v1/dash/#", "cloudless/v1/dash/", "cloudless/v1/dash",
     "cloudless/v1/dash/a/+/b", "cloudless/v1/dash/a//b", "cloudless/v1/dash/a/", "cloudless/v1/dash/a b",
     "cloudless/v1/other/x"],
    ids=repr,
)
def test_spec_for_refuses_malformed_coord_and_dash_topics(topic: str) -> None:
    with pytest.raises(wire.WireError):
        topics.spec_for(topic)


def test_dash_needs_at_least_one_level() -> None:
    with pytest.raises(wire.WireError, match="at least one level"):
        topics.dash()


@settings(max_examples=100, deadline=None)
@given(coordinator_id=ids(), levels=st.lists(ids(), min_size=1, max_size=4))
def test_spec_for_accepts_what_the_topic_functions_produce(coordinator_id: str, levels: list[str]) -> None:
    for topic, spec in [(topics.coord_status(coordinator_id), topics.COORD_STATUS_SPEC),
                        (topics.dash(*levels), topics.DASH_SPEC)]:
        assert valid_topic_name(topic)
        assert topics.spec_for(topic) == spec
