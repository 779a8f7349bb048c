"""The birthday-punching core: when an attempt starts (eligible long enough, after the back-off, within the budget), how
much it opens and sprays (distinct ports in range, paced, a loop that ends), and how it ends (found, or nothing and a
longer back-off). Time and the random source are passed in."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.birthday import Birthday, BirthdayConfig, CloseSockets, OpenSockets, Phase, Spray

C = BirthdayConfig()


def make(config: BirthdayConfig = C, seed: int = 7) -> Birthday:
    return Birthday(config, random.Random(seed))


def run_attempt(b: Birthday, start: float, *, step: float = 0.05) -> tuple[list[int], float]:
    """Poll from `start` until the attempt ends (bounded); the ports sprayed and when it ended."""
    ports: list[int] = []
    now = start
    for _ in range(10_000):
        for action in b.poll(now, direct=False, eligible=True):
            if isinstance(action, Spray):
                ports += action.ports
            if isinstance(action, CloseSockets):
                return ports, now
        now += step
    raise AssertionError("the attempt never ended")


def start(b: Birthday, at: float = 0.0) -> float:
    assert b.poll(at, direct=False, eligible=True) == []
    when = at + C.start_after_s
    assert b.poll(when, direct=False, eligible=True) == [OpenSockets(C.sockets)]
    return when


def test_an_attempt_starts_only_after_ordinary_punching_had_its_time() -> None:
    b = make()
    assert b.poll(0.0, direct=False, eligible=True) == []
    assert b.poll(C.start_after_s - 0.1, direct=False, eligible=True) == []
    assert b.poll(C.start_after_s, direct=False, eligible=True) == [OpenSockets(256)]
    assert b.phase is Phase.OPENING and b.running


def test_a_direct_path_restarts_the_wait_and_an_ineligible_link_never_starts() -> None:
    b = make()
    b.poll(0.0, direct=False, eligible=True)
    b.poll(5.0, direct=True, eligible=True)  # ordinary punching worked
    assert b.poll(12.0, direct=False, eligible=True) == []  # the wait starts again at 12
    assert b.poll(22.0, direct=False, eligible=True) == [OpenSockets(256)]
    never = make()
    for t in range(0, 600, 5):  # no reflexive candidate on one side (UDP blocked), or another attempt running
        assert never.poll(float(t), direct=False, eligible=False) == []
    assert never.started == 0


def test_the_spray_is_distinct_random_ports_in_range_paced_and_it_ends() -> None:
    b = make()
    began = start(b)
    ports, ended = run_attempt(b, began)
    assert len(ports) == len(set(ports)) == C.probes
    assert all(C.low_port <= p <= C.high_port for p in ports)
    spray_time = C.probes / C.rate_per_s
    assert ended == pytest.approx(began + C.settle_s + spray_time + C.linger_s, abs=0.2)


def test_no_batch_sends_more_than_the_pace_allows() -> None:
    b = make()
    now = start(b) + C.settle_s
    b.poll(now, direct=False, eligible=True)
    late = b.poll(now + 1.0, direct=False, eligible=True)  # a poll one second late catches up, at the pace
    assert isinstance(late[0], Spray) and len(late[0].ports) == int(C.rate_per_s)
    assert b.next_deadline() == pytest.approx(now + 1.0 + C.batch_s, abs=0.01)


def test_a_direct_path_during_the_attempt_ends_it_and_closes_the_other_sockets() -> None:
    b = make()
    t = start(b)
    b.poll(t + 1.0, direct=False, eligible=True)
    assert b.poll(t + 1.5, direct=True, eligible=True) == [CloseSockets(found=True)]
    assert b.phase is Phase.WAITING and b.attempts == 0
    assert b.poll(t + 2.0, direct=True, eligible=True) == []  # nothing more while direct


def test_failed_attempts_back_off_longer_and_stop_at_the_budget() -> None:
    config = BirthdayConfig(budget=4)
    b = make(config)
    starts = []
    now = 0.0
    while now < 3600 and b.phase is not Phase.EXHAUSTED:
        for action in b.poll(now, direct=False, eligible=True):
            if isinstance(action, OpenSockets):
                starts.append(now)
        now += 1.0
    assert b.phase is Phase.EXHAUSTED and b.started == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    attempt = config.settle_s + config.probes / config.rate_per_s + config.linger_s
    # the first back-off is 30 s, then 2 min, then 5 min (the 10 s wait runs during the back-off)
    assert gaps == [pytest.approx(attempt + 30, abs=2), pytest.approx(attempt + 120, abs=2),
                    pytest.approx(attempt + 300, abs=2)]
    assert all(b.poll(4000.0 + t, direct=False, eligible=True) == [] for t in range(0, 3600, 60))


def test_a_success_resets_the_back_off() -> None:
    b = make(BirthdayConfig(budget=2))
    _, ended = run_attempt(b, start(b))  # nothing found: attempt 1 of 2
    assert b.attempts == 1
    b.poll(ended + 1, direct=False, eligible=True)  # the wait runs during the back-off
    t = ended + 125
    assert b.poll(t, direct=False, eligible=True) == [OpenSockets(256)]
    assert b.poll(t + 1, direct=True, eligible=True) == [CloseSockets(found=True)]
    assert b.attempts == 0 and b.phase is Phase.WAITING  # the budget is whole again


@pytest.mark.parametrize(("field", "value"), [("sockets", 0), ("probes", 0), ("probes", 70_000), ("rate_per_s", 0),
                                              ("low_port", 0), ("backoff_s", ())], ids=str)
def test_a_bad_config_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BirthdayConfig(**{field: value})  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), probes=st.integers(1, 2000), rate=st.floats(10, 5000))
def test_every_attempt_sprays_exactly_its_probes_once(seed: int, probes: int, rate: float) -> None:
    config = BirthdayConfig(probes=probes, rate_per_s=rate)
    b = Birthday(config, random.Random(seed))
    b.poll(0.0, direct=False, eligible=True)
    assert b.poll(config.start_after_s, direct=False, eligible=True) == [OpenSockets(config.sockets)]
    ports, _ = run_attempt(b, config.start_after_s, step=0.37)
    assert len(ports) == len(set(ports)) == probes
