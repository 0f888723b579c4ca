"""Pure statistics for the benchmark: summaries of repeated figures, percentiles, slopes."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def summary(values: Sequence[float | None], digits: int = 3) -> dict[str, Any]:
    """Median and spread of repeated measurements of one figure (None values are left out)."""
    clean = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return {"median": None, "min": None, "max": None, "spread_pct": None, "runs": 0, "values": []}
    median = statistics.median(clean)
    low, high = min(clean), max(clean)
    spread = (high - low) / abs(median) * 100 if median else 0.0
    return {
        "median": round(median, digits),
        "min": round(low, digits),
        "max": round(high, digits),
        "spread_pct": round(spread, 1),
        "runs": len(clean),
        "values": [round(v, digits) for v in clean],
    }


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (fraction in [0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    """p50 / p99 / max (and count) of latency samples."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p99": percentile(ordered, 0.99),
        "max": float(ordered[-1]),
    }


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """Slope of the ordinary least-squares line through (x, y) points (0 for fewer than two x values)."""
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def id_accounting(expected: Sequence[int], seen: Sequence[int]) -> dict[str, int]:
    """Lost and duplicated ids of one stream key: `expected` is the ground truth between the first and the
    last id seen (both inclusive); `seen` is what Kafka holds, in any order."""
    seen_set = set(seen)
    lost = sum(1 for i in expected if i not in seen_set)
    return {"expected": len(expected), "seen": len(seen), "lost": lost, "duplicated": len(seen) - len(seen_set)}
