"""Birthday-paradox punching for one peer (sans-IO core: `now`, the link's state and a seeded random source in;
what to open, spray and close out). The sockets live in the adapter (dataplane.endpoint).

Why: a port-randomising ("symmetric", "hard") NAT gives every destination a fresh random public port, and a
port-restricted NAT admits packets only from address:port pairs its device has sent to. With one socket each the two
never meet. Tailscale's answer ("How NAT traversal works", the birthday paradox): the hard side opens many mappings
towards the easy side, the easy side sprays probes at many random ports of the hard side's public address; with K
mappings among 64,512 ports and N probes, a hit is likely (K=256, N=2048: 1 - (1 - 256/64512)^2048 ≈ 99.97 %). Neither
side needs to know which one is hard: both run the same routine, and only the hard side's mappings and the easy
side's spray can meet.

Theory of operation:

- **Waiting.** A link is *eligible* while it is on the relay, both sides have a reflexive candidate (UDP reaches a
  relay from both) and no other attempt of this endpoint runs. Eligible for `start_after_s` in a row (ordinary
  punching had its chance), not before the back-off ends and within the budget: an attempt starts.
- **Opening.** `OpenSockets(count)`: the adapter opens `count` extra sockets on ephemeral ports and sends one
  authenticated probe from each to the peer's reflexive addresses (the NAT maps each to its own public port).
- **Spraying.** From `settle_s` after opening, `Spray(ports)` batches of authenticated probes from the main socket to
  distinct random ports of the peer's public IP, paced at `rate_per_s`, `probes` in all: a loop that ends.
- **Lingering.** `linger_s` more for late answers, then `CloseSockets` and back to waiting with the next back-off.
- **Found.** When the link goes direct (through any socket) during an attempt, the attempt ends at once with
  `CloseSockets` (the adapter keeps the one socket a path uses). A success resets the back-off: if that path dies
  later, the next attempt waits only `start_after_s` and the first back-off.

Invariants: at most `budget` attempts without a success; at most `probes` spray probes and `sockets` sockets per
attempt; every port sprayed is in [low_port, high_port] and distinct within an attempt; nothing here sends or sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class BirthdayConfig:
    start_after_s: float = 10.0  # on the relay this long with punching going on: ordinary punching failed
    sockets: int = 256  # K: extra mappings opened towards the peer
    # N: spray probes at distinct random ports of the peer's public IP. With K=256, 1024 probes hit with 98 %, 2048
    # with 99.97 % (1 - (1 - 256/64512)^N); at 400/s either takes about 5 s, well inside a NAT's 30 s for an
    # unanswered UDP mapping, and 2048 entries are a small part of a home router's conntrack table
    probes: int = 2048
    rate_per_s: float = 400.0  # spray pace
    batch_s: float = 0.05  # spray in batches this far apart
    settle_s: float = 0.5  # between opening our sockets and spraying (the peer opens its own meanwhile)
    linger_s: float = 3.0  # after the last spray probe, for late answers
    # after each failed attempt (the last repeats): the first retry comes soon, because a miss is most often the two
    # sides starting their attempts seconds apart (their sockets and spray did not overlap), not a hopeless NAT pair
    backoff_s: tuple[float, ...] = (30.0, 120.0, 300.0)
    budget: int = 4  # failed attempts in a row, then never again for this link
    low_port: int = 1024
    high_port: int = 65535

    def __post_init__(self) -> None:
        if not 0 < self.sockets <= 1024:
            raise ValueError(f"sockets: {self.sockets} (1-1024)")
        if not 0 < self.probes <= self.high_port - self.low_port + 1:
            raise ValueError(f"probes: {self.probes} (1 to the number of ports)")
        if self.rate_per_s <= 0 or self.batch_s <= 0:
            raise ValueError("rate_per_s and batch_s must be positive")
        if not 1 <= self.low_port <= self.high_port <= 65535:
            raise ValueError(f"low_port/high_port: {self.low_port}-{self.high_port} (1-65535, low first)")
        if not self.backoff_s or min(self.backoff_s) < 0:
            raise ValueError("backoff_s: at least one non-negative delay")


class Phase(StrEnum):
    WAITING = "waiting"
    OPENING = "opening"  # sockets asked for; spraying starts at settle_s
    SPRAYING = "spraying"
    LINGERING = "lingering"
    EXHAUSTED = "exhausted"  # the budget is spent: never again


@dataclass(frozen=True, slots=True)
class OpenSockets:
    """Open `count` extra sockets and send one probe from each to the peer's reflexive addresses."""

    count: int


@dataclass(frozen=True, slots=True)
class Spray:
    """Send one probe from the main socket to each of `ports` at the peer's public IP."""

    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CloseSockets:
    """The attempt is over: close its extra sockets, except one a direct path goes through."""

    found: bool


Action = OpenSockets | Spray | CloseSockets


@dataclass
class Birthday:
    """The birthday-punching core of one link. `poll` whenever the link's paths are driven."""

    config: BirthdayConfig
    rng: random.Random
    phase: Phase = Phase.WAITING
    attempts: int = 0  # failed attempts since the last success (or ever)
    started: int = 0  # attempts started, all told (for reports)
    _eligible_since: float | None = None
    _not_before: float = 0.0
    _spray_at: float = 0.0
    _ports: list[int] = field(default_factory=list)
    _sent: int = 0
    _linger_until: float = 0.0

    def poll(self, now: float, *, direct: bool, eligible: bool) -> list[Action]:
        """`direct`: the link has a direct path now; `eligible`: both sides have a reflexive candidate and no other
        attempt of this endpoint runs (ignored while this link's own attempt runs)."""
        match self.phase:
            case Phase.EXHAUSTED:
                return []
            case Phase.WAITING:
                return self._wait(now, direct=direct, eligible=eligible)
            case _ if direct:
                return self._end(now, found=True)
            case Phase.OPENING if now >= self._spray_at:
                self.phase = Phase.SPRAYING
                return self._spray(now)
            case Phase.SPRAYING:
                return self._spray(now)
            case Phase.LINGERING if now >= self._linger_until:
                return self._end(now, found=False)
        return []

    def next_deadline(self) -> float:
        match self.phase:
            case Phase.WAITING if self._eligible_since is not None:
                return max(self._eligible_since + self.config.start_after_s, self._not_before)
            case Phase.OPENING:
                return self._spray_at
            case Phase.SPRAYING:  # when the next batch is due (see _spray)
                return self._spray_at + (self._sent + self._per_batch() - 1) / self.config.rate_per_s
            case Phase.LINGERING:
                return self._linger_until
        return float("inf")

    @property
    def running(self) -> bool:
        return self.phase in (Phase.OPENING, Phase.SPRAYING, Phase.LINGERING)

    # ---- phases ---------------------------------------------------------------------------------------------

    def _wait(self, now: float, *, direct: bool, eligible: bool) -> list[Action]:
        if direct:
            self._eligible_since = None
            return []
        if not eligible:
            return []  # another attempt runs, or a reflexive candidate is missing: the clock keeps its start
        if self._eligible_since is None:
            self._eligible_since = now
        if now - self._eligible_since < self.config.start_after_s or now < self._not_before:
            return []
        cfg = self.config
        self.phase, self.started = Phase.OPENING, self.started + 1
        self._spray_at = now + cfg.settle_s
        self._ports = self.rng.sample(range(cfg.low_port, cfg.high_port + 1), cfg.probes)
        self._sent = 0
        return [OpenSockets(cfg.sockets)]

    def _per_batch(self) -> int:
        return max(1, round(self.config.rate_per_s * self.config.batch_s))

    def _spray(self, now: float) -> list[Action]:
        due = min(len(self._ports), int((now - self._spray_at) * self.config.rate_per_s) + 1)
        ports = tuple(self._ports[self._sent:due])
        self._sent = max(self._sent, due)
        if self._sent >= len(self._ports):
            self.phase = Phase.LINGERING
            self._linger_until = now + self.config.linger_s
        return [Spray(ports)] if ports else []

    def _end(self, now: float, *, found: bool) -> list[Action]:
        self.attempts = 0 if found else self.attempts + 1
        self._ports, self._sent = [], 0
        self._eligible_since = None
        backoff = self.config.backoff_s
        self._not_before = now + backoff[min(max(self.attempts - 1, 0), len(backoff) - 1)]
        self.phase = Phase.EXHAUSTED if self.attempts >= self.config.budget else Phase.WAITING
        return [CloseSockets(found)]
