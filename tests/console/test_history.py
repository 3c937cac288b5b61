"""pylog.console.history: two resolutions, gaps, rates from counters."""
from __future__ import annotations

import math

import pytest

from pylog.console.history import History, Rates


def test_fine_points_are_kept_in_order_and_the_oldest_drop_out():
    h = History(fine_points=5, coarse_points=3, coarse_ms=60_000)
    for i in range(8):
        h.tick(1_000 * i, {"a": float(i)})
    pts = h.points("a")
    # 5 fine points remain (3..7); the coarse bucket of minute 0 is still open
    assert pts == [(3000, 3.0), (4000, 4.0), (5000, 5.0), (6000, 6.0), (7000, 7.0)]
    assert h.last("a") == 7.0


def test_missing_values_are_gaps_not_zeros():
    h = History(fine_points=10)
    h.tick(0, {"a": 1.0, "b": 2.0})
    h.tick(1000, {"a": None})
    h.tick(2000, {"a": float("nan"), "b": 5.0})
    assert h.points("a") == [(0, 1.0), (1000, None), (2000, None)]
    assert h.points("b") == [(0, 2.0), (1000, None), (2000, 5.0)]
    assert h.last("a") is None


def test_a_series_that_starts_late_has_gaps_before():
    h = History(fine_points=10)
    h.tick(0, {"a": 1.0})
    h.tick(1000, {"a": 1.0, "new": 9.0})
    assert h.points("new") == [(0, None), (1000, 9.0)]
    assert h.points("unknown") == []


def test_older_minutes_are_kept_as_means_at_coarse_resolution():
    h = History(fine_points=4, coarse_points=60, coarse_ms=10_000)
    # ticks every 2 s for 40 s: values = second of the tick
    for t in range(0, 40_000, 2_000):
        h.tick(t, {"a": t / 1000.0})
    pts = h.points("a")
    fine = pts[-4:]
    assert fine == [(32000, 32.0), (34000, 34.0), (36000, 36.0), (38000, 38.0)]
    coarse = pts[:-4]
    # buckets 0-10 s, 10-20 s, 20-30 s are closed, each the mean of its five ticks; the
    # bucket 30-40 s is open; coarse points overlapping the fine window are left out
    assert coarse == [(0, 4.0), (10000, 14.0), (20000, 24.0)]
    # the hour's limit: at most coarse_points closed buckets
    h2 = History(fine_points=2, coarse_points=3, coarse_ms=1_000)
    for t in range(0, 10_000, 500):
        h2.tick(t, {"a": 1.0})
    assert len([p for p in h2.points("a") if p[0] % 1000 == 0]) <= 3 + 2


def test_a_coarse_bucket_with_only_gaps_is_a_gap():
    h = History(fine_points=2, coarse_points=10, coarse_ms=1_000)
    h.tick(0, {"a": 1.0})
    h.tick(1_000, {"a": None})
    h.tick(2_000, {"a": None})
    h.tick(3_000, {"a": None})
    h.tick(4_000, {"a": 3.0})
    pts = dict(h.points("a"))
    assert pts[0] == 1.0 and pts[1000] is None


def test_forget_drops_a_series():
    h = History()
    h.tick(0, {"a": 1.0, "b": 1.0})
    h.forget(["a"])
    assert "a" not in h and "b" in h


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        History(fine_points=1)


def test_rates_from_counters():
    r = Rates()
    assert r.update(0, {"x": 100.0}) == {"x": None}  # nothing to compare with yet
    assert r.update(2000, {"x": 300.0}) == {"x": 100.0}
    # a counter that went down (its broker restarted) is a gap, and starts afresh
    assert r.update(3000, {"x": 10.0}) == {"x": None}
    assert r.update(4000, {"x": 20.0}) == {"x": 10.0}
    # no time passed: no rate
    assert r.update(4000, {"x": 30.0}) == {"x": None}
    # a counter that disappears is forgotten
    r.update(5000, {})
    assert r.update(6000, {"x": 1e9}) == {"x": None}
    assert not math.isnan(r.update(7000, {"x": 1e9 + 5})["x"])


def test_rates_use_the_time_each_counter_was_read():
    r = Rates()
    r.update(0, {"x": 0.0}, {"x": 0})
    # the sample started at 1000 but the broker answered at 3000: 200 over 3 s, not 1 s
    assert r.update(1000, {"x": 600.0}, {"x": 3000}) == {"x": 200.0}
