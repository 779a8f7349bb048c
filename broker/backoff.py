"""Capped exponential backoff with jitter (pure: the random draw is passed in).

delay(attempt) = b * (1 - jitter + jitter * r), with b = min(maximum, initial * multiplier**attempt), r in [0, 1).
With jitter 0.5 the delay is uniform in [b/2, b): a fleet that lost its broker at the same instant does not come
back in lockstep ("equal jitter", AWS Architecture Blog, "Exponential Backoff and Jitter").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Attempts are clamped here before any float arithmetic (float(10**400) overflows); 2**64 attempts times the
# smallest log(multiplier) above 0 (~2.2e-16) still exceeds any log(maximum/initial) (< 1500), i.e. the cap.
_MAX_ATTEMPT = 2**64


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    maximum_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        # NaN fails every comparison, so `x < 1` would let it through: require finiteness first
        if not all(math.isfinite(v) for v in (self.initial_s, self.maximum_s, self.multiplier, self.jitter)):
            raise ValueError("backoff: every setting must be a finite number")
        if not 0 < self.initial_s <= self.maximum_s:
            raise ValueError("backoff: need 0 < initial_s <= maximum_s")
        if not math.isfinite(self.maximum_s / self.initial_s):  # keeps multiplier**n below float range in _base()
            raise ValueError("backoff: maximum_s / initial_s must be a finite ratio")
        if not self.multiplier >= 1:
            raise ValueError("backoff: multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff: jitter must be within [0, 1]")

    def delay(self, attempt: int, r: float) -> float:
        """Seconds to wait before reconnect attempt number `attempt` (0-based); `r` is a draw from [0, 1)."""
        return self._base(attempt) * (1.0 - self.jitter + self.jitter * min(max(r, 0.0), 1.0))

    def _base(self, attempt: int) -> float:
        n = min(max(attempt, 0), _MAX_ATTEMPT)
        # Decide in log space whether the cap is reached, so multiplier**n is only computed when the product stays
        # below maximum_s: it cannot overflow, however large the multiplier or the attempt.
        if n * math.log(self.multiplier) >= math.log(self.maximum_s) - math.log(self.initial_s):
            return self.maximum_s
        return min(self.maximum_s, self.initial_s * self.multiplier**n)
