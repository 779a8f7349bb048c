"""Capped exponential backoff with equal jitter (broker/backoff.py); the random draw is passed in."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.backoff import Backoff

PROPERTY = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (7, 30.0), (64, 30.0), (65, 30.0),
     (10**9, 30.0), (-1, 0.5), (-(10**9), 0.5)],
    ids=str,
)
def test_default_base_without_jitter(attempt: int, expected: float) -> None:
    assert Backoff(jitter=0.0).delay(attempt, r=0.7) == expected


@pytest.mark.parametrize(
    ("r", "expected"),
    [(0.0, 2.0), (0.5, 3.0), (0.999, 3.998), (-5.0, 2.0), (1.0, 4.0), (7.0, 4.0)],
    ids=str,
)
def test_equal_jitter_maps_the_draw_onto_half_to_full_base(r: float, expected: float) -> None:
    """Defaults (jitter 0.5) at attempt 3: base 4 s, delay uniform in [2, 4); draws outside [0, 1] are clamped."""
    assert Backoff().delay(3, r) == pytest.approx(expected)


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    initial = draw(st.floats(1e-3, 100.0))
    maximum = draw(st.floats(initial, 3600.0))
    # any finite multiplier: the cap is decided in log space, so multiplier**attempt never overflows
    multiplier = draw(st.one_of(st.floats(1.0, 1e4), st.floats(1.0, 1.0 + 1e-3), st.floats(1.0, 1.7e308)))
    return Backoff(initial_s=initial, maximum_s=maximum, multiplier=multiplier, jitter=draw(st.floats(0.0, 1.0)))


def expected_base(b: Backoff, attempt: int) -> float:
    """min(maximum, initial * multiplier**attempt), computed in log space so the test itself cannot overflow."""
    return math.exp(min(math.log(b.maximum_s), math.log(b.initial_s) + max(attempt, 0) * math.log(b.multiplier)))


DRAWS = st.floats(0.0, 1.0, exclude_max=True)


@PROPERTY
@given(b=backoffs(), attempt=st.integers(-10, 10**6), r=DRAWS)
def test_delay_is_non_negative_and_capped(b: Backoff, attempt: int, r: float) -> None:
    delay = b.delay(attempt, r)
    assert math.isfinite(delay)
    assert 0 <= delay <= b.maximum_s  # 0 only with full jitter (jitter=1) and r=0


@PROPERTY
@given(b=backoffs(), attempt=st.integers(0, 200), r=DRAWS)
def test_base_is_monotone_in_the_attempt(b: Backoff, attempt: int, r: float) -> None:
    assert b.delay(attempt, r) <= b.delay(attempt + 1, r)


@PROPERTY
@given(b=backoffs(), attempt=st.integers(0, 200), r=DRAWS)
def test_jitter_stays_within_its_fraction_of_the_base(b: Backoff, attempt: int, r: float) -> None:
    base = b.delay(attempt, 1.0)  # r = 1 is the un-jittered base
    assert base == pytest.approx(expected_base(b, attempt))
    assert base * (1 - b.jitter) * (1 - 1e-12) <= b.delay(attempt, r) <= base
    assert b.delay(attempt, 0.0) == pytest.approx(base * (1 - b.jitter))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0}, {"initial_s": -1.0}, {"initial_s": 31.0}, {"initial_s": math.nan},
        {"maximum_s": 0.1}, {"maximum_s": math.nan}, {"multiplier": 0.99}, {"multiplier": 0.0},
        {"multiplier": -2.0}, {"jitter": -0.01}, {"jitter": 1.01}, {"jitter": math.nan},
        {"multiplier": math.nan}, {"multiplier": math.inf}, {"initial_s": math.inf, "maximum_s": math.inf},
        {"maximum_s": math.inf}, {"initial_s": -math.inf}, {"jitter": math.inf},
        {"initial_s": 5e-324, "maximum_s": 1e300},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)


@pytest.mark.parametrize("kwargs", [{"initial_s": 30.0}, {"multiplier": 1.0, "jitter": 0.0}, {"jitter": 1.0}],
                         ids=str)
def test_edge_settings_are_accepted(kwargs: dict[str, float]) -> None:
    assert 0 < Backoff(**kwargs).delay(3, 0.5) <= 30.0


@pytest.mark.parametrize("multiplier", [1e6, 1e300, 1.7e308], ids=str)
@pytest.mark.parametrize("attempt", [1, 64, 10**9, 10**400], ids=["1", "64", "1e9", "1e400"])
def test_huge_multiplier_is_capped_not_overflowing(multiplier: float, attempt: int) -> None:
    assert Backoff(multiplier=multiplier, jitter=0.0).delay(attempt, 0.5) == 30.0


def test_a_tiny_multiplier_keeps_growing_past_64_attempts_until_the_cap() -> None:
    """The base follows min(maximum, initial * multiplier**attempt) for every attempt, not only the first 64."""
    b = Backoff(multiplier=1.01, jitter=0.0)
    assert b.delay(64, 0.5) < b.delay(200, 0.5) < b.delay(411, 0.5) < b.delay(412, 0.5) == 30.0
    assert b.delay(200, 0.5) == pytest.approx(0.5 * 1.01**200)
