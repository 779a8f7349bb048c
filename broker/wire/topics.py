"""The topic tree (ARCHITECTURE §3): the only place topic strings are spelled.

Every topic comes from a function here, with its QoS and retain flag beside it (`TopicSpec`). Subscribers use
the `*_FILTER` helpers, never hand-written wildcards. Identifiers are checked with the wire's id syntax so a
topic level can never contain '/', '+', '#' or NUL (MQTT 3.1.1 §4.7.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from broker.errors import WireError
from broker.wire.schema import check_id, valid_id

ROOT = "cloudless/v1"
HA_DISCOVERY_ROOT = "homeassistant"


class Channel(StrEnum):
    """The per-node channels; the value is the last topic level."""

    STATUS = "status"
    HEARTBEAT = "heartbeat"
    DESIRED = "desired"
    OBSERVED = "observed"
    CMD = "cmd"
    REPLY = "reply"
    OVERLAY = "overlay"
    PEERS = "peers"
    SERVICES = "services"
    TTY_IN = "tty-in"
    TTY_OUT = "tty-out"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one kind of topic is published: QoS level and the retain flag (MQTT 3.1.1 §3.3.1)."""

    qos: int
    retain: bool


# QoS and retain, next to the topic they describe.
NODE_CHANNELS: dict[Channel, TopicSpec] = {
    Channel.STATUS: TopicSpec(qos=1, retain=True),  # presence + facts; the last will overwrites it
    Channel.HEARTBEAT: TopicSpec(qos=0, retain=False),  # small, frequent, droppable
    Channel.DESIRED: TopicSpec(qos=1, retain=True),  # full desired set: level-triggered
    Channel.OBSERVED: TopicSpec(qos=1, retain=True),  # per-replica state
    Channel.CMD: TopicSpec(qos=1, retain=False),  # one-off requests, queued for persistent sessions
    Channel.REPLY: TopicSpec(qos=1, retain=False),  # replies to cmd, matched by correlation id
    Channel.OVERLAY: TopicSpec(qos=1, retain=True),  # the node's overlay: candidates, relays, peer paths
    Channel.PEERS: TopicSpec(qos=1, retain=True),  # the peer directory the coordinator keeps for the node
    Channel.SERVICES: TopicSpec(qos=1, retain=True),  # the service table the coordinator keeps for the node
    # interactive sessions' bytes, numbered per direction: never retained (a late subscriber must not replay a
    # keystroke), QoS 1 so a frame survives a short reconnect; repeats and gaps are the receiver's (wire.stream)
    Channel.TTY_IN: TopicSpec(qos=1, retain=False),
    Channel.TTY_OUT: TopicSpec(qos=1, retain=False),
}
COORD_STATUS_SPEC = TopicSpec(qos=1, retain=True)
LEADER_SPEC = TopicSpec(qos=1, retain=True)
DASH_SPEC = TopicSpec(qos=0, retain=True)


def node_topic(node_id: str, channel: Channel) -> str:
    check_id(node_id, "node_id")
    return f"{ROOT}/node/{node_id}/{channel.value}"


def node_status(node_id: str) -> str:
    return node_topic(node_id, Channel.STATUS)


def node_heartbeat(node_id: str) -> str:
    return node_topic(node_id, Channel.HEARTBEAT)


def node_desired(node_id: str) -> str:
    return node_topic(node_id, Channel.DESIRED)


def node_observed(node_id: str) -> str:
    return node_topic(node_id, Channel.OBSERVED)


def node_cmd(node_id: str) -> str:
    return node_topic(node_id, Channel.CMD)


def node_reply(node_id: str) -> str:
    return node_topic(node_id, Channel.REPLY)


def node_overlay(node_id: str) -> str:
    return node_topic(node_id, Channel.OVERLAY)


def node_peers(node_id: str) -> str:
    return node_topic(node_id, Channel.PEERS)


def node_services(node_id: str) -> str:
    return node_topic(node_id, Channel.SERVICES)


def node_tty_in(node_id: str) -> str:
    return node_topic(node_id, Channel.TTY_IN)


def node_tty_out(node_id: str) -> str:
    return node_topic(node_id, Channel.TTY_OUT)


def coord_status(coordinator_id: str) -> str:
    check_id(coordinator_id, "coordinator_id")
    return f"{ROOT}/coord/{coordinator_id}/status"


def leader() -> str:
    return f"{ROOT}/coord/leader"


def dash(*levels: str) -> str:
    """`cloudless/v1/dash/<level>/...`: one or more identifier levels (the bare `dash` root is not a topic)."""
    if not levels:
        raise WireError("a dash topic needs at least one level", path="dash")
    for i, level in enumerate(levels):
        check_id(level, f"dash[{i}]")
    return "/".join((ROOT, "dash", *levels))


# ---- filters (for subscribers) -------------------------------------------------------------------------

def node_channel_filter(channel: Channel) -> str:
    """All nodes' `channel` topics, e.g. every node's status: `cloudless/v1/node/+/status`."""
    return f"{ROOT}/node/+/{channel.value}"


def node_filter(node_id: str) -> str:
    """Everything under one node: `cloudless/v1/node/<id>/#`."""
    check_id(node_id, "node_id")
    return f"{ROOT}/node/{node_id}/#"


def coord_status_filter() -> str:
    return f"{ROOT}/coord/+/status"


def dash_filter() -> str:
    return f"{ROOT}/dash/#"


def all_filter() -> str:
    return f"{ROOT}/#"


# ---- parsing -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeTopic:
    node_id: str
    channel: Channel


def parse_node_topic(topic: str) -> NodeTopic:
    """`cloudless/v1/node/<id>/<channel>` -> NodeTopic; anything else raises WireError."""
    prefix = f"{ROOT}/node/"
    if not topic.startswith(prefix):
        raise WireError(f"not a node topic: {topic[:120]!r}", path="topic")
    rest = topic[len(prefix):].split("/")
    if len(rest) != 2:
        raise WireError(f"not a node topic: {topic[:120]!r}", path="topic")
    node_id = check_id(rest[0], "topic.node_id")
    try:
        channel = Channel(rest[1])
    except ValueError:
        raise WireError(f"unknown node channel {rest[1][:40]!r}", path="topic.channel") from None
    return NodeTopic(node_id, channel)


def spec_for(topic: str) -> TopicSpec:
    """QoS/retain for a concrete topic of our tree: exactly the shapes the topic functions above produce.
    Anything else (wildcards, missing or extra levels, bad ids) raises WireError."""
    root = f"{ROOT}/"
    if topic.startswith(root):
        area, *rest = topic[len(root):].split("/")
        match area, rest:
            case "node", _:
                return NODE_CHANNELS[parse_node_topic(topic).channel]
            case "coord", ["leader"]:
                return LEADER_SPEC
            case "coord", [coordinator_id, "status"] if valid_id(coordinator_id):
                return COORD_STATUS_SPEC
            case "dash", [_, *_] if all(valid_id(level) for level in rest):
                return DASH_SPEC
    raise WireError(f"not a topic of the Cloudless tree: {topic[:120]!r}", path="topic")
