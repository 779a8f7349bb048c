"""Building the agent's reports (`edge_agent.report`) from values: bounds, and the keys that decide a republish."""

from __future__ import annotations

import pytest

from broker.wire import DesiredState, NodeFacts, Presence, ReplicaUsage
from edge_agent import report
from edge_agent.facts import MemDisk
from edge_agent.runtime.base import Usage

FACTS = NodeFacts(hostname="h", os="linux", arch="x86_64", cpu_count=2, memory_bytes=1 << 30)


@pytest.mark.parametrize(("presence", "gates_say", "schedulable"), [
    (Presence.ONLINE, True, True), (Presence.ONLINE, False, False), (Presence.OFFLINE, True, False),
], ids=["online", "gated", "offline-never"])
def test_status_schedulable(presence: Presence, gates_say: bool, schedulable: bool) -> None:
    msg = report.status(node_id="n1", presence=presence, now=5.0, facts=FACTS, schedulable=gates_say, reasons=(),
                        boot_id="b")
    assert (msg.schedulable, msg.ts, msg.boot_id, msg.presence) == (schedulable, 5.0, "b", presence)


def test_status_gate_reasons_are_bounded() -> None:
    msg = report.status(node_id="n1", presence=Presence.ONLINE, now=0.0, facts=FACTS, schedulable=False,
                        reasons=tuple("x" * 200 for _ in range(20)), boot_id="b")
    assert len(msg.gates) == 16 and all(len(g) == 128 for g in msg.gates)


def test_status_key_changes_with_gates_only() -> None:
    assert report.status_key(Presence.ONLINE, True, ()) == report.status_key(Presence.ONLINE, True, ())
    assert report.status_key(Presence.ONLINE, True, ()) != report.status_key(Presence.ONLINE, False, ("hot",))


@pytest.mark.parametrize(("desired", "generation", "epoch"), [
    (None, 0, 0), (DesiredState(node_id="n1", generation=7, epoch=3, issued_at=0.0, replicas=()), 7, 3),
], ids=["before-any-desired", "answers-desired"])
def test_observed_answers_the_desired_state(desired: DesiredState | None, generation: int, epoch: int) -> None:
    msg = report.observed("n1", desired, 9.0, ())
    assert (msg.generation, msg.epoch, msg.ts) == (generation, epoch, 9.0)
    assert report.observed_key(msg) == (generation, epoch, ())
    assert report.observed_key(report.observed("n1", desired, 10.0, ())) == report.observed_key(msg)  # ts ignored


def test_replica_usage_caps_cpu_and_skips_unknown_instances() -> None:
    usage = {"i2": Usage(cpu_percent=9000.0, memory_bytes=5), "i1": Usage(), "stray": Usage(cpu_percent=1.0)}
    assert report.replica_usage(usage, {"i1": "a-0", "i2": "b-0"}) == (
        ReplicaUsage(replica_id="a-0", cpu_percent=None, memory_bytes=None),
        ReplicaUsage(replica_id="b-0", cpu_percent=6400.0, memory_bytes=5))


def test_replica_usage_is_bounded() -> None:
    usage = {f"i{n:04}": Usage() for n in range(300)}
    assert len(report.replica_usage(usage, {iid: iid for iid in usage})) == 256


def test_heartbeat_carries_device_readings() -> None:
    hb = report.heartbeat(node_id="n1", seq=4, now=2.0, cpu_percent=12.5, md=MemDisk(1, 2, 3, 4),
                          battery_percent=80.0, replicas=())
    assert (hb.seq, hb.ts, hb.cpu_percent, hb.memory_used_bytes, hb.memory_total_bytes, hb.disk_used_bytes,
            hb.disk_total_bytes, hb.battery_percent) == (4, 2.0, 12.5, 1, 2, 3, 4, 80.0)


@pytest.mark.parametrize(("max_epoch", "sent"), [(0, None), (7, 7)], ids=["none-seen", "honoured"])
def test_heartbeat_reports_the_highest_epoch_the_agent_honours(max_epoch: int, sent: int | None) -> None:
    hb = report.heartbeat(node_id="n1", seq=1, now=2.0, cpu_percent=None, md=MemDisk(1, 2, 3, 4),
                          battery_percent=None, replicas=(), max_epoch=max_epoch)
    assert hb.max_epoch == sent
