"""Topic authorization (broker/acl.py): MQTT 3.1.1 §4.7 matching and the per-role rules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.acl import (
    DEFAULT_ROLE_RULES,
    Access,
    Acl,
    Identity,
    Role,
    Rule,
    filter_within,
    topic_matches,
    valid_filter,
    valid_topic_name,
)
from broker.errors import BrokerConfigError
from broker.wire import topics
from broker.wire.topics import Channel


def make_acl(**user_roles: Role) -> Acl:
    return Acl(user_roles={"coordinator@main": Role.COORDINATOR, "dashboard@main": Role.DASHBOARD, **user_roles})


ACL = make_acl()
NODE_A = ACL.identity("A")
COORD = ACL.identity("coordinator@main")
DASH = ACL.identity("dashboard@main")

# ---- MQTT 3.1.1 §4.7 -------------------------------------------------------------------------------------------

MATCHES = [
    # §4.7.1.2 multi-level wildcard
    ("sport/tennis/player1", "sport/tennis/player1/#", True),
    ("sport/tennis/player1/ranking", "sport/tennis/player1/#", True),
    ("sport/tennis/player1/score/wimbledon", "sport/tennis/player1/#", True),
    ("sport", "sport/#", True),  # '#' also matches the parent level
    ("sport/", "sport/#", True),
    ("sports", "sport/#", False),
    ("anything/at/all", "#", True),
    ("/", "#", True),
    # §4.7.1.3 single-level wildcard
    ("sport/tennis/player1", "sport/tennis/+", True),
    ("sport/tennis/player2", "sport/tennis/+", True),
    ("sport/tennis/player1/ranking", "sport/tennis/+", False),
    ("sport", "sport/+", False),
    ("sport/", "sport/+", True),  # an empty level is a level
    ("/finance", "+/+", True),
    ("/finance", "/+", True),
    ("/finance", "+", False),
    ("a/b/c", "+/+/+", True),
    ("a/b", "+/+/+", False),
    ("a", "+/#", True),
    ("a//c", "a/+/c", True),
    # exact, case-sensitive, no wildcards
    ("Accounts payable", "Accounts payable", True),
    ("ACCOUNTS", "Accounts", False),
    ("a/b", "a/b/", False),
    ("a/b/", "a/b", False),
    ("/a", "a", False),
    # §4.7.2 topics beginning with '$'
    ("$SYS/broker/uptime", "#", False),
    ("$SYS/monitor/Clients", "+/monitor/Clients", False),
    ("$SYS/monitor/Clients", "$SYS/#", True),
    ("$SYS/monitor/Clients", "$SYS/monitor/+", True),
    ("$SYS", "$SYS/#", True),
    ("a/$SYS", "a/+", True),  # only a leading '$' is special
    ("a/$SYS", "#", True),
]


@pytest.mark.parametrize(("topic", "topic_filter", "expected"), MATCHES, ids=[f"{t}|{f}" for t, f, _ in MATCHES])
def test_topic_matches(topic: str, topic_filter: str, expected: bool) -> None:
    assert topic_matches(topic, topic_filter) is expected


WITHIN = [
    ("a/b", "a/b", True),
    ("a/b", "a/+", True),
    ("a/+", "a/+", True),
    ("a/+", "a/b", False),
    ("a/#", "a/#", True),
    ("a/#", "a/+", False),  # 'a/#' matches 'a' and 'a/b/c'
    ("a/b/#", "a/#", True),
    ("a", "a/#", True),
    ("a/#", "a", False),
    ("#", "a/#", False),
    ("#", "#", True),
    ("+/#", "#", True),
    ("a/+/c", "a/#", True),
    ("a/+/c", "+/+/+", True),
    ("a/+/#", "a/+", False),
    ("+", "a", False),
    ("a/b/c", "a/b", False),
    ("a/b", "a/b/c", False),
    ("cloudless/v1/node/A/desired", "cloudless/v1/node/+/desired", True),
    ("cloudless/v1/node/+/desired", "cloudless/v1/node/A/desired", False),
]


@pytest.mark.parametrize(("sub", "rule", "expected"), WITHIN, ids=[f"{s}|{r}" for s, r, _ in WITHIN])
def test_filter_within(sub: str, rule: str, expected: bool) -> None:
    assert filter_within(sub, rule) is expected


LEVELS = st.sampled_from(["a", "b", ""])
FILTER_LEVELS = st.sampled_from(["a", "b", "", "+", "$s"])  # '$s': a '$' level (wildcards skip it first)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVELS, min_size=1, max_size=3))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


# every topic of up to 5 levels over {a, b, c, "", $s}: 'c' appears in no filter, so it stands for "anything else"
UNIVERSE = ["/".join(t) for n in range(1, 6) for t in itertools.product(["a", "b", "c", "", "$s"], repeat=n)]


@settings(max_examples=300, deadline=None)
@given(sub=filters(), rule=filters())
def test_filter_within_agrees_with_topic_matching(sub: str, rule: str) -> None:
    """filter_within(s, r) iff every topic s matches is matched by r (checked over a finite universe that is
    large enough for filters of up to 4 levels)."""
    uncovered = [t for t in UNIVERSE if topic_matches(t, sub) and not topic_matches(t, rule)]
    assert filter_within(sub, rule) is (not uncovered), uncovered[:3]


@pytest.mark.parametrize(("sub", "rule"), [("$SYS/x", "+/x"), ("$SYS/#", "#"), ("$SYS/+/x", "+/#")],
                         ids=["plus", "hash", "plus-hash"])
def test_filter_within_respects_dollar_topics(sub: str, rule: str) -> None:
    assert topic_matches(sub.replace("#", "x"), sub)
    assert not topic_matches(sub.replace("#", "x"), rule)
    assert not filter_within(sub, rule)


VALID_FILTERS = [
    ("#", True), ("+", True), ("a/#", True), ("a/+/b", True), ("+/+", True), ("/", True), ("a//b", True),
    ("/#", True), ("+/#", True), ("$SYS/#", True), ("a b/ü", True), ("x" * 65535, True),
    ("", False), ("a/#/b", False), ("#/a", False), ("a#", False), ("a/b#", False), ("##", False), ("+a", False),
    ("a/+b", False), ("a/++", False), ("a\x00", False), ("x" * 65536, False), ("é" * 32768, False),
]


@pytest.mark.parametrize(("topic_filter", "expected"), VALID_FILTERS, ids=[repr(f[:20]) for f, _ in VALID_FILTERS])
def test_valid_filter(topic_filter: str, expected: bool) -> None:
    assert valid_filter(topic_filter) is expected


VALID_TOPICS = [
    ("a/b", True), ("/", True), ("a//b", True), ("$SYS/broker", True), ("a b/ü", True), ("x" * 65535, True),
    ("", False), ("a/+", False), ("a/#", False), ("+", False), ("#", False), ("a+b", False), ("a\x00b", False),
    ("x" * 65536, False), ("é" * 32768, False),
]


@pytest.mark.parametrize(("topic", "expected"), VALID_TOPICS, ids=[repr(t[:20]) for t, _ in VALID_TOPICS])
def test_valid_topic_name(topic: str, expected: bool) -> None:
    assert valid_topic_name(topic) is expected


@pytest.mark.parametrize("check", [valid_topic_name, valid_filter], ids=["topic", "filter"])
@pytest.mark.parametrize("text", ["a/\ud800", "\udcff", "a/\udfff/#"], ids=repr)
def test_validity_predicates_return_false_for_unencodable_strings(check: object, text: str) -> None:
    assert check(text) is False  # type: ignore[operator]


# ---- the node role ---------------------------------------------------------------------------------------------

NODE_WRITES = {Channel.STATUS, Channel.HEARTBEAT, Channel.OBSERVED, Channel.REPLY, Channel.OVERLAY, Channel.TTY_OUT}
NODE_READS = {Channel.DESIRED, Channel.CMD, Channel.STATUS, Channel.PEERS, Channel.SERVICES, Channel.TTY_IN}


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_node_publishes_only_its_own_status_heartbeat_observed_and_reply(channel: Channel) -> None:
    assert ACL.can_publish(NODE_A, topics.node_topic("A", channel)) is (channel in NODE_WRITES)
    assert not ACL.can_publish(NODE_A, topics.node_topic("B", channel))


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_node_reads_only_its_own_desired_cmd_and_status(channel: Channel) -> None:
    own = topics.node_topic("A", channel)
    assert ACL.can_receive(NODE_A, own) is (channel in NODE_READS)
    assert ACL.can_subscribe(NODE_A, own) is (channel in NODE_READS)
    assert not ACL.can_receive(NODE_A, topics.node_topic("B", channel))
    assert not ACL.can_subscribe(NODE_A, topics.node_topic("B", channel))


def test_a_node_reads_only_its_own_tty_input_and_writes_only_its_own_tty_output() -> None:
    """Keystrokes of a session on node A never reach node B, and B cannot speak as A's session output."""
    node_b = ACL.identity("B")
    assert ACL.can_subscribe(NODE_A, topics.node_tty_in("A")) and ACL.can_receive(NODE_A, topics.node_tty_in("A"))
    assert not ACL.can_subscribe(node_b, topics.node_tty_in("A"))
    assert not ACL.can_receive(node_b, topics.node_tty_in("A"))
    assert not ACL.can_subscribe(node_b, topics.node_channel_filter(Channel.TTY_IN))
    assert ACL.can_publish(NODE_A, topics.node_tty_out("A"))
    assert not ACL.can_publish(node_b, topics.node_tty_out("A"))
    assert not ACL.can_publish(NODE_A, topics.node_tty_in("A"))  # nor does a node write its own input
    assert not ACL.can_receive(NODE_A, topics.node_tty_out("A"))  # nor read back what it sent


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#", "+", "+/#", "cloudless/#", "cloudless/v1/#", "cloudless/v1/node/#", "cloudless/v1/node/+/desired",
        "cloudless/v1/node/+/+", "cloudless/v1/node/B/#", "cloudless/v1/node/B/desired", "cloudless/v1/node/A/#",
        "cloudless/v1/node/A/+", "+/v1/node/A/desired", "cloudless/+/node/A/desired", "cloudless/v1/coord/#",
        "cloudless/v1/coord/leader", "cloudless/v1/dash/#", "homeassistant/#", "$SYS/#",
        "cloudless/v1/node/A/desired/#", "cloudless/v1/node/A/desired/x", "cloudless/v1/node/A/#/desired",
        "cloudless/v1/node/A+/desired", "",
    ],
    ids=repr,
)
def test_node_cannot_subscribe_beyond_its_own_channels(topic_filter: str) -> None:
    assert not ACL.can_subscribe(NODE_A, topic_filter)


@pytest.mark.parametrize(
    "topic",
    ["cloudless/v1/coord/leader", "cloudless/v1/coord/A/status", "cloudless/v1/dash/nodes/A",
     "homeassistant/sensor/A/config", "cloudless/v1/node/A/status/extra", "cloudless/v1/node/A", "$SYS/x",
     "cloudless/v1/node/A/+", "cloudless/v1/node/A/#", "other/topic"],
    ids=repr,
)
def test_node_cannot_publish_outside_its_own_channels(topic: str) -> None:
    assert not ACL.can_publish(NODE_A, topic)


@pytest.mark.parametrize("username", ["a/b", "+", "#", "a\x00", "", "A/#", "+/+"], ids=repr)
def test_unsafe_usernames_get_no_pattern_rules(username: str) -> None:
    """A username that would turn into a wildcard or an extra level once substituted for %u gets nothing."""
    who = ACL.identity(username)
    assert who.role is Role.NODE
    for channel in Channel:
        raw = f"cloudless/v1/node/{username}/{channel.value}"
        assert not ACL.can_publish(who, raw)
        assert not ACL.can_receive(who, raw)
        assert not ACL.can_subscribe(who, raw)
        assert not ACL.can_receive(who, topics.node_topic("A", channel))
    assert not ACL.can_subscribe(who, "#")


def test_unregistered_non_node_looking_username_is_just_a_node() -> None:
    impostor = ACL.identity("coordinator@evil")
    assert impostor == Identity("coordinator@evil", Role.NODE)
    assert not ACL.can_publish(impostor, topics.node_desired("A"))
    assert not ACL.can_subscribe(impostor, topics.all_filter())
    assert ACL.can_publish(impostor, "cloudless/v1/node/coordinator@evil/heartbeat")


# ---- coordinator, dashboard, enroller --------------------------------------------------------------------------

TREE_TOPICS = [
    *(topics.node_topic("A", ch) for ch in Channel),
    topics.coord_status("coord-a"),
    topics.leader(),
    topics.dash("nodes", "A"),
    "homeassistant/sensor/A/config",
]


@pytest.mark.parametrize("topic", TREE_TOPICS, ids=str)
def test_coordinator_may_do_everything_in_the_tree(topic: str) -> None:
    assert ACL.can_publish(COORD, topic)
    assert ACL.can_receive(COORD, topic)
    assert ACL.can_subscribe(COORD, topic)


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        (topics.all_filter(), True), ("homeassistant/#", True), (topics.node_channel_filter(Channel.STATUS), True),
        (topics.coord_status_filter(), True), ("#", False), ("$SYS/#", False), ("other/#", False),
    ],
    ids=repr,
)
def test_coordinator_subscriptions(topic_filter: str, allowed: bool) -> None:
    assert ACL.can_subscribe(COORD, topic_filter) is allowed


@pytest.mark.parametrize("topic", TREE_TOPICS, ids=str)
def test_dashboard_is_read_only_on_dash_and_homeassistant(topic: str) -> None:
    readable = topic.startswith(("cloudless/v1/dash/", "homeassistant/"))
    assert not ACL.can_publish(DASH, topic)
    assert ACL.can_receive(DASH, topic) is readable
    assert ACL.can_subscribe(DASH, topic) is readable


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [(topics.dash_filter(), True), ("homeassistant/#", True), ("cloudless/v1/#", False), ("#", False),
     (topics.node_channel_filter(Channel.STATUS), False)],
    ids=repr,
)
def test_dashboard_subscriptions(topic_filter: str, allowed: bool) -> None:
    assert ACL.can_subscribe(DASH, topic_filter) is allowed


def test_enroller_may_do_nothing_yet() -> None:
    enroller = make_acl(**{"enroll": Role.ENROLLER}).identity("enroll")
    assert enroller.role is Role.ENROLLER
    for topic in TREE_TOPICS:
        assert not ACL.can_publish(enroller, topic)
        assert not ACL.can_receive(enroller, topic)
    assert not ACL.can_subscribe(enroller, "#")


def test_default_rules_cover_every_role() -> None:
    assert set(DEFAULT_ROLE_RULES) == set(Role)


# ---- Mosquitto rendering ---------------------------------------------------------------------------------------

def test_render_mosquitto_states_the_same_rules() -> None:
    text = make_acl(**{"pi-1": Role.NODE, "dashboard@b": Role.DASHBOARD}).render_mosquitto()
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[0].startswith("#")
    patterns = [line for line in lines if line.startswith("pattern ")]
    assert patterns == [
        "pattern write cloudless/v1/node/%u/status",
        "pattern write cloudless/v1/node/%u/heartbeat",
        "pattern write cloudless/v1/node/%u/observed",
        "pattern write cloudless/v1/node/%u/reply",
        "pattern write cloudless/v1/node/%u/overlay",
        "pattern write cloudless/v1/node/%u/tty-out",
        "pattern read cloudless/v1/node/%u/desired",
        "pattern read cloudless/v1/node/%u/peers",
        "pattern read cloudless/v1/node/%u/services",
        "pattern read cloudless/v1/node/%u/cmd",
        "pattern read cloudless/v1/node/%u/tty-in",
        "pattern read cloudless/v1/node/%u/status",
    ]
    first_user = next(i for i, line in enumerate(lines) if line.startswith("user "))
    assert all(i < first_user for i, line in enumerate(lines) if line.startswith("pattern "))
    # users sorted, each followed by its role's topic lines; nodes are covered by the patterns, not listed
    users = [line for line in lines if line.startswith("user ")]
    assert users == ["user coordinator@main", "user dashboard@b", "user dashboard@main"]
    assert "user pi-1" not in lines
    start = lines.index("user coordinator@main")
    assert lines[start + 1: start + 3] == ["topic readwrite cloudless/v1/#", "topic readwrite homeassistant/#"]
    start = lines.index("user dashboard@main")
    assert lines[start + 1: start + 3] == ["topic read cloudless/v1/dash/#", "topic read homeassistant/#"]
    assert lines[start - 1] == "# role: dashboard"


def test_render_mosquitto_refuses_user_patterns_outside_the_node_role() -> None:
    rules = {**DEFAULT_ROLE_RULES, Role.DASHBOARD: (Rule(Access.READ, "cloudless/v1/dash/%u/#"),)}
    acl = Acl(role_rules=rules, user_roles={"dashboard@main": Role.DASHBOARD})
    with pytest.raises(BrokerConfigError):
        acl.render_mosquitto()
