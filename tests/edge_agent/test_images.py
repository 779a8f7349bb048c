"""The image-pull core (`edge_agent.images`): what the agent does about an image, and the back-off, as tables."""

from __future__ import annotations

import pytest

from edge_agent import images
from edge_agent.images import READY, WAIT, Fetch, PullState, Source


@pytest.mark.parametrize(("attempt", "delay"), [(0, 0.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (7, 120.0),
                                                (40, 120.0)], ids=str)
def test_agent_back_off_is_2s_doubling_to_120s(attempt: int, delay: float) -> None:
    assert images.retry_delay(attempt) == delay


@pytest.mark.parametrize(("state", "now", "step"), [
    (PullState(), 0.0, Fetch(Source.REGISTRY)),
    (PullState(fetching=True), 100.0, WAIT),
    (PullState(attempts=1, retry_at=12.0), 11.9, WAIT),
    (PullState(attempts=1, retry_at=12.0), 12.0, Fetch(Source.REGISTRY)),
    (PullState(ready=True), 0.0, READY),
], ids=["absent-fetches", "fetching-waits", "backing-off-waits", "back-off-over-fetches", "ready"])
def test_next_step(state: PullState, now: float, step: images.Step) -> None:
    assert images.next_step(state, now) == step


def test_a_failed_pull_backs_off_and_a_success_is_final() -> None:
    state = images.started(PullState())
    state = images.failed(state, 10.0, "refused")
    assert state == PullState(attempts=1, retry_at=12.0, error="refused")
    state = images.failed(images.started(state), 12.0, "refused")
    assert (state.attempts, state.retry_at) == (2, 16.0)
    state = images.succeeded(images.started(state))
    assert state.ready and not state.fetching and state.error == ""
    assert images.next_step(state, 0.0) is READY and not images.pulling(state)


def test_a_runtime_failure_retries_soon_without_counting() -> None:
    state = images.failed(images.started(PullState(attempts=3)), 5.0, "podman down", unavailable=False)
    assert (state.attempts, state.retry_at, state.fetching) == (3, 7.0, False)


def test_pulling_is_reported_until_ready() -> None:
    assert not images.pulling(None)
    assert images.pulling(PullState())
    assert images.pulling(PullState(fetching=True))
