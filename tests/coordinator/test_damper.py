from __future__ import annotations

from coordinator.damper import Damper


def test_one_per_key_per_interval_with_the_count_left_out() -> None:
    d = Damper(interval_s=60.0)
    assert d.allow("1.2.3.4", 0.0) == 0
    assert [d.allow("1.2.3.4", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert d.allow("5.6.7.8", 10.0) == 0  # another key has its own interval
    assert d.allow("1.2.3.4", 60.0) == 3
    assert d.allow("1.2.3.4", 61.0) is None
    assert d.allow("1.2.3.4", 200.0) == 1


def test_memory_is_bounded_whatever_the_number_of_keys() -> None:
    d = Damper(interval_s=60.0, max_keys=3)
    for i in range(1000):
        assert d.allow(f"10.0.{i // 256}.{i % 256}", float(i) / 1000) == 0
    assert len(d._last) == 3 and len(d._left_out) == 0
    assert d.allow("10.0.3.231", 1.0) is None  # among the newest: still damped
