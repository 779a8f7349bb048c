"""Leadership decisions (pure): when a leader may act, when it must give up, what the election key holds.

The Elector adapter runs against real etcd in tests/integration/test_leadership.py; its cancellation is pinned
here against an in-memory store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.leadership import (
    ElectionState,
    Elector,
    LeaderRecord,
    default_margin,
    keepalive_interval,
    lease_may_have_expired,
    may_act,
)
from coordinator.store.base import Entry

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


# ---- the Elector adapter against an in-memory store: cancellation ---------------------------------------------

class LeaseStore:
    """Just enough of a store for one Elector: leases, a create-if-absent key, keep-alives. `on_keep_alive` runs
    inside each keep-alive, before it answers."""

    def __init__(self) -> None:
        self.key: tuple[str, bytes, int] | None = None  # (key, value, lease)
        self.revision = 1
        self.revoked: list[int] = []
        self.keep_alives = 0
        self.on_keep_alive: Callable[[], None] = lambda: None

    async def grant_lease(self, ttl_s: int) -> tuple[int, int]:
        self.revision += 1
        return self.revision, ttl_s

    async def create_leased(self, key: str, value: bytes, lease_id: int) -> tuple[bool, Entry | None, int]:
        if self.key is not None:
            return False, Entry(self.key[0], self.key[1], 2, 2), self.revision
        self.key = (key, value, lease_id)
        return True, Entry(key, value, 2, 2), self.revision

    async def keep_alive(self, lease_id: int, *, timeout_s: float | None = None) -> int:
        self.keep_alives += 1
        self.on_keep_alive()
        return 2

    async def get(self, key: str) -> Entry | None:
        await asyncio.sleep(0)
        return Entry(self.key[0], self.key[1], 2, 2) if self.key else None

    async def revoke_lease(self, lease_id: int, *, timeout_s: float | None = None) -> None:
        self.revoked.append(lease_id)
        if self.key and self.key[2] == lease_id:
            self.key = None


async def test_resigning_while_a_keep_alive_answers_stops_the_elector() -> None:
    """The cancellation `resign` sends can land in the loop iteration a keep-alive answers in. Python 3.11's
    asyncio.wait_for returned the answer and dropped that cancellation: the elector kept leading and resign()
    waited for it forever (a hung CI run). Here every keep-alive starts a resign at exactly that moment."""
    store = LeaseStore()
    elector = Elector(store, candidate_id="c1", ttl_s=1)  # type: ignore[arg-type]
    resigning: list[asyncio.Task[None]] = []
    store.on_keep_alive = lambda: resigning.append(asyncio.ensure_future(elector.resign()))
    elector.start()
    try:
        async with asyncio.timeout(10):
            while not resigning:
                await asyncio.sleep(0.01)
            await resigning[0]
    except TimeoutError:
        pytest.fail(f"resign() did not return: the elector dropped its cancellation ({store.keep_alives} "
                    "keep-alives answered meanwhile)")
    assert elector.state is ElectionState.STOPPED and not elector.is_leader
    assert store.keep_alives == 1 and store.key is None and store.revoked
