"""Counter and gauge arithmetic the checks rely on: resets, series appearing mid-window, chunks, uptime."""

from __future__ import annotations

import pytest

from k2_ops.validation.series import (
    Series,
    Window,
    appeared_in_window,
    chunk_increases,
    counter_increase,
    increase_by_label,
    time_fraction,
    total_increase,
    value_changes,
)


def test_counter_increase_counts_steps_and_survives_a_reset() -> None:
    assert counter_increase([(0, 5), (1, 7), (2, 7), (3, 10)]) == 5
    # Process restart: 10 -> 2 means 2 new events after the reset, not -8.
    assert counter_increase([(0, 5), (1, 10), (2, 2), (3, 4)]) == 5 + 2 + 2
    assert counter_increase([(0, 5), (1, 7)], from_zero=True) == 7
    assert counter_increase([]) == 0


def test_series_appearing_inside_the_window_counts_its_first_value() -> None:
    window = Window(100.0, 200.0, 10.0)
    existing = Series({"reason": "a"}, [(100.0, 4), (150.0, 6)])
    appeared = Series({"reason": "b"}, [(150.0, 1), (160.0, 2)])
    assert not appeared_in_window(existing, window)
    assert appeared_in_window(appeared, window)
    assert total_increase([existing, appeared], window) == 2 + 2
    assert increase_by_label([existing, appeared], window, "reason") == {"a": 2, "b": 2}
    soak = Window(100.0, 200.0, 10.0, counters_from_zero=True)
    assert total_increase([existing], soak) == 6


def test_chunk_increases_put_each_event_in_the_chunk_it_was_seen() -> None:
    window = Window(0.0, 100.0, 1.0)
    counter = Series({}, [(float(t), float(t)) for t in range(0, 101)])  # 1 event per second
    chunks = chunk_increases([counter], window, 25.0)
    assert [start for start, _ in chunks] == [0, 25, 50, 75]
    assert sum(amount for _, amount in chunks) == 100
    assert all(amount == 25 for _, amount in chunks)
    # A remainder shorter than half a chunk joins the last chunk.
    assert len(chunk_increases([counter], window, 30.0)) == 3
    with pytest.raises(ValueError):
        chunk_increases([counter], window, 0)


def test_time_fraction_counts_missing_points_as_down() -> None:
    window = Window(0.0, 99.0, 1.0)  # 100 expected points
    up_half = Series({}, [(float(t), 1.0) for t in range(0, 50)])
    assert time_fraction([up_half], window) == pytest.approx(0.5)
    # avg_over_time points carry partial uptime; two series take the best per point; clamp at 1.
    partial = Series({}, [(float(t), 0.5) for t in range(0, 100)])
    doubled = Series({}, [(float(t), 2.0) for t in range(0, 10)])
    assert time_fraction([partial, doubled], window) == pytest.approx((90 * 0.5 + 10) / 100)


def test_value_changes_counts_restarts_of_a_gauge() -> None:
    assert value_changes([Series({}, [(0, 1.0), (1, 1.0), (2, 2.0), (3, 2.0), (4, 3.0)])]) == 2
    assert value_changes([Series({}, [(0, 1.0)])]) == 0


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Window(10.0, 10.0, 1.0)
    with pytest.raises(ValueError):
        Window(0.0, 10.0, 0.0)
