"""The benchmark's statistics: repeated figures, latency percentiles, slopes, id accounting."""

from __future__ import annotations

import math

import pytest

from k2_ops.bench.stats import distribution, id_accounting, least_squares_slope, percentile, ratio, summary


def test_summary_gives_median_and_spread_and_skips_missing_values() -> None:
    result = summary([10.0, None, 12.0, 11.0, math.nan])
    assert result["median"] == 11.0
    assert (result["min"], result["max"], result["runs"]) == (10.0, 12.0, 3)
    assert result["spread_pct"] == pytest.approx(2 / 11 * 100, abs=0.1)
    assert summary([None])["median"] is None and summary([])["runs"] == 0


def test_percentiles_are_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_distribution_of_latencies() -> None:
    result = distribution([3.0, 1.0, 2.0, 10.0])
    assert result == {"count": 4, "p50": 2.0, "p99": 10.0, "max": 10.0}
    assert distribution([])["count"] == 0 and math.isnan(distribution([])["p99"])


def test_least_squares_slope() -> None:
    assert least_squares_slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
    assert least_squares_slope([(0, 1.0)]) == 0.0
    assert least_squares_slope([(1, 1.0), (1, 2.0)]) == 0.0


def test_ratio_needs_both_values() -> None:
    assert ratio(20.0, 10.0) == 2.0
    assert ratio(None, 10.0) is None and ratio(1.0, 0.0) is None


def test_id_accounting_counts_lost_and_duplicated_ids() -> None:
    truth = [5, 6, 7, 8, 9]
    assert id_accounting(truth, [5, 6, 7, 8, 9]) == {"expected": 5, "seen": 5, "lost": 0, "duplicated": 0}
    assert id_accounting(truth, [9, 5, 6, 6, 8]) == {"expected": 5, "seen": 5, "lost": 1, "duplicated": 1}
