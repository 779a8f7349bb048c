"""Capped exponential backoff with jitter (pure: the random draw is passed in).

delay(attempt) = b * (1 - jitter + jitter * r), with b = min(maximum, initial * multiplier**attempt), r in [0, 1).
With jitter 0.5 the delay is uniform in [b/2, b): a fleet that lost its broker at the same instant does not come
back in lockstep ("equal jitter", AWS Architecture Blog, "Exponential Backoff and Jitter").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    maximum_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.maximum_s:
            raise ValueError("backoff: need 0 < initial_s <= maximum_s")
        if self.multiplier < 1:
            raise ValueError("backoff: multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff: jitter must be within [0, 1]")

    def delay(self, attempt: int, r: float) -> float:
        """Seconds to wait before reconnect attempt number `attempt` (0-based); `r` is a draw from [0, 1)."""
        exponent = min(max(attempt, 0), 64)  # past this the cap has long been reached; avoids float overflow
        base = min(self.maximum_s, self.initial_s * self.multiplier**exponent)
        return base * (1.0 - self.jitter + self.jitter * min(max(r, 0.0), 1.0))
