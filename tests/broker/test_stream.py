"""broker.wire.stream: the rules both ends of an interactive session follow (pure: every `now` is given)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.wire.stream import Liveness, Pace, Reorder


def test_frames_in_order_are_released_at_once() -> None:
    r: Reorder[str] = Reorder()
    assert [r.accept(i, f"f{i}", 0.0).items for i in range(3)] == [("f0",), ("f1",), ("f2",)]


def test_a_repeat_is_dropped() -> None:
    r: Reorder[str] = Reorder()
    r.accept(0, "a", 0.0)
    assert r.accept(0, "a again", 1.0).items == ()
    assert r.accept(1, "b", 1.0).items == ("b",)


def test_an_early_frame_waits_for_the_gap_then_both_go_in_order() -> None:
    r: Reorder[str] = Reorder()
    assert r.accept(1, "b", 0.0).items == ()
    assert r.accept(1, "b again", 0.5).items == ()  # a repeat of a held frame
    assert r.accept(0, "a", 1.0).items == ("a", "b")
    assert r.gap_since is None and r.check(100.0) == ""


def test_a_gap_that_does_not_fill_in_time_is_a_loss_naming_the_frames() -> None:
    r: Reorder[str] = Reorder(gap_timeout_s=10.0)
    r.accept(0, "a", 0.0)
    r.accept(3, "d", 1.0)
    assert r.check(11.0) == ""
    assert r.check(11.5) == "frames 1..2 lost (1 later ones arrived)"


def test_more_held_frames_than_the_window_is_a_loss_at_once() -> None:
    r: Reorder[int] = Reorder(window=2)
    assert r.accept(5, 5, 0.0).lost == "" and r.accept(6, 6, 0.0).lost == ""
    assert r.accept(7, 7, 0.0).lost == "frames 0..4 lost (3 later ones arrived)"


@given(st.permutations(list(range(20))))
def test_any_order_within_the_window_comes_out_sorted_and_complete(order: list[int]) -> None:
    r: Reorder[int] = Reorder(window=64)
    out: list[int] = []
    for seq in order:
        got = r.accept(seq, seq, 0.0)
        assert got.lost == ""
        out.extend(got.items)
    assert out == list(range(20))


def test_liveness_asks_for_a_keepalive_when_quiet_and_not_before() -> None:
    live = Liveness(100.0, keepalive_s=10.0, silence_s=45.0, idle_s=3600.0)
    assert not live.keepalive_due(109.9)
    assert live.keepalive_due(110.0)
    live.on_sent(110.0, data=False)
    assert not live.keepalive_due(115.0)
    assert live.next_check(115.0) == pytest.approx(5.0)


def test_a_silent_peer_ends_the_session_and_keepalives_keep_it_alive() -> None:
    live = Liveness(0.0, silence_s=45.0, idle_s=3600.0)
    for t in range(10, 200, 10):
        live.on_heard(float(t), data=False)  # keepalives only
        assert live.expired(float(t) + 44.0) == ""
    assert "went silent (46s" in live.expired(190.0 + 46.0)


def test_keepalives_do_not_count_as_use_so_an_idle_session_ends() -> None:
    live = Liveness(0.0, silence_s=45.0, idle_s=600.0)
    live.on_heard(5.0, data=True)
    for t in range(10, 620, 10):
        live.on_heard(float(t), data=False)
        live.on_sent(float(t), data=False)
    assert live.expired(604.0) == ""
    assert live.expired(606.0) == "idle for 600s (nothing typed or printed)"


def test_pace_lets_a_burst_through_then_spaces_what_follows() -> None:
    p = Pace(rate=1000.0, burst=2000.0)
    assert p.delay(2000, 0.0) == 0.0
    assert p.delay(500, 0.0) == pytest.approx(0.5)
    assert p.delay(100, 10.0) == 0.0  # refilled (to the burst) while quiet
    assert p.tokens == pytest.approx(1900.0)
