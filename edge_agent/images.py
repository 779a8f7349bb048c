"""Image pulls (pure core): per image, whether it is ready, being fetched, or waiting out a back-off, and where
the next attempt fetches it from.

Theory of operation. One `PullState` per image reference:

    absent --start--> fetching --succeeded--> ready (final: the image is local)
                         |  ^
                  failed |  | start (now >= retry_at)
                         v  |
                       waiting

- `next_step(state, now)` says what the agent does about an image a replica needs: `READY` (create the
  replica), `Fetch(source)` (begin a pull now, then call `started`), or `WAIT` (a pull is running or backing off;
  the replica is reported `pulling`). A running pull is never restarted: a timeout would throw away a slow
  download that Podman keeps going.
- `failed(state, now, error, unavailable=True)`: the image could not be had (registry refused, unknown name,
  network): the attempt counts and the next waits `retry_delay(attempts)` — capped exponential back-off,
  2 s, 4 s, ... up to 120 s. `unavailable=False` (the runtime itself failed): retry after the initial delay,
  without counting an attempt.
- Invariants: `ready` states never fetch again; at most one fetch per image at a time (`fetching`).

Where from: today every fetch is from the image's registry (`Source.REGISTRY`). The decision is a value so a
later step can choose a peer that holds the image (the data plane) and fall back to the registry here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

INITIAL_S = 2.0
MAX_S = 120.0


class Source(StrEnum):
    REGISTRY = "registry"


class Status(StrEnum):
    READY = "ready"
    WAIT = "wait"


READY = Status.READY
WAIT = Status.WAIT


@dataclass(frozen=True, slots=True)
class Fetch:
    """Begin a pull now, from `source`."""

    source: Source = Source.REGISTRY


Step = Status | Fetch


@dataclass(frozen=True, slots=True)
class PullState:
    ready: bool = False
    fetching: bool = False
    attempts: int = 0  # failed attempts that count toward the back-off
    retry_at: float = 0.0
    error: str = ""


def retry_delay(attempt: int, initial_s: float = INITIAL_S, cap_s: float = MAX_S) -> float:
    """Capped exponential back-off after `attempt` failed pulls (0 -> 0, 1 -> initial, 2 -> 2x initial, ...)."""
    if attempt <= 0:
        return 0.0
    return float(min(cap_s, initial_s * 2 ** min(attempt - 1, 32)))


def next_step(state: PullState, now: float) -> Step:
    if state.ready:
        return READY
    if state.fetching or now < state.retry_at:
        return WAIT
    return Fetch(Source.REGISTRY)


def started(state: PullState) -> PullState:
    return replace(state, fetching=True)


def succeeded(state: PullState) -> PullState:
    return replace(state, ready=True, fetching=False, error="")


def failed(state: PullState, now: float, error: str, *, unavailable: bool = True) -> PullState:
    """After a failed attempt: `unavailable` (the image could not be had) counts toward the back-off."""
    attempts = state.attempts + 1 if unavailable else state.attempts
    delay = retry_delay(attempts) if unavailable else INITIAL_S
    return replace(state, fetching=False, attempts=attempts, retry_at=now + delay, error=error)


def pulling(state: PullState | None) -> bool:
    """Whether a replica needing this image is still waiting for it (reported as `pulling`)."""
    return state is not None and not state.ready


def pull_message(state: PullState | None, now: float) -> str:
    """What a replica waiting for this image reports as its last_error, in Kubernetes' words: "" while the first
    pull runs; "ErrImagePull: <the registry's message>" while a retry runs; "ImagePullBackOff: <message> (attempt
    N, next retry at HH:MM:SS UTC)" while waiting out the back-off. The text changes only when a pull does (no
    countdown): each change is an observed-state message on the node's link."""
    if state is None or state.ready or not state.error:
        return ""
    if state.fetching:
        return f"ErrImagePull: {state.error}"
    at = datetime.fromtimestamp(max(state.retry_at, now), UTC).strftime("%H:%M:%S")
    attempt = f"attempt {state.attempts}, " if state.attempts else ""
    return f"ImagePullBackOff: {state.error} ({attempt}next retry at {at} UTC)"
