"""What the coordinator hears from the nodes (adapter): status, heartbeats, observed state and command replies
off MQTT, decoded strictly (a bad message is logged and dropped, never a crash of the loop) and folded into the
cluster view by the membership core; membership events go to the journal, and a change wakes the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker import wire
from broker.client import Message
from broker.errors import WireError
from broker.limits import safe_topic
from broker.listeners import ThrottledLog
from broker.wire import CommandReply, Heartbeat, NodeStatus, ObservedState, OverlayReport, Presence, topics
from coordinator import membership, model, replica_events
from coordinator.cluster import Cluster
from coordinator.membership import MembershipConfig
from coordinator.metrics import Metrics
from coordinator.operations import Recorder
from coordinator.overlay import OverlayBook
from coordinator.store import put

log = logging.getLogger(__name__)

Handler = Callable[[Message], None]


class Inbox:
    """`resolve(reply)` hands a command reply to whoever waits for it (Operations.resolve)."""

    def __init__(self, cluster: Cluster, journal: Recorder, *, metrics: Metrics, clock: Callable[[], float],
                 cfg: MembershipConfig, wake: Callable[[], None], resolve: Callable[[CommandReply], None],
                 overlay: OverlayBook | None = None, acting: Callable[[], bool] = lambda: True) -> None:
        self.cluster = cluster
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.cfg = cfg
        self.wake = wake
        self.resolve = resolve
        self.overlay = overlay if overlay is not None else OverlayBook()
        self.acting = acting  # only the acting coordinator writes the store
        self._bad = ThrottledLog(log)  # refusals of what nodes send: a flood of them is counted, not echoed

    def handlers(self) -> tuple[tuple[topics.Channel, Handler], ...]:
        """Which node channel each handler takes (the engine subscribes them)."""
        return ((topics.Channel.STATUS, self.on_status), (topics.Channel.HEARTBEAT, self.on_heartbeat),
                (topics.Channel.OBSERVED, self.on_observed), (topics.Channel.REPLY, self.on_reply),
                (topics.Channel.OVERLAY, self.on_overlay))

    def _decode(self, m: Message) -> object | None:
        self.metrics.mqtt("in", m.topic.rsplit("/", 1)[-1][:16], len(m.payload))
        if not m.payload:  # a cleared retained topic (a deleted node)
            return None
        try:
            return wire.decode_node_message(m.topic, m.payload)
        except WireError as exc:  # one line per node and channel per 10 s, with a count: 5,000 bad messages are
            node = m.topic.split("/")[3] if m.topic.count("/") >= 4 else "?"  # not 5,000 lines
            self._bad.log(logging.WARNING, f"{node}/{m.topic.rsplit('/', 1)[-1]}", "ignored a message on %s: %s",
                          safe_topic(m.topic), exc)
            return None

    def on_status(self, m: Message) -> None:
        msg = self._decode(m)
        if not isinstance(msg, NodeStatus):
            return
        if msg.node_id in self.cluster.revoked_nodes:
            self._bad.log(logging.WARNING, f"revoked/{msg.node_id}", "ignored a status from revoked node %s",
                          msg.node_id)
            return
        before = self.cluster.members.get(msg.node_id)
        info, evs = membership.on_status(before, msg, self.clock(), replayed=m.retain)
        self.cluster.members[msg.node_id] = info
        self.cluster.touch_node(msg.node_id)
        if msg.presence is Presence.ONLINE and self.acting() and (
                before is None or before.status is None or before.status.facts != msg.facts):
            # the node's record, so it stays listed (offline) after a restart of coordinator and broker
            self.journal.queue(put(model.member_key(msg.node_id), wire.encode(msg)))
        if info.will_at is not None and (before is None or before.will_at is None):
            # the verdict on a last will comes after the settle time (other wills may follow): a round then
            asyncio.get_running_loop().call_later(self.cfg.will_settle_s + 0.01, self.wake)
        for ev in evs:
            self.journal.event("Warning" if ev.warning else "Normal", ev.reason, f"node/{ev.node_id}", ev.message)
        if evs:
            self.wake()

    def on_heartbeat(self, m: Message) -> None:
        msg = self._decode(m)
        if isinstance(msg, Heartbeat):
            before = self.cluster.members.get(msg.node_id)
            info = membership.on_heartbeat(before, msg, self.clock())
            if info is not None:
                self.cluster.members[msg.node_id] = info
                if before is None or before.state is not info.state:  # a suspect node heard again
                    self.cluster.touch_node(msg.node_id)
                else:
                    self.cluster.touch_member(msg.node_id)  # its usage figures, for the dashboard mirror

    def on_observed(self, m: Message) -> None:
        msg = self._decode(m)
        if isinstance(msg, ObservedState):
            before = self.cluster.members.get(msg.node_id)
            previous = before.observed if before is not None else None
            info = membership.on_observed(before, msg, self.clock())
            if info is not None:
                self.cluster.members[msg.node_id] = info
                self.cluster.touch_node(msg.node_id)
                if not m.retain:  # a replay after a reconnect is not news
                    for ev in replica_events.warnings(previous, msg)[:20]:
                        # on the workload (describe workload shows it; the message names the node), else the node
                        rec = self.cluster.replicas.get(ev.replica_id)
                        obj = f"workload/{rec.namespace}/{rec.workload}" if rec is not None else f"node/{ev.node_id}"
                        self.journal.event("Warning", ev.reason, obj, ev.message, about=ev.replica_id)
                self.wake()

    def on_reply(self, m: Message) -> None:
        msg = self._decode(m)
        if isinstance(msg, CommandReply):
            self.resolve(msg)

    def on_overlay(self, m: Message) -> None:
        """A node's overlay report: kept for the directories and `get peers`; path changes become events (a
        retained replay after a reconnect is not news); new candidates or relays wake the loop (peers' directories
        change)."""
        if not m.payload:  # cleared (a deleted node): forget its report, on followers too
            node = m.topic.split("/")[3] if m.topic.count("/") >= 4 else ""
            self.overlay.reports.pop(node, None)
            return
        msg = self._decode(m)
        if not isinstance(msg, OverlayReport):
            return
        if msg.node_id in self.cluster.revoked_nodes:
            return
        events, changed = self.overlay.on_report(msg)
        if not m.retain:
            for ev in events[:20]:  # a node reporting 1,000 new peers at once is not 1,000 events
                self.journal.event("Warning" if ev.warning else "Normal", "OverlayPath", f"node/{ev.node_id}",
                                   ev.message, about=ev.peer)
        if changed:
            self.wake()
