"""The coordinator's broker link as membership sees it (pure core): when the coordinator can judge nodes.

States: DEAF (no link: from the start until the first connect, and after every disconnect), WAITING (connected,
but the nodes are still reconnecting on their own backoff: `membership.reconnect_window` of the outage) and
HEARING. Transitions: `connected(now)` DEAF → WAITING; `disconnected(now)` any → DEAF; `hearing(now, ...)` turns
WAITING into HEARING once the window has passed and reports the whole outage once, so the engine moves every
node's silence and grace clocks on by it (`membership.pause_clocks`): time nobody could be heard does not count
against the nodes. Invariant: `heard_for(now)` (seconds since start with a link) never counts deaf time.

The coordinator can also be deaf with its link up: its own event loop stalled (a blocking handler, a paused VM),
so nobody's messages were read. `LoopWatch` notices that from the event loop's lag: a small watchdog task turns it
every `WATCH_S` (and the engine's loop at each of its turns), so a gap between two turns past the limit means the
loop itself did not run. A slow round (a slow store write, a lock, a sliced round) is no stall: the loop serves
heartbeats meanwhile, and the watchdog keeps turning (review 2 H2: measuring the engine's turns took every slow
round for a stall). The engine treats a stall like an outage (`LinkClock.stalled`, `pause_clocks`), so a stalled
loop is never taken for silent nodes (issue 17: a 60 s stall marked 4,900 of 5,000 nodes suspect); not while the
link is down, as the outage already counts that time.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.membership import MembershipConfig, reconnect_window


@dataclass(slots=True)
class LinkClock:
    started_at: float
    up_at: float | None = None  # the broker link came up then (None: down)
    down_at: float | None = None  # ... and last went down then
    down_since: float | None = None  # deaf since then (None: hearing); the start counts as a disconnect
    deaf_s: float = 0.0  # seconds without a broker link before down_since
    hear_from: float = 0.0  # after a (re)connect, the nodes have had time to reconnect too from then on

    def __post_init__(self) -> None:
        if self.down_since is None and self.up_at is None:
            self.down_since = self.started_at  # not connected yet

    def connected(self, now: float, cfg: MembershipConfig) -> None:
        if self.down_since is not None:  # the nodes reconnect on their own backoff: give them time
            self.hear_from = now + reconnect_window(now - self.down_since, cfg)
        self.up_at = now

    def disconnected(self, now: float) -> None:
        self.up_at, self.down_at = None, now
        if self.down_since is None:
            self.down_since = now

    def hearing(self, now: float, *, connected: bool) -> tuple[bool, float | None]:
        """(hearing, outage): connected, and the nodes have had time to reconnect since. The first time that holds
        after an outage, `outage` is its length (every node's clocks move on by it); else None."""
        if self.up_at is None or not connected or now < self.hear_from:
            return False, None
        if self.down_since is None:
            return True, None
        outage = max(0.0, now - self.down_since)
        self.deaf_s += outage
        self.down_since = None
        return True, outage

    def stalled(self, seconds: float) -> None:
        """The coordinator heard nothing for `seconds` with its link up (its loop stalled): not time heard."""
        if self.down_since is None:  # while deaf anyway, the outage already counts that time
            self.deaf_s += max(0.0, seconds)

    def heard_for(self, now: float) -> float:
        """Seconds since start with a broker link."""
        deaf = self.deaf_s + (now - self.down_since if self.down_since is not None else 0.0)
        return now - self.started_at - deaf


STALL_MIN_S = 5.0  # a gap between turns of the loop past max(this, STALL_TICKS ticks) is a stall
STALL_TICKS = 10
WATCH_S = 0.5  # the watchdog's sleep: the loop turns at least this often unless it stalls


@dataclass(slots=True)
class LoopWatch:
    """The gaps between turns of the coordinator's loop, on a monotonic clock: `turned(now)` returns how long the
    loop was stalled when the gap since the last turn exceeds `limit_s` (less the `tick_s` it waits on purpose),
    else None."""

    tick_s: float
    limit_s: float
    last: float | None = None

    @classmethod
    def for_tick(cls, tick_s: float) -> LoopWatch:
        return cls(tick_s=tick_s, limit_s=max(STALL_MIN_S, STALL_TICKS * tick_s))

    @classmethod
    def watchdog(cls, tick_s: float) -> LoopWatch:
        """Turned by a watchdog every WATCH_S (and by the engine's loop): the limit of an engine ticking `tick_s`."""
        return cls(tick_s=WATCH_S, limit_s=max(STALL_MIN_S, STALL_TICKS * tick_s))

    def turned(self, now: float) -> float | None:
        gap = None if self.last is None else now - self.last
        self.last = now
        if gap is None or gap <= self.limit_s:
            return None
        return gap - self.tick_s
