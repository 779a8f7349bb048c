"""The heartbeat policy core (`edge_agent.beat`): a heartbeat goes when something moved past the thresholds or the
maximum interval passed, never on a schedule alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker.wire import Heartbeat, ReplicaUsage
from edge_agent import beat
from edge_agent.beat import BeatPolicy, Sent
from firmware_profiles import Link, Thresholds, load_profile

GIB = 2**30
POLICY = BeatPolicy(min_interval_s=10.0, max_interval_s=300.0, thresholds=Thresholds())


def hb(**changes: Any) -> Heartbeat:
    base = Heartbeat(node_id="n1", seq=1, ts=0.0, cpu_percent=5.0, memory_used_bytes=1 * GIB,
                     memory_total_bytes=8 * GIB, disk_used_bytes=10 * GIB, disk_total_bytes=100 * GIB,
                     battery_percent=80.0, replicas=(ReplicaUsage("web-0", 10.0, 100 * 2**20),), max_epoch=3)
    return replace(base, **changes)


SENT = Sent(heartbeat=hb(), gates=(), at=1000.0)


def test_the_first_heartbeat_always_goes() -> None:
    assert beat.due(POLICY, None, hb(), (), 0.0) == beat.Verdict(True, "first heartbeat")


def test_an_unchanged_node_stays_silent_until_the_maximum_interval() -> None:
    quiet = [t for t in range(1010, 1300, 10) if beat.due(POLICY, SENT, hb(cpu_percent=6.0), (), t).send]
    assert quiet == []
    # half a tick of slack: a tick that samples a little early still sends at the deadline
    assert beat.due(POLICY, SENT, hb(), (), 1296.0) == beat.Verdict(True, "maximum interval")


CHANGES = [
    ("cpu", {"cpu_percent": 31.0}, "cpu"),
    ("cpu-unreadable", {"cpu_percent": None}, "cpu"),
    ("memory", {"memory_used_bytes": 2 * GIB}, "memory"),  # 12.5 % of 8 GiB > 10
    ("disk", {"disk_used_bytes": 16 * GIB}, "disk"),  # 6 % > 5
    ("battery", {"battery_percent": 69.0}, "battery"),
    ("epoch", {"max_epoch": 4}, "max_epoch"),
    ("replica-gone", {"replicas": ()}, "replicas changed"),
    ("replica-new", {"replicas": (ReplicaUsage("web-0", 10.0, 100 * 2**20), ReplicaUsage("db-0"))},
     "replicas changed"),
    ("replica-cpu", {"replicas": (ReplicaUsage("web-0", 70.0, 100 * 2**20),)}, "replica web-0 cpu"),
    ("replica-memory", {"replicas": (ReplicaUsage("web-0", 10.0, 130 * 2**20),)}, "replica web-0 memory"),
]


@pytest.mark.parametrize(("changes", "reason"), [(c, r) for _, c, r in CHANGES], ids=[i for i, _, _ in CHANGES])
def test_a_move_past_a_threshold_that_persists_sends(changes: dict[str, Any], reason: str) -> None:
    """Two samples in a row past the threshold: news."""
    assert beat.due(POLICY, SENT, hb(**changes), (), 1020.0, previous=hb(**changes)) == beat.Verdict(True, reason)


@pytest.mark.parametrize(("changes", "reason"), [(c, r) for _, c, r in CHANGES], ids=[i for i, _, _ in CHANGES])
def test_a_reading_that_jumps_for_one_sample_is_not_news(changes: dict[str, Any], reason: str) -> None:
    """A CPU spike for one sample (something ran for a few seconds) waits for the next; an epoch or a replica set
    that changed is news at once."""
    verdict = beat.due(POLICY, SENT, hb(**changes), (), 1020.0, previous=hb())
    assert verdict.send is (reason in beat.DISCRETE), verdict


SMALL = [
    ("cpu", {"cpu_percent": 29.0}),
    ("memory", {"memory_used_bytes": GIB + GIB // 2}),  # 6.25 % of 8 GiB
    ("disk", {"disk_used_bytes": 14 * GIB}),
    ("battery", {"battery_percent": 71.0}),
    ("replica-cpu", {"replicas": (ReplicaUsage("web-0", 40.0, 100 * 2**20),)}),
    ("replica-memory", {"replicas": (ReplicaUsage("web-0", 10.0, 120 * 2**20),)}),
    ("seq-and-ts", {"seq": 99, "ts": 1010.0}),
]


@pytest.mark.parametrize("changes", [c for _, c in SMALL], ids=[i for i, _ in SMALL])
def test_small_moves_are_not_news(changes: dict[str, Any]) -> None:
    assert beat.due(POLICY, SENT, hb(**changes), (), 1010.0) == beat.Verdict(False, "unchanged")


def test_a_slow_drift_is_measured_from_the_last_sent_heartbeat() -> None:
    """Each sample moves CPU by 5 points: no single step is news, the sum is (compared with what was sent)."""
    sent = SENT
    sends = []
    previous = hb()
    for step in range(1, 10):
        t = 1000.0 + 10 * step
        sample = hb(cpu_percent=5.0 + 5 * step)
        verdict = beat.due(POLICY, sent, sample, (), t, previous=previous)
        if verdict.send:
            sends.append(step)
            sent = Sent(sample, (), t)
        previous = sample
    # 5 -> 30 is 25 points, not past 25; 35 is, and 40 still is (two samples); then 40 -> 50 is only 10
    assert sends == [7]


def test_a_spike_then_back_is_never_sent() -> None:
    spike, calm = hb(cpu_percent=95.0), hb(cpu_percent=6.0)
    assert not beat.due(POLICY, SENT, spike, (), 1010.0, previous=hb()).send
    assert not beat.due(POLICY, SENT, calm, (), 1020.0, previous=spike).send


def test_gate_changes_send_at_once() -> None:
    assert beat.due(POLICY, SENT, hb(), ("battery below 30%",), 1010.0) == beat.Verdict(True, "gates")


def test_nothing_goes_faster_than_the_sampling_tick() -> None:
    assert beat.due(POLICY, SENT, hb(cpu_percent=90.0), (), 1001.0) == beat.Verdict(False, "minimum interval")


def test_a_clock_stepping_back_sends_rather_than_falls_silent() -> None:
    assert beat.due(POLICY, SENT, hb(), (), 10.0).send


def test_every_sends_each_tick_even_when_the_sample_runs_a_little_early() -> None:
    every = BeatPolicy.every(1.0)
    assert beat.due(every, Sent(hb(), (), 100.0), hb(), (), 100.999).send


def test_policy_from_a_profile() -> None:
    phone = load_profile("termux-android")
    policy = BeatPolicy.of(phone.heartbeat_interval_s, phone.link)
    assert (policy.min_interval_s, policy.max_interval_s) == (30.0, 7200.0)
    assert policy.thresholds.cpu_percent == 50.0
    # a maximum below the sampling interval (an override) never makes the agent heartbeat faster than it samples
    assert BeatPolicy.of(60.0, Link(heartbeat_max_interval_s=30.0)).max_interval_s == 60.0


def test_the_status_states_the_link_timers() -> None:
    from broker.wire import NodeFacts, Presence
    from edge_agent import report

    msg = report.status(node_id="n1", presence=Presence.ONLINE, now=1.0, facts=NodeFacts(), schedulable=True,
                        reasons=(), boot_id="b", heartbeat_max_s=7200.0, keepalive_s=1500)
    assert (msg.heartbeat_max_s, msg.keepalive_s) == (7200.0, 1500)


@pytest.mark.parametrize(("sample", "maximum", "expected"), [
    (None, None, (30.0, 7200.0)),  # the profile's
    (1.0, None, (1.0, 1.0)),  # --heartbeat-interval alone: a heartbeat every second, as before
    (1.0, 20.0, (1.0, 20.0)),  # both: the integration tests' short but change-driven link
    (None, 600.0, (30.0, 600.0)),
])
def test_command_line_overrides(sample: float | None, maximum: float | None, expected: tuple[float, float]) -> None:
    from edge_agent.profile import select_profile

    selected = select_profile("termux-android")
    policy = selected.beat_policy(sample, maximum)
    assert (policy.min_interval_s, policy.max_interval_s) == expected
    assert selected.keepalive_s() == 1500 and selected.keepalive_s(10) == 10
