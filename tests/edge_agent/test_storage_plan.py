"""The agent's storage decisions (edge_agent.storage_plan): the quota offered, the scrub's pace (rate, one pass per
period, resuming), the corrupt list it reports, and when the storage numbers moved enough to republish."""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.storage_plan import (
    MAX_CORRUPT,
    MIB,
    CorruptLedger,
    ScrubSettings,
    ScrubState,
    StorageFacts,
    after_slice,
    resolve_quota,
    resumed,
    storage_moved,
)

GIB = 1024 * MIB


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.mark.parametrize(("flag", "profile_quota", "free", "used", "want"), [
    (None, 10 * GIB, 100 * GIB, 0, 10 * GIB),  # the profile's, room enough
    (None, 10 * GIB, 8 * GIB, 0, 4 * GIB),  # capped at half the free disk
    (None, 10 * GIB, 8 * GIB, 2 * GIB, 5 * GIB),  # what the chunks already take counts as theirs
    (None, 0, 100 * GIB, 0, 0),  # the profile offers none
    (50 * GIB, 10 * GIB, 8 * GIB, 0, 50 * GIB),  # the owner's flag is taken as given
    (0, 10 * GIB, 100 * GIB, 0, 0),  # the owner excludes this node
], ids=["profile", "capped", "capped-with-used", "profile-none", "flag-as-given", "flag-zero"])
def test_the_quota_offered(flag: int | None, profile_quota: int, free: int, used: int, want: int) -> None:
    quota = resolve_quota(flag, profile_quota, profile="vps", free_bytes=free, used_bytes=used)
    assert quota.bytes == want
    assert quota.why


SETTINGS = ScrubSettings(period_s=3600.0, rate_bytes_s=10 * MIB, slice_chunks=8, slice_bytes=8 * MIB,
                         min_pause_s=0.05)


def test_slices_are_paced_by_the_read_rate() -> None:
    state = after_slice(ScrubState(), SETTINGS, now=100.2, started=100.0, checked=8, bytes_read=20 * MIB, corrupt=0,
                        position=cid(1), wrapped=False)
    assert state.next_at == pytest.approx(102.0)  # 20 MiB at 10 MiB/s from the slice's start
    assert (state.position, state.pass_started, state.checked, state.bytes_read) == (cid(1), 100.0, 8, 20 * MIB)
    small = after_slice(state, SETTINGS, now=102.01, started=102.0, checked=1, bytes_read=1024, corrupt=0,
                        position=cid(2), wrapped=False)
    assert small.next_at == pytest.approx(102.06)  # never sooner than min_pause after it ended
    assert small.pass_started == 100.0  # the same pass goes on


def test_unreadable_copies_pace_the_scrub_like_whole_chunks() -> None:
    # a failing disk: 8 copies unreadable (EIO reads no bytes); unpaced, the scrub would race through the bad region
    # faster than statuses carry what it found (review 4, M6)
    state = after_slice(ScrubState(), SETTINGS, now=100.01, started=100.0, checked=8, bytes_read=0, corrupt=8,
                        position=cid(1), wrapped=False)
    assert state.next_at == pytest.approx(100.8)  # 8 x 1 MiB at 10 MiB/s, not min_pause (100.06)
    read = after_slice(ScrubState(), SETTINGS, now=100.01, started=100.0, checked=8, bytes_read=20 * MIB, corrupt=1,
                       position=cid(1), wrapped=False)
    assert read.next_at == pytest.approx(102.0)  # bytes read still pace when they are more


def test_a_new_pass_starts_at_most_once_per_period() -> None:
    state = ScrubState(position=cid(1), pass_started=1000.0, checked=10)
    done = after_slice(state, SETTINGS, now=1200.0, started=1199.0, checked=3, bytes_read=MIB, corrupt=1,
                       position="", wrapped=True)
    assert (done.position, done.passes, done.corrupt_found, done.checked) == ("", 1, 1, 13)
    assert done.next_at == 1000.0 + 3600.0  # an hour after the pass started, not after it ended
    slow = after_slice(state, SETTINGS, now=5000.0, started=4999.0, checked=3, bytes_read=MIB, corrupt=0,
                       position="", wrapped=True)
    assert slow.next_at == pytest.approx(5000.05)  # a pass that took longer than the period: the next starts now
    nxt = after_slice(done, SETTINGS, now=4601.0, started=4600.0, checked=1, bytes_read=1, corrupt=0,
                      position=cid(3), wrapped=False)
    assert nxt.pass_started == 4600.0  # the next pass started with this slice


@pytest.mark.parametrize(("position", "started", "now", "want_next", "want_position"), [
    (cid(5), 1000.0, 2000.0, 2000.0, cid(5)),  # mid-pass: goes on at once where it stopped
    ("", 1000.0, 2000.0, 4600.0, ""),  # between passes: an hour after the last pass started
    ("", 1000.0, 9000.0, 9000.0, ""),  # that hour is over
    ("", None, 50.0, 50.0, ""),  # never scrubbed
    ("", 9000.0, 50.0, 50.0, ""),  # the clock went back: at once
], ids=["mid-pass", "between-passes", "overdue", "fresh", "clock-back"])
def test_resuming_after_a_restart(position: str, started: float | None, now: float, want_next: float,
                                  want_position: str) -> None:
    state = resumed(position, started, now=now, settings=SETTINGS)
    assert (state.next_at, state.position) == (want_next, want_position)


def test_the_corrupt_list_keeps_ids_until_stored_again_or_too_old() -> None:
    ledger = CorruptLedger(retention_s=100.0).add([cid(1), cid(2)], 10.0).add([cid(3)], 20.0)
    assert ledger.ids == (cid(1), cid(2), cid(3))
    assert ledger.add([cid(1)], 30.0).ids == (cid(2), cid(3), cid(1))  # found again: newest, not twice
    assert ledger.stored(cid(2)).ids == (cid(1), cid(3))
    assert ledger.stored(cid(9)) is ledger
    assert ledger.expire(115.0).ids == (cid(3),)  # older than 100 s go
    assert ledger.expire(50.0) is ledger


def test_the_corrupt_list_is_bounded_oldest_first() -> None:
    ledger = CorruptLedger().add([cid(i) for i in range(MAX_CORRUPT + 10)], 1.0)
    assert len(ledger.ids) == MAX_CORRUPT
    assert ledger.ids[0] == cid(10) and ledger.ids[-1] == cid(MAX_CORRUPT + 9)


BASE = StorageFacts(quota_bytes=1000 * MIB, used_bytes=100 * MIB, chunks=100)


@pytest.mark.parametrize(("now", "moved"), [
    (BASE, False),
    (StorageFacts(1000 * MIB, 100 * MIB + 9 * MIB, 109), False),  # under 1 % of the quota
    (StorageFacts(1000 * MIB, 100 * MIB + 10 * MIB, 110), True),  # 1 %
    (StorageFacts(1000 * MIB, 90 * MIB, 90), True),  # down as well as up
    (StorageFacts(2000 * MIB, 100 * MIB, 100), True),  # the quota
    (StorageFacts(1000 * MIB, 100 * MIB, 100, (cid(1),)), True),  # a corrupt chunk
    (StorageFacts(1000 * MIB, 0, 0), True),  # emptied
    (None, True),
], ids=["same", "small", "one-percent", "down", "quota", "corrupt", "empty", "gone"])
def test_republish_when_storage_moved_enough(now: StorageFacts | None, moved: bool) -> None:
    assert storage_moved(BASE, now) is moved


def test_small_quotas_move_in_mebibytes() -> None:
    small = StorageFacts(quota_bytes=10 * MIB, used_bytes=0, chunks=1)
    assert not storage_moved(small, StorageFacts(10 * MIB, MIB - 1, 2))
    assert storage_moved(small, StorageFacts(10 * MIB, MIB, 2))
    assert storage_moved(None, small)
