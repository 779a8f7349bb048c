"""When a heartbeat is worth its bytes (pure core).

Presence is not the heartbeat's job: the MQTT keep-alive and the last will say whether the node is there (the
broker publishes the will 1.5 x keep-alive after the link went silent, MQTT 3.1.1 §3.1.2.10). The heartbeat
carries news: the agent samples the device every `min_interval_s` and sends a heartbeat only when

- it has sent none yet (since it started),
- `max_interval_s` passed since the last one (so the coordinator's view never grows older than that, and a
  coordinator that lost a heartbeat hears again),
- the gates changed (their reasons), or the highest epoch it honours (`max_epoch`) changed,
- CPU, memory, disk or battery moved past the profile's thresholds since the last heartbeat *sent* (comparing with
  the last sent, not the last sampled, so a slow drift adds up and is reported once it matters), and stayed past
  them for two samples in a row: a device's CPU jumps whenever something runs for a few seconds, and a heartbeat
  per jump would cost more than the keep-alive (measured by bench/control_link.py on a busy machine: 22 heartbeats
  in 10 minutes instead of 2),
- the replicas it reports usage for changed (at once), or one's usage moved materially (two samples in a row).

The node states `max_interval_s` in its status; the coordinator derives its silence TTL from it
(`coordinator.membership`). Nothing here reads a clock: `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.wire import Heartbeat, ReplicaUsage
from firmware_profiles import Link, Thresholds

MIB = 2**20


@dataclass(frozen=True, slots=True)
class BeatPolicy:
    min_interval_s: float  # the sampling tick: heartbeats never come closer together than this
    max_interval_s: float  # the longest silence on the heartbeat topic
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def of(cls, sample_s: float, link: Link) -> BeatPolicy:
        return cls(min_interval_s=sample_s, max_interval_s=max(sample_s, link.heartbeat_max_interval_s),
                   thresholds=link.thresholds)

    @classmethod
    def every(cls, interval_s: float) -> BeatPolicy:
        """A heartbeat every `interval_s`, whatever changed (the behaviour before issue 17; tests)."""
        return cls(min_interval_s=interval_s, max_interval_s=interval_s)


@dataclass(frozen=True, slots=True)
class Sent:
    """The last heartbeat sent, the gates it went with, and when."""

    heartbeat: Heartbeat
    gates: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Verdict:
    send: bool
    reason: str  # why (or "unchanged")


def _moved(old: float | None, new: float | None, threshold: float) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    return abs(new - old) > threshold


def _share_moved(old: int | None, new: int | None, total: int | None, threshold_percent: float) -> bool:
    """`old` -> `new` moved more than `threshold_percent` of `total` (bytes)."""
    if old is None or new is None or not total:
        return (old is None) != (new is None)
    return abs(new - old) * 100.0 / total > threshold_percent


def _replicas_moved(old: tuple[ReplicaUsage, ...], new: tuple[ReplicaUsage, ...], t: Thresholds) -> str | None:
    before = {u.replica_id: u for u in old}
    after = {u.replica_id: u for u in new}
    if before.keys() != after.keys():
        return "replicas changed"
    for rid, now in after.items():
        was = before[rid]
        if _moved(was.cpu_percent, now.cpu_percent, t.replica_cpu_percent):
            return f"replica {rid} cpu"
        if was.memory_bytes is None or now.memory_bytes is None:
            if (was.memory_bytes is None) != (now.memory_bytes is None):
                return f"replica {rid} memory"
        elif abs(now.memory_bytes - was.memory_bytes) > t.replica_memory_percent / 100.0 * max(was.memory_bytes, MIB):
            return f"replica {rid} memory"
    return None


DISCRETE = ("max_epoch", "replicas changed")  # news at once; every other reason is a reading that must persist


def changed(last: Heartbeat, candidate: Heartbeat, t: Thresholds) -> str | None:
    """What in `candidate` moved past the thresholds since `last` (None: nothing worth a heartbeat)."""
    if candidate.max_epoch != last.max_epoch:
        return "max_epoch"
    if _moved(last.cpu_percent, candidate.cpu_percent, t.cpu_percent):
        return "cpu"
    if _share_moved(last.memory_used_bytes, candidate.memory_used_bytes, candidate.memory_total_bytes,
                    t.memory_percent):
        return "memory"
    if _share_moved(last.disk_used_bytes, candidate.disk_used_bytes, candidate.disk_total_bytes, t.disk_percent):
        return "disk"
    if _moved(last.battery_percent, candidate.battery_percent, t.battery_percent):
        return "battery"
    return _replicas_moved(last.replicas, candidate.replicas, t)


def due(policy: BeatPolicy, last: Sent | None, candidate: Heartbeat, gates: tuple[str, ...], now: float, *,
        previous: Heartbeat | None = None) -> Verdict:
    """Whether to send `candidate` (sampled at `now`, with the gates' current reasons) after `last`. `previous`: the
    sample taken one tick before (sent or not); a reading counts only when it was past its threshold then too."""
    if last is None:
        return Verdict(True, "first heartbeat")
    elapsed = now - last.at
    if elapsed < 0:  # the wall clock stepped back: better one heartbeat too many than a long silence
        return Verdict(True, "clock stepped back")
    # the agent samples once per tick (`min_interval_s`): half a tick of slack lets the tick nearest the deadline
    # send, rather than the one after it when the sampling ran a little early
    slack = policy.min_interval_s / 2
    if elapsed >= policy.max_interval_s - slack:
        return Verdict(True, "maximum interval")
    if elapsed < policy.min_interval_s - slack:
        return Verdict(False, "minimum interval")
    if gates != last.gates:
        return Verdict(True, "gates")
    what = changed(last.heartbeat, candidate, policy.thresholds)
    if what is None:
        return Verdict(False, "unchanged")
    if what in DISCRETE:
        return Verdict(True, what)
    if previous is None or changed(last.heartbeat, previous, policy.thresholds) is None:
        return Verdict(False, f"{what} (waiting for a second sample)")
    return Verdict(True, what)
