"""Issue 16, Medium 6: one flapping node must not wipe the event history. Repeats of one (object, reason) are
damped and counted, and security events (enrolment, policy, revocation, tokens, secrets) are kept apart from the
churn, so no amount of churn evicts them."""

from __future__ import annotations

import asyncio

from coordinator.journal import EVENT_DAMP_S, EVENT_RETENTION, Journal
from coordinator.store import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _journal(clock: Clock) -> Journal:
    return Journal(SqliteStore(":memory:"), clock=clock, lock=asyncio.Lock(), recording=lambda: True)


def test_a_flapping_node_is_aggregated_and_cannot_evict_security_events() -> None:
    clock = Clock()
    j = _journal(clock)
    j.event("Normal", "Enrolled", "node/pi", "certificate 1a")
    j.event("Warning", "PolicyDenied", "workload/default/x", "refused")
    for i in range(2 * EVENT_RETENTION):  # 10,000 presence flaps at 150 a second
        clock.now += 1 / 150
        j.event("Warning" if i % 2 else "Normal", "NodeSuspect" if i % 2 else "NodeOnline", "node/flappy", "flap")
    reasons = [e.reason for e in j.events]
    assert "Enrolled" in reasons and "PolicyDenied" in reasons
    flaps = [e for e in j.events if e.object == "node/flappy"]
    assert len(flaps) <= 2 * (2 * EVENT_RETENTION / 150 / EVENT_DAMP_S + 2), len(flaps)
    assert any("more like it" in e.message for e in flaps)


def test_churn_alone_is_still_bounded_and_security_events_have_their_own_bound() -> None:
    clock = Clock()
    j = _journal(clock)
    for i in range(EVENT_RETENTION + 50):
        clock.now += 1
        j.event("Normal", "Placed", f"workload/default/w{i}", "placed")  # distinct objects: nothing to damp
    assert len(j.events) == EVENT_RETENTION
    for i in range(10):
        j.event("Normal", "TokenCreated", f"token/t{i}", "minted")
    assert len(j.events) == EVENT_RETENTION + 10
    assert [e.seq for e in j.events] == sorted(e.seq for e in j.events)


def test_read_back_keeps_each_class_within_its_own_bound() -> None:
    from coordinator.journal import SECURITY_RETENTION, retained
    from coordinator.model import Event

    evs = [Event(seq=i, time=0.0, type="Normal", reason="Enrolled" if i < 3 else "Placed", object="o", message="")
           for i in range(EVENT_RETENTION + SECURITY_RETENTION)]
    kept = retained(evs[::-1])
    assert [e.seq for e in kept[:3]] == [0, 1, 2] and len(kept) == EVENT_RETENTION + 3


def test_decisions_and_admin_actions_are_never_damped() -> None:
    """Only churn (what a device does to itself) is damped: three replicas placed at once are three events, and a
    node cordoned, uncordoned and cordoned again within seconds is each time an event a watcher waits for."""
    clock = Clock()
    j = _journal(clock)
    for rid in ("web-1", "web-2", "web-3"):
        j.event("Normal", "Placed", "workload/default/web", f"replica {rid} placed on a")
    for what in ("Cordoned", "Uncordoned", "Cordoned", "Uncordoned"):
        clock.now += 0.1
        j.event("Normal", what, "node/b", f"node b {what.lower()}")
    assert [e.reason for e in j.events] == ["Placed"] * 3 + ["Cordoned", "Uncordoned"] * 2
