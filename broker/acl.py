"""Topic authorization: who may publish, subscribe to and receive what (pure core).

Theory of operation. An `Identity` (username + role) comes from authentication. Each role has rules; the
`node` role's rules are *patterns* in which `%u` stands for the username (the node id), exactly like
Mosquitto's `pattern` lines, so that the same `Acl` renders to a Mosquitto ACL file (`render_mosquitto`) and
drives the embedded broker with identical semantics:

- publish(topic):    allowed iff some WRITE rule's filter matches the topic;
- receive(topic):    allowed iff some READ rule's filter matches the topic (checked per message delivered,
                     including retained replays);
- subscribe(filter): allowed iff the filter lies *within* some READ rule's filter (every topic it can match is
                     readable), so `#` is refused to a node while `cloudless/v1/node/<self>/desired` is granted.

A username that cannot be substituted safely (one containing '/', '+', '#' or NUL) gets no pattern rules.
Node ids never contain '@' (nor ':', which password files reserve), so non-node identities use names like
`coordinator@main` and cannot collide with a
node. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum

from broker.errors import BrokerConfigError
from broker.wire import topics


class Access(IntFlag):
    READ = 1
    WRITE = 2
    READWRITE = 3


class Role(StrEnum):
    NODE = "node"
    COORDINATOR = "coordinator"
    DASHBOARD = "dashboard"
    ENROLLER = "enroller"  # anonymous pre-certificate path (security issue); nothing yet


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    filter: str  # an MQTT topic filter, possibly with %u


@dataclass(frozen=True, slots=True)
class Identity:
    username: str
    role: Role


def _node_rules() -> tuple[Rule, ...]:
    w, r = Access.WRITE, Access.READ
    ch = topics.Channel
    node = f"{topics.ROOT}/node/%u"
    return (
        Rule(w, f"{node}/{ch.STATUS.value}"),
        Rule(w, f"{node}/{ch.HEARTBEAT.value}"),
        Rule(w, f"{node}/{ch.OBSERVED.value}"),
        Rule(w, f"{node}/{ch.REPLY.value}"),
        Rule(w, f"{node}/{ch.OVERLAY.value}"),
        Rule(w, f"{node}/{ch.TTY_OUT.value}"),  # its interactive sessions' output
        Rule(r, f"{node}/{ch.DESIRED.value}"),
        Rule(r, f"{node}/{ch.PEERS.value}"),
        Rule(r, f"{node}/{ch.SERVICES.value}"),
        Rule(r, f"{node}/{ch.CMD.value}"),
        Rule(r, f"{node}/{ch.TTY_IN.value}"),  # its interactive sessions' input (keystrokes: no other node sees them)
        # a node reads its own status back (it checks its retained presence after a reconnect)
        Rule(r, f"{node}/{ch.STATUS.value}"),
    )


DEFAULT_ROLE_RULES: Mapping[Role, tuple[Rule, ...]] = {
    Role.NODE: _node_rules(),
    Role.COORDINATOR: (
        Rule(Access.READWRITE, topics.all_filter()),
        Rule(Access.READWRITE, f"{topics.HA_DISCOVERY_ROOT}/#"),
    ),
    Role.DASHBOARD: (
        Rule(Access.READ, topics.dash_filter()),
        Rule(Access.READ, f"{topics.HA_DISCOVERY_ROOT}/#"),
    ),
    Role.ENROLLER: (),
}


def topic_matches(topic: str, topic_filter: str) -> bool:
    """MQTT 3.1.1 §4.7 matching of a concrete topic against a filter ('$' topics never match wildcards)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t = topic.split("/")
    f = topic_filter.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(t) == len(f)


def filter_within(sub_filter: str, rule_filter: str) -> bool:
    """True iff every topic `sub_filter` can match is matched by `rule_filter`."""
    if sub_filter.startswith("$") and rule_filter[:1] in ("+", "#"):
        return False  # the topics it matches all start with '$', which a leading wildcard never matches (§4.7.2)
    s = sub_filter.split("/")
    r = rule_filter.split("/")
    for i, level in enumerate(r):
        if level == "#":
            return True
        if i >= len(s):
            return False
        if level == "+":
            if s[i] == "#":
                return False
            continue
        if s[i] != level:
            return False
    return len(s) == len(r)


def _fits_mqtt_string(text: str) -> bool:
    """An MQTT string (§1.5.3): UTF-8 (so no lone surrogates), no NUL, at most 65535 bytes; and non-empty."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 0 < size <= 65535 and "\x00" not in text


def valid_filter(topic_filter: str) -> bool:
    """MQTT 3.1.1 §4.7.1: '#' only as the whole last level, '+' only as a whole level, no NUL, non-empty."""
    if not _fits_mqtt_string(topic_filter):
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def valid_topic_name(topic: str) -> bool:
    return _fits_mqtt_string(topic) and not any(c in topic for c in "+#")


def _substitutable(username: str) -> bool:
    return bool(username) and not any(c in username for c in "/+#\x00")


@dataclass(frozen=True)
class Acl:
    """Roles -> rules, plus the explicit role of each non-node username (everyone else is a node)."""

    role_rules: Mapping[Role, tuple[Rule, ...]] = field(default_factory=lambda: dict(DEFAULT_ROLE_RULES))
    user_roles: Mapping[str, Role] = field(default_factory=dict)

    def identity(self, username: str) -> Identity:
        return Identity(username, self.user_roles.get(username, Role.NODE))

    def _rules(self, identity: Identity, access: Access) -> Iterable[str]:
        for rule in self.role_rules.get(identity.role, ()):
            if not rule.access & access:
                continue
            if "%u" in rule.filter:
                if not _substitutable(identity.username):
                    continue
                yield rule.filter.replace("%u", identity.username)
            else:
                yield rule.filter

    def can_publish(self, identity: Identity, topic: str) -> bool:
        return valid_topic_name(topic) and any(topic_matches(topic, f) for f in self._rules(identity, Access.WRITE))

    def can_receive(self, identity: Identity, topic: str) -> bool:
        return any(topic_matches(topic, f) for f in self._rules(identity, Access.READ))

    def can_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        return valid_filter(topic_filter) and any(
            filter_within(topic_filter, f) for f in self._rules(identity, Access.READ)
        )

    def render_mosquitto(self) -> str:
        """The same rules as a Mosquitto `acl_file` (mosquitto.conf(5), "acl_file")."""
        words = {Access.READ: "read", Access.WRITE: "write", Access.READWRITE: "readwrite"}
        lines = [
            "# Generated by `cloudless broker mosquitto-config`; do not edit, regenerate.",
            "# Nodes: every username without a role below is a node; %u is its node id.",
        ]
        for rule in self.role_rules.get(Role.NODE, ()):
            lines.append(f"pattern {words[rule.access]} {rule.filter}")
        for username, role in sorted(self.user_roles.items()):
            if role is Role.NODE:
                continue
            lines.append("")
            lines.append(f"# role: {role.value}")
            lines.append(f"user {username}")
            for rule in self.role_rules.get(role, ()):
                if "%u" in rule.filter:
                    raise BrokerConfigError(f"role {role.value}: %u patterns are only supported for nodes")
                lines.append(f"topic {words[rule.access]} {rule.filter}")
        return "\n".join(lines) + "\n"
