"""Membership (coordinator/membership.py): a table per transition of its theory of operation, gate events, flaps
and reliability, and a hypothesis property over any input sequence checked against an independent model."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.backoff import Backoff
from broker.wire import Heartbeat, NodeFacts, NodeStatus, ObservedState, Presence
from coordinator.membership import (
    MembershipConfig,
    MembershipEvent,
    NodeInfo,
    NodeState,
    evaluate,
    judge_wills,
    mark_lost,
    next_deadline,
    on_heartbeat,
    on_observed,
    on_status,
    pause_clocks,
    reconnect_window,
    silence_ttl,
)

CFG = MembershipConfig(heartbeat_ttl_s=45.0, lost_after_s=30.0, flap_discount=0.9)
NODE = "pi-1"
CLOCK = 1_700_000_000.0  # the node's own clock in its messages (a clean goodbye carries it; the will carries 0)
ONLINE, SUSPECT, OFFLINE, LOST = NodeState.ONLINE, NodeState.SUSPECT, NodeState.OFFLINE, NodeState.LOST
J, L, LOST_, REC, SUS, GATED, UNGATED = ("NodeJoined", "NodeLeft", "NodeLost", "NodeRecovered", "NodeSuspect",
                                         "NodeGated", "NodeUngated")


def status(t: float, *, online: bool = True, schedulable: bool = True, gates: tuple[str, ...] = (),
           ts: float | None = None) -> NodeStatus:
    return NodeStatus(node_id=NODE, presence=Presence.ONLINE if online else Presence.OFFLINE,
                      ts=CLOCK + t if ts is None else ts, facts=NodeFacts(profile="pi4", cpu_count=4),
                      schedulable=schedulable, gates=gates)


def feed(info: NodeInfo | None, kind: str, t: float) -> tuple[NodeInfo | None, list[MembershipEvent]]:
    """One input at time t: online, gated (online, unschedulable), goodbye (clean offline), will (offline, ts 0),
    hb (heartbeat), obs (observed state), eval (the reconcile tick), judge (the verdict on last wills, the
    coordinator's broker link up)."""
    match kind:
        case "online":
            return on_status(info, status(t), t)
        case "gated":
            return on_status(info, status(t, schedulable=False, gates=("battery below 20%",)), t)
        case "goodbye":
            return on_status(info, status(t, online=False), t)
        case "will":
            return on_status(info, status(t, online=False, schedulable=False, ts=0.0), t)
        case "hb":
            return on_heartbeat(info, Heartbeat(node_id=NODE, seq=int(t), ts=CLOCK + t), t), []
        case "obs":
            return on_observed(info, ObservedState(node_id=NODE, generation=1, epoch=1, ts=CLOCK + t), t), []
        case "eval":
            return evaluate(info, t, CFG) if info is not None else (None, [])
        case "judge":
            if info is None:
                return None, []
            changed, events = judge_wills({NODE: info}, t, CFG, link_up=True, link_down_at=None)
            return changed.get(NODE, info), events
    raise AssertionError(kind)


def drive(*steps: str) -> tuple[NodeInfo | None, list[str]]:
    """Steps written "kind@t" (see `feed`); returns the final info and every event reason in order."""
    info: NodeInfo | None = None
    reasons: list[str] = []
    for step in steps:
        kind, at = step.split("@")
        info, events = feed(info, kind, float(at))
        reasons += [e.reason for e in events]
    return info, reasons


def state_of(*steps: str) -> NodeState:
    info, _ = drive(*steps)
    assert info is not None
    return info.state


# ---- transitions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "state", "events"), [
    pytest.param(["online@0"], ONLINE, [J], id="join"),
    pytest.param(["goodbye@0"], OFFLINE, [], id="first-seen-offline"),
    pytest.param(["will@0", "judge@0.5"], LOST, [LOST_], id="first-seen-by-its-will"),
    pytest.param(["online@0", "goodbye@10"], OFFLINE, [J, L], id="clean-leave"),
    pytest.param(["online@0", "goodbye@10", "eval@40"], OFFLINE, [J, L], id="grace-boundary-exclusive"),
    pytest.param(["online@0", "goodbye@10", "eval@40.5"], LOST, [J, L, LOST_], id="grace-over"),
    pytest.param(["online@0", "goodbye@10", "hb@20", "eval@40.5"], LOST, [J, L, LOST_],
                 id="heartbeat-does-not-extend-the-grace"),
    pytest.param(["online@0", "will@10"], OFFLINE, [J], id="a-will-waits-for-its-verdict"),
    pytest.param(["online@0", "will@10", "judge@10.4"], OFFLINE, [J], id="no-verdict-within-the-settle-time"),
    pytest.param(["online@0", "will@10", "judge@10.5"], LOST, [J, LOST_], id="a-lone-will-is-lost"),
    pytest.param(["online@0", "will@10", "eval@1000"], OFFLINE, [J], id="evaluate-leaves-a-will-to-the-verdict"),
    pytest.param(["online@0", "will@10", "online@10.2", "judge@11"], ONLINE, [J, REC], id="back-before-the-verdict"),
    pytest.param(["online@0", "goodbye@10", "will@11", "judge@12"], LOST, [J, L, LOST_], id="will-during-the-grace"),
    pytest.param(["online@0", "eval@46", "will@50", "judge@51"], LOST, [J, SUS, LOST_], id="will-while-suspect"),
    pytest.param(["online@0", "will@10", "will@10.3", "judge@10.5"], LOST, [J, LOST_], id="second-will-no-event"),
    pytest.param(["online@0", "will@10", "judge@11", "will@12", "judge@13"], LOST, [J, LOST_], id="will-after-lost"),
    pytest.param(["online@0", "will@10", "judge@11", "goodbye@12"], LOST, [J, LOST_], id="goodbye-after-lost"),
    pytest.param(["online@0", "eval@45"], ONLINE, [J], id="ttl-boundary-exclusive"),
    pytest.param(["online@0", "eval@45.5"], SUSPECT, [J, SUS], id="silent-suspect"),
    pytest.param(["online@0", "eval@46", "eval@75"], SUSPECT, [J, SUS], id="lost-boundary-exclusive"),
    pytest.param(["online@0", "eval@46", "eval@75.5"], LOST, [J, SUS, LOST_], id="silent-lost"),
    pytest.param(["online@0", "eval@500"], SUSPECT, [J, SUS], id="one-transition-per-evaluate"),
    pytest.param(["online@0", "hb@40", "eval@80"], ONLINE, [J], id="heartbeat-keeps-online"),
    pytest.param(["online@0", "obs@40", "eval@80"], ONLINE, [J], id="observed-keeps-online"),
    pytest.param(["online@0", "online@40", "eval@80"], ONLINE, [J], id="status-keeps-online"),
    pytest.param(["online@0", "eval@46", "hb@50"], ONLINE, [J, SUS], id="heartbeat-revives-suspect"),
    pytest.param(["online@0", "eval@46", "hb@50", "eval@95.5"], SUSPECT, [J, SUS, SUS], id="suspect-again"),
    pytest.param(["online@0", "eval@46", "obs@50", "eval@80"], SUSPECT, [J, SUS],
                 id="observed-postpones-lost-but-does-not-revive"),
    pytest.param(["online@0", "goodbye@10", "hb@11"], OFFLINE, [J, L], id="heartbeat-does-not-revive-offline"),
    pytest.param(["online@0", "will@10", "judge@11", "hb@12"], LOST, [J, LOST_], id="heartbeat-does-not-revive-lost"),
    pytest.param(["online@0", "goodbye@10", "online@20"], ONLINE, [J, L, REC], id="online-revives-offline"),
    pytest.param(["online@0", "will@10", "judge@11", "online@20"], ONLINE, [J, LOST_, REC], id="online-revives-lost"),
    pytest.param(["online@0", "eval@46", "online@50"], ONLINE, [J, SUS, REC], id="online-revives-suspect"),
    pytest.param(["goodbye@0", "online@5"], ONLINE, [REC], id="first-offline-then-online"),
    pytest.param(["online@0", "online@5"], ONLINE, [J], id="repeated-online-status"),
    pytest.param(["online@0", "will@10", "judge@11", "eval@1000"], LOST, [J, LOST_], id="lost-is-final-for-evaluate"),
    pytest.param(["hb@0", "obs@1", "eval@100", "online@101"], ONLINE, [J], id="heartbeat-before-status-ignored"),
])
def test_transitions(steps: list[str], state: NodeState, events: list[str]) -> None:
    info, reasons = drive(*steps)
    assert info is not None
    assert (info.state, reasons) == (state, events)


def test_back_before_the_verdict_says_what_it_recovers_from() -> None:
    """No NodeLeft or NodeLost was recorded for a will still waiting for its verdict: the recovery says why."""
    info, _ = drive("online@0", "will@10")
    _, events = on_status(info, status(10.3), 10.3)
    assert [(e.reason, e.message) for e in events] == [
        (REC, "node pi-1 reconnected 0.3s after its last will, before the verdict on it: a broker or network blip")]
    info, _ = drive("online@0", "goodbye@10")  # after a NodeLeft the plain message does
    _, events = on_status(info, status(20), 20)
    assert [(e.reason, e.message) for e in events] == [(REC, "node pi-1 is back online")]


def test_heartbeat_and_observed_before_any_status_are_ignored() -> None:
    assert on_heartbeat(None, Heartbeat(node_id=NODE, seq=1, ts=CLOCK), 1.0) is None
    assert on_observed(None, ObservedState(node_id=NODE, generation=1, epoch=1, ts=CLOCK), 1.0) is None


def test_lost_warnings_and_messages() -> None:
    _, events = feed(drive("online@0", "will@10")[0], "judge", 10.5)
    assert [(e.reason, e.warning, e.node_id) for e in events] == [(LOST_, True, NODE)]
    assert "last will" in events[0].message
    joined = on_status(None, status(0), 0.0)[1][0]
    assert (joined.reason, joined.warning) == (J, False)
    assert "pi4" in joined.message


@pytest.mark.parametrize(("steps", "crashed", "status_presence"), [
    pytest.param(["online@0"], False, Presence.ONLINE, id="online"),
    pytest.param(["online@0", "goodbye@5"], False, Presence.ONLINE, id="goodbye-keeps-the-last-online-status"),
    pytest.param(["online@0", "will@5", "judge@6"], True, Presence.ONLINE, id="will-keeps-the-last-online-status"),
    pytest.param(["will@0", "judge@1"], True, Presence.OFFLINE, id="first-seen-by-will-keeps-the-will"),
    pytest.param(["online@0", "will@5"], False, Presence.ONLINE, id="not-crashed-before-the-verdict"),
    pytest.param(["online@0", "will@5", "judge@6", "online@9"], False, Presence.ONLINE, id="online-clears-crashed"),
])
def test_how_it_went_away_is_remembered(steps: list[str], crashed: bool, status_presence: Presence) -> None:
    info, _ = drive(*steps)
    assert info is not None and info.status is not None
    assert (info.crashed, info.status.presence) == (crashed, status_presence)


@pytest.mark.parametrize(("steps", "state", "events"), [
    pytest.param(["online@0", "eval@46", "goodbye@50"], OFFLINE, [J, SUS, L], id="goodbye-while-suspect-is-offline"),
    # suspect since 46 would be lost past 0 + 45 + 30 = 75; the goodbye at 74 restarts the clock: lost after 104
    pytest.param(["online@0", "eval@46", "goodbye@74", "eval@76"], OFFLINE, [J, SUS, L],
                 id="goodbye-gets-the-grace-period"),
    pytest.param(["online@0", "eval@46", "goodbye@74", "eval@104"], OFFLINE, [J, SUS, L],
                 id="grace-from-the-goodbye-boundary-exclusive"),
    pytest.param(["online@0", "eval@46", "goodbye@74", "eval@104.5"], LOST, [J, SUS, L, LOST_],
                 id="grace-from-the-goodbye-over"),
    pytest.param(["online@0", "eval@46", "goodbye@50", "hb@51"], OFFLINE, [J, SUS, L],
                 id="heartbeat-after-goodbye-no-revival"),
    pytest.param(["online@0", "eval@46", "goodbye@50", "online@60"], ONLINE, [J, SUS, L, REC],
                 id="online-after-goodbye-revives"),
])
def test_goodbye_while_suspect(steps: list[str], state: NodeState, events: list[str]) -> None:
    """A clean goodbye from a silent (SUSPECT) node is a clean leave, as from ONLINE: OFFLINE, NodeLeft, and
    the grace period counted from the goodbye."""
    info, reasons = drive(*steps)
    assert info is not None
    assert (info.state, reasons) == (state, events)
    assert info.flaps == 1  # ONLINE -> SUSPECT was the exit; SUSPECT -> OFFLINE is not a second one
    assert not info.crashed  # a clean leave, even once the grace period is over


@pytest.mark.parametrize(("steps", "flaps"), [
    pytest.param(["online@0"], 1, id="from-online"),
    pytest.param(["online@0", "eval@46"], 1, id="from-suspect"),
    pytest.param(["online@0", "goodbye@5"], 1, id="from-offline"),
    pytest.param(["online@0", "will@5", "judge@6"], 1, id="already-lost"),
])
def test_mark_lost_is_lost_at_once(steps: list[str], flaps: int) -> None:
    """The administrative verdict (a revoked certificate). The core would let a later online status revive the
    node: keeping a revoked node out is the adapter's job (Coordinator ignores statuses of revoked nodes)."""
    info, _ = drive(*steps)
    assert info is not None
    lost = mark_lost(info, 60.0)
    assert (lost.state, lost.crashed, lost.flaps) == (LOST, True, flaps)
    assert evaluate(lost, 1000.0, CFG)[0].state is LOST
    assert on_status(lost, status(70.0), 70.0)[0].state is ONLINE


# ---- last wills judged together; time counted only while listening ----------------------------------------------


def cluster(n: int) -> dict[str, NodeInfo]:
    out = {}
    for k in range(n):
        info, _ = on_status(None, replace(status(0), node_id=f"n{k}"), 0.0)
        out[info.node_id] = info
    return out


def will(members: dict[str, NodeInfo], node: str, t: float) -> None:
    members[node], _ = on_status(members[node], replace(status(t, online=False, ts=0.0), node_id=node), t)


@pytest.mark.parametrize(("size", "willed", "link_up", "link_down_at", "lost"), [
    pytest.param(3, ["n0"], True, None, ["n0"], id="a-lone-will-is-a-crash"),
    pytest.param(10, ["n0", "n1"], True, None, ["n0", "n1"], id="two-of-ten-are-crashes"),
    pytest.param(3, ["n0", "n1"], True, None, [], id="two-of-three-together-is-the-broker"),
    pytest.param(2, ["n0", "n1"], True, None, [], id="every-node-at-once"),
    pytest.param(1, ["n0"], True, None, ["n0"], id="one-node-is-not-together"),
    pytest.param(3, ["n0"], False, 10.2, [], id="this-coordinator-lost-the-broker-too"),
    pytest.param(3, ["n0"], True, 10.3, [], id="and-is-back-already"),
    pytest.param(3, ["n0"], True, 9.4, ["n0"], id="its-link-went-down-well-before"),
    pytest.param(1, ["n0"], True, 9.5, [], id="its-link-went-down-within-the-settle-time-before"),
])
def test_wills_are_judged_together(size: int, willed: list[str], link_up: bool, link_down_at: float | None,
                                   lost: list[str]) -> None:
    members = cluster(size)
    for node in willed:
        will(members, node, 10.0)
    changed, events = judge_wills(members, 10.5, CFG, link_up=link_up, link_down_at=link_down_at)
    assert sorted(changed) == sorted(willed)
    assert sorted(n for n, i in changed.items() if i.state is LOST) == sorted(lost)
    assert all(i.will_at is None for i in changed.values())
    assert sorted((e.node_id, e.reason) for e in events) == sorted(
        (n, LOST_ if n in lost else L) for n in willed)
    kept = [i for i in changed.values() if i.state is not LOST]
    for info in kept:  # the grace period of a clean goodbye, counted from the will
        assert not info.crashed and info.state is OFFLINE
        assert evaluate(info, 40.0, CFG)[0].state is OFFLINE
        assert evaluate(info, 40.5, CFG)[0].state is LOST
        assert on_status(info, replace(status(20), node_id=info.node_id), 20.0)[0].state is ONLINE
    if kept:
        assert "broker" in events[0].message and "grace period" in events[0].message


def test_wills_wait_for_the_settle_time_after_the_first() -> None:
    members = cluster(4)
    will(members, "n0", 10.0)
    assert judge_wills(members, 10.4, CFG, link_up=True, link_down_at=None) == ({}, [])
    will(members, "n1", 10.3)
    will(members, "n2", 10.45)
    changed, events = judge_wills(members, 10.5, CFG, link_up=True, link_down_at=None)
    assert sorted(changed) == ["n0", "n1", "n2"] and all(i.state is OFFLINE for i in changed.values())
    assert "together with 2 of the other 3 live nodes" in events[0].message
    assert judge_wills({**members, **changed}, 11.0, CFG, link_up=True, link_down_at=None) == ({}, [])


@pytest.mark.parametrize(("before", "state", "events"), [
    pytest.param([], OFFLINE, [], id="first-seen"),
    pytest.param(["online@0"], OFFLINE, [L], id="was-online"),
    pytest.param(["online@0", "goodbye@5"], OFFLINE, [], id="already-offline"),
])
def test_a_replayed_will_is_a_goodbye_with_its_grace_period(before: list[str], state: NodeState,
                                                            events: list[str]) -> None:
    """A retained will sent as the coordinator (re)subscribed may be from a broker outage long over: no proof
    of a crash, so the node gets the grace period (from now) instead of the verdict on a fresh will."""
    info, _ = drive(*before)
    replayed, evs = on_status(info, status(10, online=False, ts=0.0), 10.0, replayed=True)
    assert (replayed.state, [e.reason for e in evs], replayed.will_at, replayed.crashed) == (state, events, None, False)
    if evs:
        assert "last will kept by the broker" in evs[0].message
    since = replayed.state_since  # the replay, or the goodbye before it
    assert evaluate(replayed, since + 30.0, CFG)[0].state is OFFLINE  # the grace period of a goodbye
    assert evaluate(replayed, since + 30.5, CFG)[0].state is LOST


@pytest.mark.parametrize(("steps", "outage", "now", "state"), [
    pytest.param(["online@0"], 100.0, 145.0, ONLINE, id="silence-stops-while-deaf"),
    pytest.param(["online@0"], 100.0, 145.5, SUSPECT, id="and-goes-on-after"),
    pytest.param(["online@0", "eval@46"], 100.0, 175.0, SUSPECT, id="suspect-clock-stops-too"),
    pytest.param(["online@0", "eval@46"], 100.0, 175.5, LOST, id="suspect-lost-after-the-rest"),
    pytest.param(["online@0", "goodbye@10"], 50.0, 90.0, OFFLINE, id="grace-stops-while-deaf"),
    pytest.param(["online@0", "goodbye@10"], 50.0, 90.5, LOST, id="grace-over-after-the-rest"),
    pytest.param(["online@0", "goodbye@10"], 0.1, 40.7, LOST, id="a-blip-restarts-no-clock"),
])
def test_time_counts_only_while_the_coordinator_hears(steps: list[str], outage: float, now: float,
                                                      state: NodeState) -> None:
    info, _ = drive(*steps)
    assert info is not None
    paused = pause_clocks(info, outage, now)
    assert evaluate(paused, now, CFG)[0].state is state


def test_paused_clocks_never_pass_now() -> None:
    info, _ = drive("online@0", "goodbye@10")
    assert info is not None
    paused = pause_clocks(info, 1000.0, 50.0)
    assert (paused.last_seen, paused.state_since) == (50.0, 50.0)


def test_a_revoked_node_has_no_will_left_to_judge() -> None:
    members = cluster(3)
    will(members, "n0", 10.0)
    will(members, "n1", 10.0)
    members["n1"] = mark_lost(members["n1"], 10.2)  # revoked meanwhile
    changed, events = judge_wills(members, 10.5, CFG, link_up=True, link_down_at=None)
    assert list(changed) == ["n0"] and changed["n0"].state is LOST  # a lone will now, not "together"
    assert [e.node_id for e in events] == ["n0"]


def test_a_link_drop_well_after_a_will_does_not_excuse_it() -> None:
    members = cluster(3)
    will(members, "n0", 10.0)
    changed, _ = judge_wills(members, 12.0, CFG, link_up=True, link_down_at=11.0)  # a late verdict round
    assert changed["n0"].state is LOST


# ---- gates ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "events"), [
    pytest.param(["online@0", "gated@5"], [J, GATED], id="gated"),
    pytest.param(["online@0", "gated@5", "online@9"], [J, GATED, UNGATED], id="ungated"),
    pytest.param(["online@0", "gated@5", "gated@6"], [J, GATED], id="gated-once"),
    pytest.param(["gated@0"], [J], id="joining-gated-is-no-transition"),
    pytest.param(["gated@0", "online@5"], [J, UNGATED], id="joined-gated-then-ungated"),
    pytest.param(["online@0", "goodbye@5", "gated@10"], [J, L, REC, GATED], id="gated-across-a-goodbye"),
    pytest.param(["online@0", "will@5", "judge@6", "gated@10"], [J, LOST_, REC, GATED], id="gated-across-a-will"),
])
def test_gate_events(steps: list[str], events: list[str]) -> None:
    info, reasons = drive(*steps)
    assert reasons == events
    assert info is not None and info.state is ONLINE  # a gate changes schedulability, never membership


def test_gated_event_says_why() -> None:
    info, _ = drive("online@0")
    _, events = feed(info, "gated", 5.0)
    assert events[0].warning and "battery below 20%" in events[0].message


# ---- flaps and reliability --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "flaps"), [
    pytest.param(["online@0"], 0, id="steady"),
    pytest.param(["online@0", "eval@46"], 1, id="suspect"),
    pytest.param(["online@0", "eval@46", "hb@50", "eval@96"], 2, id="suspect-twice"),
    pytest.param(["online@0", "goodbye@5", "online@10", "will@15", "online@20"], 2, id="goodbye-and-will"),
    pytest.param(["online@0", "eval@46", "eval@80", "online@90"], 1, id="suspect-to-lost-is-one-flap"),
    pytest.param(["goodbye@0", "online@5"], 0, id="never-online-before"),
])
def test_flaps_count_every_exit_from_online(steps: list[str], flaps: int) -> None:
    info, _ = drive(*steps)
    assert info is not None and info.flaps == flaps


@pytest.mark.parametrize(("steps", "now", "reliability"), [
    pytest.param(["online@0"], 100.0, 1.0, id="always-online"),
    pytest.param(["online@0", "goodbye@50", "online@100"], 100.0, 0.5 * 0.9, id="half-the-time-one-flap"),
    pytest.param(["online@0", "goodbye@50"], 100.0, 0.5 * 0.9, id="offline-now"),
    pytest.param(["online@0", "goodbye@50"], 200.0, 0.25 * 0.9, id="offline-longer"),
    pytest.param(["online@0", "eval@46", "hb@50"], 100.0, 0.96 * 0.9, id="suspect-time-is-not-uptime"),
    pytest.param(["goodbye@0"], 100.0, 0.0, id="never-online"),
    pytest.param(["online@0", "eval@46", "hb@50", "eval@96", "hb@100"], 100.0, 0.92 * 0.81, id="two-flaps"),
])
def test_reliability(steps: list[str], now: float, reliability: float) -> None:
    info, _ = drive(*steps)
    assert info is not None
    assert info.reliability(now, CFG) == pytest.approx(reliability)


def test_reliability_decreases_with_flaps_and_offline_time() -> None:
    steady, _ = drive("online@0")
    flappy, _ = drive("online@0", "goodbye@1", "online@1")
    assert steady is not None and flappy is not None
    assert flappy.reliability(100.0, CFG) < steady.reliability(100.0, CFG)
    gone, _ = drive("online@0", "goodbye@50")
    assert gone is not None
    values = [gone.reliability(t, CFG) for t in (60.0, 100.0, 1000.0)]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]
    assert gone.reliability(100.0, MembershipConfig(flap_discount=0.5)) == pytest.approx(0.25)


# ---- the property -----------------------------------------------------------------------------------------------

KINDS = ("online", "gated", "goodbye", "will", "hb", "obs", "eval", "judge")
EVENT_FOR = {LOST: LOST_, SUSPECT: SUS}


STEP = st.sampled_from([0.0, 0.5, 1.0, 10.0, 29.0, 31.0, 44.0, 46.0, 80.0]) | st.floats(0.0, 120.0)
INPUT = st.tuples(st.sampled_from((*KINDS, "eval", "eval", "eval", "hb")), STEP)  # evaluate is the usual input


@settings(max_examples=500, deadline=None)
@given(st.lists(INPUT, min_size=1, max_size=40))
def test_any_input_sequence(inputs: list[tuple[str, float]]) -> None:
    """Against an independent model: the state is one of the four; LOST only through the verdict on a will (the
    settle time after it), the grace period after a goodbye or silence past ttl + lost_after; SUSPECT only
    through silence past the ttl; a will makes a node OFFLINE until its verdict; flaps count the exits from
    ONLINE; NodeLost/NodeSuspect are emitted exactly on those transitions; a goodbye from ONLINE or SUSPECT is
    OFFLINE with NodeLeft (and NodeLeft only then); crashed exactly after a will's verdict until back online;
    reliability in [0, 1]."""
    info: NodeInfo | None = None
    now = 0.0
    heard = offline_since = 0.0  # the model's own clocks
    will_at: float | None = None
    crashed = False
    silenced = False  # LOST through silence (SUSPECT past ttl + lost_after): a heartbeat brings it back
    exits = 0
    for kind, dt in inputs:
        now += dt
        before = info.state if info is not None else None
        info, events = feed(info, kind, now)
        if info is None:
            assert kind in ("hb", "obs", "eval", "judge")
            continue
        after = info.state
        reasons = [e.reason for e in events]
        assert after in set(NodeState)
        if kind in ("online", "gated", "hb", "obs"):
            heard = now
        if kind == "will" and before is not LOST and will_at is None:
            will_at = now
        if after is not before:
            exits += before is ONLINE
            if after is LOST:
                assert ((kind == "judge" and will_at is not None and now - will_at >= CFG.will_settle_s)
                        or (kind == "eval" and before is OFFLINE and will_at is None
                            and now - offline_since > CFG.lost_after_s)
                        or (kind == "eval" and before is SUSPECT
                            and now - heard > CFG.heartbeat_ttl_s + CFG.lost_after_s)), (kind, before)
            elif after is SUSPECT:
                assert kind == "eval" and before is ONLINE and now - heard > CFG.heartbeat_ttl_s
            elif after is OFFLINE:
                assert kind in ("goodbye", "will") and before in (ONLINE, SUSPECT, None)
                offline_since = now
            else:
                assert kind in ("online", "gated") or (kind == "hb" and (before is SUSPECT or
                                                                          (before is LOST and silenced)))
            crashed = (after is LOST and kind == "judge") or (crashed and after is LOST)
            silenced = after is LOST and kind == "eval" and before is SUSPECT
        if after is not OFFLINE:
            will_at = None
        assert info.will_at == will_at
        if kind == "goodbye" and before in (ONLINE, SUSPECT):
            assert after is OFFLINE  # a clean leave, whether the node was heard lately or silent
        assert (L in reasons) == (kind == "goodbye" and before in (ONLINE, SUSPECT))
        for state, reason in EVENT_FOR.items():
            assert (reason in reasons) == (after is state and before is not state)
        assert info.crashed == crashed
        assert info.flaps == exits
        assert 0.0 <= info.reliability(now, CFG) <= 1.0


@pytest.mark.parametrize(("outage", "window"), [(0.0, 1.0), (0.2, 1.4), (9.0, 19.0), (14.5, 30.0), (600.0, 30.0)],
                         ids=["connect-at-start", "blip", "nine-seconds", "at-the-cap", "long-outage"])
def test_the_nodes_get_their_backoff_to_reconnect_after_the_coordinator(outage: float, window: float) -> None:
    """An agent's current reconnect wait can reach twice the time it has been failing (jittered exponential
    backoff), capped at the backoff maximum the agents use."""
    assert reconnect_window(outage, CFG) == window
    assert CFG.reconnect_max_s == Backoff().maximum_s


# ---- per-node silence TTL (issue 17: change-driven heartbeats) ------------------------------------------------


def stated(t: float, heartbeat_max_s: float | None, keepalive_s: int | None = None) -> NodeStatus:
    return replace(status(t), heartbeat_max_s=heartbeat_max_s, keepalive_s=keepalive_s)


@pytest.mark.parametrize(("heartbeat_max_s", "ttl"), [
    (None, 45.0),  # an older agent: the coordinator's TTL, unchanged
    (1.0, 45.0),  # a fast heartbeat never shortens the TTL (2.5 x 1 + 30 < 45)
    (10.0, 55.0),  # 2.5 x 10 + 30
    (300.0, 780.0),  # 2.5 x 300 + 30: the mains-powered profiles (one lost heartbeat is no news)
    (7200.0, 18030.0),  # the metered phone: presence is the broker's keep-alive and will
], ids=["old-agent", "fast", "ten-seconds", "default-profile", "metered-profile"])
def test_the_silence_ttl_follows_what_the_node_states(heartbeat_max_s: float | None, ttl: float) -> None:
    info, _ = on_status(None, stated(0.0, heartbeat_max_s, 60), 0.0)
    assert silence_ttl(info, CFG) == ttl


def test_a_node_with_rare_heartbeats_stays_online_past_the_default_ttl() -> None:
    info, _ = on_status(None, stated(0.0, 300.0, 60), 0.0)
    for t in (46.0, 200.0, 600.0, 779.0):  # 600: one heartbeat lost on the way
        info, events = evaluate(info, t, CFG)
        assert info.state is ONLINE and events == [], t
    info, events = evaluate(info, 781.0, CFG)
    assert info.state is SUSPECT and [e.reason for e in events] == [SUS]
    info, events = evaluate(info, 781.0 + 30.0, CFG)  # TTL + lost_after_s
    assert info.state is LOST and [e.reason for e in events] == [LOST_]


def test_an_old_agent_is_suspect_after_the_default_ttl() -> None:
    info, _ = on_status(None, stated(0.0, None), 0.0)
    info, events = evaluate(info, 46.0, CFG)
    assert info.state is SUSPECT and [e.reason for e in events] == [SUS]


def test_the_last_will_keeps_the_stated_timers() -> None:
    """The will (offline, ts 0) states no timers: the node's last online status keeps its TTL for its return."""
    info, _ = on_status(None, stated(0.0, 7200.0, 1500), 0.0)
    info, _ = on_status(info, status(10.0, online=False, ts=0.0), 10.0)
    assert info.status is not None and info.status.heartbeat_max_s == 7200.0
    assert silence_ttl(info, CFG) == 18030.0


def test_a_node_lost_by_silence_is_online_again_at_its_next_heartbeat() -> None:
    """Its connection never dropped (no will, no new status): a heartbeat is proof of life (review 3, H3)."""
    info, _ = on_status(None, stated(0.0, 300.0, 60), 0.0)
    info, _ = evaluate(info, 781.0, CFG)
    info, _ = evaluate(info, 811.0, CFG)
    assert info.state is LOST
    back = on_heartbeat(info, Heartbeat(node_id=NODE, seq=9, ts=CLOCK + 900.0), 900.0)
    assert back is not None and back.state is ONLINE and back.flaps == info.flaps


def test_a_silent_power_off_is_the_broker_s_will_not_the_ttl() -> None:
    """A node with a 2-hour heartbeat maximum is still declared lost within seconds of its will."""
    info, _ = on_status(None, stated(0.0, 7200.0, 1500), 0.0)
    info, _ = on_status(info, status(2250.0, online=False, ts=0.0), 2250.0)  # 1.5 x keep-alive after the cut
    changed, events = judge_wills({NODE: info}, 2251.0, CFG, link_up=True, link_down_at=None)
    assert changed[NODE].state is LOST and [e.reason for e in events] == [LOST_]


@settings(max_examples=300, deadline=None)
@given(st.lists(INPUT, min_size=1, max_size=30), st.floats(0.0, 200.0))
def test_evaluate_changes_nothing_before_the_next_deadline_and_something_after_it(
        inputs: list[tuple[str, float]], later: float) -> None:
    """The engine judges a node only at its deadline (issue 17): evaluate at or before `next_deadline` returns
    the node unchanged, and just past it (with nothing heard) makes a transition; no deadline, nothing ever."""
    info: NodeInfo | None = None
    now = 0.0
    for kind, dt in inputs:
        now += dt
        info, _ = feed(info, kind, now)
    if info is None:
        return
    deadline = next_deadline(info, CFG)
    if deadline is None:
        assert evaluate(info, now + later, CFG)[0] is info
        return
    at = min(deadline - 1e-3, now + later)  # any time before the deadline (not before what was fed; 1 ms: rounding)
    if at >= now:
        assert evaluate(info, at, CFG)[0] is info
    if deadline >= now:
        after, events = evaluate(info, deadline + 1e-3, CFG)
        assert after.state is not info.state and events
