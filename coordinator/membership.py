"""Membership (pure core): which nodes exist, whether they are up, and how reliable they have been.

Theory of operation. A node's state is derived from three inputs — its retained status (presence, facts,
gates), its heartbeats, and the local receive times — and `now`:

    ONLINE   status says online and the node was heard from within `heartbeat_ttl_s`
    SUSPECT  status says online but the node has been silent past the TTL (a silent failure the broker has not
             noticed yet); becomes LOST once silent for `heartbeat_ttl_s + lost_after_s`
    OFFLINE  the node said goodbye (a clean stop publishes `offline` with its clock): its workloads may well
             still be running, so it gets a grace period (`lost_after_s`, Nomad's lostAfter) before LOST
    LOST     replicas on it are replaced. Reached at once when the broker published the node's last will
             (abnormal disconnect: the agent's will is `offline` with ts = 0), otherwise after the grace period.

A node returning (online status) goes back to ONLINE from any state; every ONLINE -> not-online transition
counts as a flap. Reliability = uptime share over the time we have known the node, discounted per flap.
Transitions are returned as `MembershipEvent`s; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from broker.wire import Heartbeat, NodeStatus, ObservedState, Presence

WILL_TS = 0.0  # the agent's last will carries ts = 0: a crash or a cut link, not a clean stop


class NodeState(StrEnum):
    ONLINE = "online"
    SUSPECT = "suspect"
    OFFLINE = "offline"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    heartbeat_ttl_s: float = 45.0
    lost_after_s: float = 30.0
    flap_discount: float = 0.9


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    state: NodeState
    status: NodeStatus | None = None
    heartbeat: Heartbeat | None = None
    observed: ObservedState | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    state_since: float = 0.0
    crashed: bool = False
    flaps: int = 0
    online_time: float = 0.0  # accumulated up to state_since while ONLINE
    known_time: float = 0.0

    @property
    def online(self) -> bool:
        return self.state is NodeState.ONLINE

    def reliability(self, now: float, cfg: MembershipConfig = MembershipConfig()) -> float:
        online = self.online_time + (now - self.state_since if self.state is NodeState.ONLINE else 0.0)
        known = max(now - self.first_seen, 1e-9)
        return max(0.0, min(1.0, online / known)) * cfg.flap_discount ** min(self.flaps, 50)


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    node_id: str
    reason: str  # NodeJoined, NodeRecovered, NodeLeft, NodeSuspect, NodeLost, NodeGated, NodeUngated
    message: str
    warning: bool = False


def _transition(info: NodeInfo, state: NodeState, now: float) -> NodeInfo:
    if state is info.state:
        return info
    online_time = info.online_time + (now - info.state_since if info.state is NodeState.ONLINE else 0.0)
    flaps = info.flaps + (1 if info.state is NodeState.ONLINE else 0)
    return replace(info, state=state, state_since=now, online_time=online_time, flaps=flaps)


def on_status(info: NodeInfo | None, msg: NodeStatus, now: float) -> tuple[NodeInfo, list[MembershipEvent]]:
    events: list[MembershipEvent] = []
    node = msg.node_id
    if info is None:
        state = NodeState.ONLINE if msg.presence is Presence.ONLINE else NodeState.OFFLINE
        info = NodeInfo(node_id=node, state=state, first_seen=now, state_since=now)
        if state is NodeState.ONLINE:
            events.append(MembershipEvent(node, "NodeJoined", f"node {node} joined ({msg.facts.profile or '?'})"))
    previous = info
    if msg.presence is Presence.ONLINE:
        if info.state is not NodeState.ONLINE:
            events.append(MembershipEvent(node, "NodeRecovered", f"node {node} is back online"))
        info = replace(_transition(info, NodeState.ONLINE, now), crashed=False)
        info = replace(info, status=msg, last_seen=now)
    else:
        crashed = msg.ts == WILL_TS
        if info.state in (NodeState.ONLINE, NodeState.SUSPECT) or (crashed and info.state is not NodeState.LOST):
            if crashed:
                info = _transition(info, NodeState.LOST, now)
                events.append(MembershipEvent(node, "NodeLost", f"node {node} disconnected abnormally "
                                              "(last will); replacing its replicas", warning=True))
            else:
                info = _transition(info, NodeState.OFFLINE, now)
                events.append(MembershipEvent(node, "NodeLeft", f"node {node} went offline; its replicas are kept "
                                              "for the grace period", warning=True))
        # keep the last online status for its facts; remember how it went away
        info = replace(info, crashed=crashed, status=previous.status if previous.status is not None else msg)
    if msg.presence is Presence.ONLINE and previous.status is not None:
        was, now_gates = previous.status.schedulable, msg.schedulable
        if was and not now_gates:
            events.append(MembershipEvent(node, "NodeGated", f"node {node} unschedulable: {'; '.join(msg.gates)}",
                                          warning=True))
        elif not was and now_gates:
            events.append(MembershipEvent(node, "NodeUngated", f"node {node} schedulable again"))
    return info, events


def on_heartbeat(info: NodeInfo | None, msg: Heartbeat, now: float) -> NodeInfo | None:
    if info is None:
        return None  # a heartbeat before any status: wait for the status (it carries the facts)
    updated = replace(info, heartbeat=msg, last_seen=now)
    if info.state is NodeState.SUSPECT:
        updated = _transition(updated, NodeState.ONLINE, now)
    return updated


def on_observed(info: NodeInfo | None, msg: ObservedState, now: float) -> NodeInfo | None:
    if info is None:
        return None
    return replace(info, observed=msg, last_seen=max(info.last_seen, now))


def evaluate(info: NodeInfo, now: float, cfg: MembershipConfig) -> tuple[NodeInfo, list[MembershipEvent]]:
    """Time-driven transitions: silence and grace periods."""
    node = info.node_id
    match info.state:
        case NodeState.ONLINE if now - info.last_seen > cfg.heartbeat_ttl_s:
            return _transition(info, NodeState.SUSPECT, now), [
                MembershipEvent(node, "NodeSuspect", f"node {node} silent for {now - info.last_seen:.0f}s",
                                warning=True)]
        case NodeState.SUSPECT if now - info.last_seen > cfg.heartbeat_ttl_s + cfg.lost_after_s:
            return _transition(info, NodeState.LOST, now), [
                MembershipEvent(node, "NodeLost", f"node {node} silent for {now - info.last_seen:.0f}s; "
                                "replacing its replicas", warning=True)]
        case NodeState.OFFLINE if now - info.state_since > cfg.lost_after_s:
            return _transition(info, NodeState.LOST, now), [
                MembershipEvent(node, "NodeLost", f"node {node} offline for {cfg.lost_after_s:.0f}s; "
                                "replacing its replicas", warning=True)]
    return info, []


def mark_lost(info: NodeInfo, now: float) -> NodeInfo:
    """An administrative verdict (the node's certificate was revoked): LOST now, whatever it reports."""
    return replace(_transition(info, NodeState.LOST, now), crashed=True)
