"""The rules both ends of an interactive session follow (pure core; `now` is always passed in).

Theory of operation. A session (`cloudless exec -it`) carries bytes both ways as numbered frames over MQTT QoS 1
(`TtyInput`, `TtyOutput`). QoS 1 is "at least once" (MQTT 3.1.1 §4.3.2): a frame may arrive twice after a
reconnect, and messages of one topic arrive in order only per connection (§4.6), so each receiver keeps:

- `Reorder`: frames handed on in sequence order. A repeat (seq already passed) is dropped; a frame from ahead is
  held (at most `window`) until the gap fills. A gap still open after `gap_timeout_s`, or more held frames than the
  window, is a loss: the session ends with that reason rather than show the user a stream with a hole in it.
- `Liveness`: when this side last heard the peer and when either side last carried the user's bytes. It says when
  to send a keepalive (an empty frame, so a quiet session is not mistaken for a dead one), and when the session is
  over: the peer silent for `silence_s` (it is gone: the node lost power, the coordinator died) or nothing typed or
  printed for `idle_s` (someone walked away from an open shell).
- `Pace`: a token bucket bounding the bytes per second one direction may carry (a `yes` in the shell must not
  flood the broker); the sender waits `delay()` seconds before sending.

Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

KEEPALIVE_S = 10.0  # a side quiet this long sends an empty frame
SILENCE_S = 45.0  # a peer unheard this long is gone (several keepalives missed)
IDLE_S = 3600.0  # nothing typed or printed for an hour: the session ends
GAP_TIMEOUT_S = 10.0
WINDOW = 64


@dataclass(frozen=True, slots=True)
class Accepted(Generic[T]):
    """What one arriving frame releases: the frames now in order (maybe none), or why the stream is broken."""

    items: tuple[T, ...] = ()
    lost: str = ""


@dataclass
class Reorder(Generic[T]):
    """One direction's frames, released in `seq` order from 0."""

    window: int = WINDOW
    gap_timeout_s: float = GAP_TIMEOUT_S
    expected: int = 0
    held: dict[int, T] = field(default_factory=dict)
    gap_since: float | None = None

    def accept(self, seq: int, item: T, now: float) -> Accepted[T]:
        if seq < self.expected or seq in self.held:
            return Accepted()  # a repeat (QoS 1 redelivery)
        if seq > self.expected:
            self.held[seq] = item
            if self.gap_since is None:
                self.gap_since = now
            if len(self.held) > self.window:
                return Accepted(lost=self._missing())
            return Accepted(lost=self.check(now))
        out = [item]
        self.expected += 1
        while self.expected in self.held:
            out.append(self.held.pop(self.expected))
            self.expected += 1
        self.gap_since = now if self.held else None
        return Accepted(tuple(out))

    def check(self, now: float) -> str:
        """Why the stream is broken ("" while it is not): a gap open longer than `gap_timeout_s`."""
        if self.gap_since is not None and now - self.gap_since > self.gap_timeout_s:
            return self._missing()
        return ""

    def _missing(self) -> str:
        first_held = min(self.held)
        return f"frames {self.expected}..{first_held - 1} lost ({len(self.held)} later ones arrived)"


@dataclass
class Liveness:
    """When this side last heard its peer and last sent, and when the user's bytes last moved either way."""

    started: float
    keepalive_s: float = KEEPALIVE_S
    silence_s: float = SILENCE_S
    idle_s: float = IDLE_S
    heard: float = field(init=False)
    sent: float = field(init=False)
    active: float = field(init=False)

    def __post_init__(self) -> None:
        self.heard = self.sent = self.active = self.started

    def on_heard(self, now: float, *, data: bool) -> None:
        self.heard = max(self.heard, now)
        if data:
            self.active = max(self.active, now)

    def on_sent(self, now: float, *, data: bool) -> None:
        self.sent = max(self.sent, now)
        if data:
            self.active = max(self.active, now)

    def keepalive_due(self, now: float) -> bool:
        return now - self.sent >= self.keepalive_s

    def expired(self, now: float) -> str:
        """Why the session is over ("" while it is not)."""
        if now - self.heard > self.silence_s:
            return f"the other side went silent ({now - self.heard:.0f}s without a frame)"
        if now - self.active > self.idle_s:
            return f"idle for {self.idle_s:.0f}s (nothing typed or printed)"
        return ""

    def next_check(self, now: float) -> float:
        """Seconds until something here may change (a keepalive or an expiry), at least 0.1."""
        due = min(self.sent + self.keepalive_s, self.heard + self.silence_s, self.active + self.idle_s)
        return max(0.1, due - now)


@dataclass
class Pace:
    """A token bucket: `rate` bytes per second, bursts of up to `burst` bytes."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    at: float | None = None

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def delay(self, size: int, now: float) -> float:
        """Take `size` bytes from the bucket; the seconds to wait before sending them (0: at once)."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
