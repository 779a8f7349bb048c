"""Membership verdicts as the engine runs them (adapter, composed into coordinator.service): which nodes to judge
this round and in what steps. The decisions are coordinator.membership's (`evaluate`, `judge_wills`,
`next_deadline`, `pause_clocks`); this keeps the deadlines and the change marks that say who is due.

Verdicts are deadline-driven (issue 17): a node is judged when something about it changed (its status, state or
observed state: Cluster.touch_node), when its next deadline (membership.next_deadline) has passed, or by the slow
sweep; heartbeats only move a deadline later, so a stale heap entry costs one evaluation that changes nothing and
schedules the real deadline. Nothing is judged while the coordinator cannot hear the broker, nor while the nodes
are still reconnecting after it (coordinator.link); when hearing resumes after an outage every node's clocks move
on by the whole deaf time. Thousands of nodes are judged (or paused) in steps of JUDGE_STEP, the loop serving
others in between.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from coordinator import membership
from coordinator.cluster import Cluster
from coordinator.link import LinkClock
from coordinator.membership import MembershipConfig, NodeInfo, NodeState

JUDGE_STEP = 500  # nodes judged (silence, grace periods) in one step of a round
JUDGE_SWEEP_S = 60.0  # every node is judged at least this often, due or not (the safety net under the deadlines)


class MembershipJudge:
    """`connected()`: whether the engine's broker link is up now."""

    def __init__(self, cluster: Cluster, cfg: MembershipConfig, *, link: LinkClock,
                 connected: Callable[[], bool]) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.link = link
        self.connected = connected
        self._changes = cluster.watch_nodes()
        self._deadlines: list[tuple[float, str]] = []  # a heap of (deadline, node); stale entries skipped lazily
        self._deadline_of: dict[str, float] = {}  # each node's live entry
        self._judged: dict[str, NodeInfo] | None = None  # the members map judged last (replaced: judge all)
        self._swept_at = float("-inf")
        self._wills: set[str] = set()  # nodes whose last will may be waiting for its verdict
        self.evaluations = 0  # membership.evaluate calls (a round with no deadline due makes none)

    async def judge(self, now: float) -> list[membership.MembershipEvent]:
        """Time-driven membership: the verdict on last wills, then silence and grace periods (not while this
        coordinator cannot hear the broker, nor while the nodes are still reconnecting after it: `hearing`).
        Only the nodes that changed or whose deadline has passed are judged (and every node by the slow sweep)."""
        link_up = await self.hearing(now)  # may move every node's clocks (then all are judged again)
        members, cfg = self.cluster.members, self.cfg
        if members is not self._judged or now - self._swept_at >= JUDGE_SWEEP_S:
            due = set(members)
            self._judged, self._swept_at = members, now
        else:
            due = set(self._changes)
        self._changes.clear()
        self._wills |= {n for n in due if (i := members.get(n)) is not None and i.will_at is not None}
        events: list[membership.MembershipEvent] = []
        if self._wills:
            self._wills = {n for n in self._wills if (i := members.get(n)) is not None and i.will_at is not None
                           and i.state is not NodeState.LOST}
            changed, events = membership.judge_wills(members, now, cfg, link_up=link_up,
                                                     link_down_at=self.link.down_at)
            members.update(changed)
            for node_id in changed:
                self.cluster.touch_node(node_id)
            self._changes.difference_update(changed)
            due |= set(changed)
        if not link_up:
            self._changes |= due  # judged once the coordinator hears again
            return events
        heap, live = self._deadlines, self._deadline_of
        while heap and heap[0][0] < now:
            at, node_id = heapq.heappop(heap)
            if live.get(node_id) == at:
                del live[node_id]
                due.add(node_id)
        for node_id in due - members.keys():  # deleted nodes
            live.pop(node_id, None)
        # many due (a sweep, or every deadline after a silence): in the members' order, as heartbeats tend to come
        # (a node heard while the judging yields is judged on its fresh report); few: sorted, as events read best
        order = [n for n in members if n in due] if len(due) > JUDGE_STEP else sorted(due & members.keys())
        evaluate = membership.evaluate
        for count, node_id in enumerate(order):
            if count and count % JUDGE_STEP == 0:
                await asyncio.sleep(0)
            members = self.cluster.members
            if (info := members.get(node_id)) is None:
                live.pop(node_id, None)
                continue
            self.evaluations += 1
            after, evs = evaluate(info, now, cfg)
            if after is not info:
                members[node_id] = after
                if after.state is not info.state:
                    self.cluster.touch_node(node_id)
                    self._changes.discard(node_id)  # judged now; its next deadline is scheduled below
            if evs:
                events += evs
            deadline = membership.next_deadline(after, cfg)
            if deadline is None:
                live.pop(node_id, None)
            elif live.get(node_id) != deadline:
                live[node_id] = deadline
                heapq.heappush(heap, (deadline, node_id))
        if len(heap) > 2 * len(live) + 1024:  # stale entries (deadlines moved) outnumber the live ones
            self._deadlines = [(at, n) for n, at in live.items()]
            heapq.heapify(self._deadlines)
        return events

    async def hearing(self, now: float) -> bool:
        """Connected, and the nodes have had time to reconnect since (coordinator.link). When that time comes after
        an outage, every node's clocks move on by the whole deaf time: it does not count against them. In place, in
        steps (a node heard meanwhile is paused too, harmlessly: never past `now`), then every node is judged."""
        hearing, outage = self.link.hearing(now, connected=self.connected())
        if outage is not None:
            members = self.cluster.members
            for count, node_id in enumerate(list(members), 1):
                if (info := members.get(node_id)) is not None:
                    members[node_id] = membership.pause_clocks(info, outage, now)
                if count % JUDGE_STEP == 0:
                    await asyncio.sleep(0)
            self._judged = None
        return hearing
