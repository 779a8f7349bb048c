"""Leadership decisions (pure): when a leader may act, when it must give up, what the election key holds.

The Elector adapter runs against real etcd in tests/integration/test_leadership.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.leadership import (
    LeaderRecord,
    default_margin,
    keepalive_interval,
    lease_may_have_expired,
    may_act,
)

TTL = 2.0
MARGIN = 0.5


@pytest.mark.parametrize(("renewed_at", "now", "allowed"), [
    (None, 0.0, False),
    (100.0, 100.0, True),
    (100.0, 101.49, True),
    (100.0, 101.5, False),  # TTL - margin after the keep-alive was sent
    (100.0, 101.9, False),  # the lease may still exist, but acting has stopped
    (100.0, 250.0, False),  # a process frozen for minutes wakes up
], ids=["never-renewed", "just-renewed", "inside-window", "window-end", "inside-margin", "after-a-freeze"])
def test_may_act(renewed_at: float | None, now: float, allowed: bool) -> None:
    assert may_act(renewed_at=renewed_at, ttl_s=TTL, now=now, margin_s=MARGIN) is allowed


@pytest.mark.parametrize(("now", "expired"), [(101.99, False), (102.0, True), (500.0, True)],
                         ids=["before-ttl", "at-ttl", "long-after"])
def test_lease_may_have_expired(now: float, expired: bool) -> None:
    assert lease_may_have_expired(renewed_at=100.0, ttl_s=TTL, now=now) is expired


durations = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(sent=durations, delay=durations, elapsed=durations, ttl=st.integers(1, 60), margin=st.floats(0.0, 10.0))
def test_a_leader_never_acts_once_etcd_may_have_expired_its_lease(sent: float, delay: float, elapsed: float,
                                                                   ttl: int, margin: float) -> None:
    """etcd restarts the TTL when the keep-alive *arrives* (sent + delay ≥ sent): acting is only allowed strictly
    before the earliest possible expiry, whatever the delay; and acting implies not having had to give up."""
    now = sent + elapsed
    if may_act(renewed_at=sent, ttl_s=ttl, now=now, margin_s=margin):
        assert now < sent + delay + ttl
        assert not lease_may_have_expired(renewed_at=sent, ttl_s=ttl, now=now)


@pytest.mark.parametrize("ttl", [1, 2, 5, 30])
def test_one_lost_keepalive_does_not_stop_a_leader(ttl: int) -> None:
    """The second keep-alive after the last success is still sent inside the acting window."""
    assert 2 * keepalive_interval(ttl) < ttl - default_margin(ttl)


@pytest.mark.parametrize("record", [LeaderRecord("c1", "https://10.0.0.5:8470"), LeaderRecord("c2", None)],
                         ids=["with-api", "without-api"])
def test_leader_record_round_trip(record: LeaderRecord) -> None:
    assert LeaderRecord.decode(record.encode()) == record


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[]", b"{}", b'{"id": ""}', b'{"id": 5}', b"not json"],
                         ids=["empty", "not-utf8", "list", "no-id", "empty-id", "id-not-text", "garbage"])
def test_leader_record_decode_refuses_what_it_did_not_write(data: bytes) -> None:
    assert LeaderRecord.decode(data) is None


def test_leader_record_ignores_a_bad_api_field() -> None:
    assert LeaderRecord.decode(b'{"id": "c1", "api": 7, "extra": true}') == LeaderRecord("c1", None)
