"""Damping repeated records (pure): at most one per key per interval, counting the ones left out.

Refused enrolments come from unauthenticated callers; recording each as an event would let anyone who can reach
the API fill the event store. The API records the first refusal from an address, then at most one a minute with
the number left out in between."""

from __future__ import annotations

from collections import OrderedDict

# Events about who may do what — enrolment, certificates, tokens, admission policy, secrets — are the audit trail
# an operator needs after an incident: kept apart from the churn (presence, placement), never damped or evicted by it
SECURITY_REASONS = ("Enrol", "Renewed", "Revoked", "Token", "Policy", "Secret", "MasterKey", "Leader")


def is_security(reason: str) -> bool:
    return reason.startswith(SECURITY_REASONS)


def is_churn(reason: str) -> bool:
    """What a device does to itself, possibly thousands of times a minute (presence, gates, reconnects): damped
    per object. Decisions and admin actions (placement, rollouts, cordon, delete) are never damped: each one is
    information (a replica placed, a node cordoned again) that an operator or a `get events --watch` waits for."""
    return (reason.startswith("Node") and reason != "NodeDeleted") or reason in DEVICE_REPORTED


# what a node's own reports turn into (its overlay paths, its replicas failing): a node can send these as fast as it
# likes, so they are damped per object like presence
DEVICE_REPORTED = frozenset({"OverlayPath", "ErrImagePull", "CrashLoopBackOff", "ReplicaFailed"})


class Damper:
    def __init__(self, interval_s: float = 60.0, max_keys: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()  # key -> when last let through
        self._left_out: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: leave this one out. Otherwise let it through: the number left out for `key` since the last one."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return None
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:  # memory stays bounded whatever the number of callers
            oldest, _ = self._last.popitem(last=False)
            self._left_out.pop(oldest, None)
        return self._left_out.pop(key, 0)
