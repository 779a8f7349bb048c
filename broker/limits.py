"""Limits every listener enforces, as values and counters (pure: no sockets, no clock; callers pass `now`).

Why: with the common 1,024 open-file limit, 1,100 idle TCP connections took every file descriptor of the broker
and the API, so no enrolled node could connect and `/healthz` timed out, while asyncio logged the EMFILE traceback
in a tight loop (issue 16, High 3). So:

- each daemon raises its soft RLIMIT_NOFILE to the hard limit at start (`nofile_target`);
- each listener admits at most `max_connections` connections, and `max_per_address` from one address, counted from
  accept to close (`ConnectionGate`), bounded again by the descriptors the process may open (`connection_budget`);
- a connection has `handshake_timeout_s` to finish its TLS handshake and say who it is (MQTT CONNECT, an HTTP
  request, a QUIC handshake), so idle ones do not hold their slot;
- repeated log lines (accept errors, refused connections, malformed messages) are written at most once per
  interval per key, with the count of what was folded into them (`LogThrottle`).

docs/security.md ("Limits") lists the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

NOFILE_WANTED = 65536  # what a daemon asks for when the hard limit is unlimited (RLIM_INFINITY)
RESERVED_FDS = 128  # descriptors kept for files, the store, subprocesses and outgoing connections
LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    max_connections: int = 4096
    max_per_address: int = 128
    handshake_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 1 or self.handshake_timeout_s <= 0:
            raise ValueError(f"listener limits must be positive: {self}")


def nofile_target(soft: int, hard: int, *, infinity: int) -> int:
    """The soft RLIMIT_NOFILE a daemon should run with: the hard limit (Linux refuses an unlimited soft one)."""
    if hard == infinity:
        return max(soft, NOFILE_WANTED) if soft != infinity else soft
    return max(soft, hard)


def connection_budget(limits: ListenerLimits, nofile_soft: int, *, listeners: int = 2) -> int:
    """The connections one listener may hold: its cap, or its share of the descriptors the process may open (a
    coordinator runs the API and may run the broker; each gets half, less a reserve), whichever is lower."""
    share = max(16, (nofile_soft - RESERVED_FDS) // max(1, listeners))
    return min(limits.max_connections, share)


class ConnectionGate:
    """Open connections per listener, in total and per remote address. `admit` before anything else is spent on a
    connection (before its TLS handshake); `release` exactly once for every admitted one. The per-address cap
    bounds connections that have not authenticated yet: `promote` one that has."""

    def __init__(self, *, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.open = 0
        self.refused = 0
        self._by_address: dict[str, int] = {}

    @classmethod
    def for_listener(cls, limits: ListenerLimits, nofile_soft: int) -> ConnectionGate:
        return cls(max_connections=connection_budget(limits, nofile_soft), max_per_address=limits.max_per_address)

    def admit(self, address: str) -> bool:
        held = self._by_address.get(address, 0)
        if self.open >= self.max_connections or held >= self.max_per_address:
            self.refused += 1
            return False
        self.open += 1
        self._by_address[address] = held + 1
        return True

    def promote(self, address: str) -> None:
        """The connection from `address` proved who it is: it stops counting against its address (a hundred devices
        behind one NAT or carrier-grade NAT are fine), and counts only in the total. Release it with
        `release(address, promoted=True)`."""
        held = self._by_address.get(address, 0)
        if held <= 1:
            self._by_address.pop(address, None)
        else:
            self._by_address[address] = held - 1

    def release(self, address: str, *, promoted: bool = False) -> None:
        if promoted:
            self.open = max(0, self.open - 1)
            return
        held = self._by_address.get(address, 0)
        if held <= 0:
            return
        self.open -= 1
        if held == 1:
            del self._by_address[address]
        else:
            self._by_address[address] = held - 1

    def held_by(self, address: str) -> int:
        return self._by_address.get(address, 0)


class LogThrottle:
    """At most one line per `interval_s` for each key; the line carries how many occurrences it stands for.

    `note(key, now)` returns that count when a line is due now, None when this occurrence is folded into the next
    line. The first occurrence of a key is always written at once."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, *, max_keys: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def note(self, key: str, now: float) -> int | None:
        pending = self._pending.get(key, 0) + 1
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._pending[key] = pending
            return None
        if key not in self._last and len(self._last) >= self.max_keys:  # bounded: forget the stalest key
            stalest = min(self._last, key=self._last.__getitem__)
            del self._last[stalest]
            self._pending.pop(stalest, None)
        self._last[key] = now
        self._pending.pop(key, None)
        return pending


def safe_topic(topic: str | None) -> str:
    """A topic as a log line may carry it: quoted and escaped (a newline in a topic cannot forge a log line), and
    cut to 200 characters."""
    text = repr(topic if topic is None else topic[:200])
    return text if topic is None or len(topic) <= 200 else text + "…"
