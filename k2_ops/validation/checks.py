"""Checks: pure functions from series to a `CheckResult` (no I/O), one parameterised function per kind.

Kinds (each reused by every criteria set and profile):
- `growth`:           end level minus start level of a gauge (e.g. RSS growth < 50 MB)
- `value_range`:      every value of a gauge inside [low, high] (e.g. RSS <= 250 MB ceiling, leak score < 0.5)
- `count_per_period`: events counted by counters in the window vs an expected count (6 rotations a day)
- `rate`:             events per second, averaged over the window or sustained over every chunk of it
- `zero_events`:      no event at all, counted as counter increases, gauge changes or active series
- `ratio`:            one quantity over another inside [low, high] (uptime, produced/received)

Units: `scale` divides raw values for display (1e6 turns bytes into MB; 1 MB = 1,000,000 bytes here and in
the alert rules). A check never passes without data: missing series give `observed=None` and a failure,
unless the caller says an absent counter means "never incremented" (`absent_is_zero`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from k2_ops.validation.series import (
    Series,
    Window,
    all_values,
    chunk_increases,
    chunk_length,
    down_windows,
    increase_by_label,
    time_fraction,
    total_increase,
    value_changes,
)

COMPARATORS = ("<", "<=", ">", ">=", "==", "in")


@dataclass(frozen=True)
class CheckResult:
    """One criterion's verdict. `observed` is compared with `threshold` by `comparator`:

    `"<" "<=" ">" ">="` the usual; `"=="` means |observed - threshold| <= tolerance; `"in"` means
    threshold <= observed <= upper.
    """

    name: str
    passed: bool
    observed: float | None
    threshold: float
    unit: str
    evidence: str
    comparator: str = "<="
    tolerance: float = 0.0
    upper: float | None = None
    kind: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.comparator not in COMPARATORS:
            raise ValueError(f"comparator must be one of {COMPARATORS}, got {self.comparator!r}")

    def threshold_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.comparator == "==":
            spread = f" ± {format_number(self.tolerance)}" if self.tolerance else ""
            return f"= {format_number(self.threshold)}{spread}{unit}"
        if self.comparator == "in":
            return f"{format_number(self.threshold)} - {format_number(self.upper)}{unit}"
        symbol = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}[self.comparator]
        return f"{symbol} {format_number(self.threshold)}{unit}"

    def observed_text(self) -> str:
        if self.observed is None:
            return "no data"
        return f"{format_number(self.observed)}{f' {self.unit}' if self.unit else ''}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["details"] = dict(self.details)
        data["threshold_text"] = self.threshold_text()
        data["observed_text"] = self.observed_text()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def compare(
    observed: float, comparator: str, threshold: float, tolerance: float = 0.0, upper: float | None = None
) -> bool:
    if comparator == "<":
        return observed < threshold
    if comparator == "<=":
        return observed <= threshold
    if comparator == ">":
        return observed > threshold
    if comparator == ">=":
        return observed >= threshold
    if comparator == "==":
        return abs(observed - threshold) <= tolerance
    if comparator == "in":
        return threshold <= observed <= (math.inf if upper is None else upper)
    raise ValueError(f"unknown comparator {comparator!r}")


def no_data(
    name: str,
    kind: str,
    threshold: float,
    unit: str,
    comparator: str,
    what: str,
    tolerance: float = 0.0,
    upper: float | None = None,
) -> CheckResult:
    return CheckResult(name, False, None, threshold, unit, f"no data: {what}", comparator, tolerance, upper, kind)


def _edge_level(points: Sequence[tuple[float, float]], start: float, end: float) -> float:
    values = [value for time, value in points if start <= time <= end]
    return statistics.median(values) if values else math.nan


def growth(
    name: str,
    series: Sequence[Series],
    window: Window,
    max_growth: float,
    *,
    unit: str = "MB",
    scale: float = 1e6,
    warmup_seconds: float = 0.0,
    edge_fraction: float = 0.05,
    what: str = "RSS",
) -> CheckResult:
    """Growth of a gauge: median of the last `edge_fraction` of the window minus median of the first.

    Medians over the edges keep one garbage-collection spike from deciding the verdict. The first
    `warmup_seconds` (start-up allocations) are left out. Passes when growth < max_growth (in `unit`).
    """
    kind = "growth"
    points = sorted((t, v) for one in series for t, v in one.points if t >= window.start + warmup_seconds)
    if len(points) < 2:
        return no_data(name, kind, max_growth, unit, "<", f"{what} needs 2+ points after warm-up")
    first_time, last_time = points[0][0], points[-1][0]
    edge = max((last_time - first_time) * edge_fraction, 0.0)
    start_level = _edge_level(points, first_time, first_time + edge) / scale
    end_level = _edge_level(points, last_time - edge, last_time) / scale
    observed = end_level - start_level
    peak = max(value for _, value in points) / scale
    passed = observed < max_growth
    evidence = (
        f"{what} {format_number(start_level)} → {format_number(end_level)} {unit} "
        f"(peak {format_number(peak)}) over {format_number((last_time - first_time) / 3600)} h"
    )
    return CheckResult(
        name,
        passed,
        observed,
        max_growth,
        unit,
        evidence,
        "<",
        kind=kind,
        details={
            "start": start_level,
            "end": end_level,
            "peak": peak,
            "points": len(points),
            "warmup_seconds": warmup_seconds,
        },
    )


def value_range(
    name: str,
    series: Sequence[Series],
    *,
    low: float | None = None,
    high: float | None = None,
    strict_high: bool = False,
    unit: str = "",
    scale: float = 1.0,
    what: str = "value",
    band_series: Sequence[Series] | None = None,
) -> CheckResult:
    """Every value within [low, high] (`strict_high`: < high). Observed is the value nearest to failing:
    the maximum when a ceiling is set, else the minimum. `band_series` (e.g. min_over_time points) widens
    the reported band without changing the verdict's inputs.
    """
    kind = "range"
    upper: float | None = None
    if low is not None and high is not None:
        comparator, threshold, upper = "in", low, high
    elif high is not None:
        comparator, threshold = ("<" if strict_high else "<="), high
    elif low is not None:
        comparator, threshold = ">=", low
    else:
        raise ValueError(f"{name}: value_range needs low and/or high")
    values = [value / scale for value in all_values(series)]
    if not values:
        return no_data(name, kind, float(threshold), unit, comparator, what, upper=upper)
    band_values = values + [value / scale for value in all_values(band_series or [])]
    band_low, band_high = min(band_values), max(band_values)
    observed = max(values) if high is not None else min(values)
    passed = all(
        (low is None or value >= low) and (high is None or (value < high if strict_high else value <= high))
        for value in values
    )
    if low is not None and high is not None and not passed and min(values) < low:
        observed = min(values)
    evidence = f"{what} band observed {format_number(band_low)} - {format_number(band_high)} {unit}".rstrip()
    return CheckResult(
        name,
        passed,
        observed,
        float(threshold),
        unit,
        evidence,
        comparator,
        upper=upper,
        kind=kind,
        details={"band_low": band_low, "band_high": band_high, "points": len(values)},
    )


def count_per_period(
    name: str,
    series: Sequence[Series],
    window: Window,
    *,
    expected: float,
    tolerance: float = 0.0,
    unit: str = "",
    what: str = "events",
    absent_is_zero: bool = False,
) -> CheckResult:
    """Events counted in the window (counter increases) equal `expected` ± `tolerance`."""
    kind = "count"
    if not series and not absent_is_zero:
        return no_data(name, kind, expected, unit, "==", what, tolerance=tolerance)
    observed = total_increase(series, window)
    passed = abs(observed - expected) <= tolerance
    evidence = (
        f"{format_number(observed)} {what} in {format_number(window.seconds)} s (expected "
        f"{format_number(expected)}{f' ± {format_number(tolerance)}' if tolerance else ''})"
    )
    return CheckResult(
        name,
        passed,
        observed,
        expected,
        unit,
        evidence,
        "==",
        tolerance,
        kind=kind,
        details={"window_seconds": window.seconds},
    )


def count_at_most(
    name: str,
    series: Sequence[Series],
    window: Window,
    *,
    maximum: float,
    unit: str = "",
    what: str = "events",
    by_label: str | None = None,
    absent_is_zero: bool = True,
) -> CheckResult:
    """Events counted in the window <= `maximum` (the count-per-period kind with an upper bound only)."""
    kind = "count"
    if not series and not absent_is_zero:
        return no_data(name, kind, maximum, unit, "<=", what)
    observed = total_increase(series, window)
    breakdown = increase_by_label(series, window, by_label) if by_label else {}
    listed = ", ".join(f"{key or '-'}: {format_number(value)}" for key, value in sorted(breakdown.items()))
    evidence = f"{format_number(observed)} {what}" + (f" ({listed})" if listed else "")
    return CheckResult(
        name,
        observed <= maximum,
        observed,
        maximum,
        unit,
        evidence,
        "<=",
        kind=kind,
        details={"by_label": breakdown},
    )


def rate(
    name: str,
    series: Sequence[Series],
    window: Window,
    *,
    min_rate: float,
    sustained_seconds: float | None = None,
    unit: str = "msg/s",
    what: str = "messages",
) -> CheckResult:
    """Events per second > `min_rate`: the window average, or with `sustained_seconds` the worst chunk."""
    kind = "rate"
    if not series:
        return no_data(name, kind, min_rate, unit, ">", what)
    total = total_increase(series, window)
    average = total / window.seconds
    if sustained_seconds is None:
        evidence = (
            f"{format_number(total)} {what} in {format_number(window.seconds)} s = "
            f"{format_number(average)} {unit} average"
        )
        return CheckResult(
            name,
            average > min_rate,
            average,
            min_rate,
            unit,
            evidence,
            ">",
            kind=kind,
            details={"total": total, "average": average},
        )
    chunks = chunk_increases(series, window, sustained_seconds)
    rates = [
        (start, amount / chunk_length(window, sustained_seconds, index, len(chunks)))
        for index, (start, amount) in enumerate(chunks)
    ]
    worst_start, worst = min(rates, key=lambda item: item[1])
    evidence = (
        f"worst {format_number(sustained_seconds)} s chunk {format_number(worst)} {unit} at "
        f"+{format_number(worst_start - window.start)} s; average {format_number(average)} {unit} "
        f"over {len(rates)} chunks"
    )
    return CheckResult(
        name,
        worst > min_rate,
        worst,
        min_rate,
        unit,
        evidence,
        ">",
        kind=kind,
        details={
            "total": total,
            "average": average,
            "chunks": len(rates),
            "sustained_seconds": sustained_seconds,
        },
    )


def zero_events(
    name: str,
    series: Sequence[Series],
    window: Window,
    *,
    count_as: str = "increase",
    what: str = "events",
    by_label: str | None = None,
    absent_is_zero: bool = True,
) -> CheckResult:
    """No event in the window. `count_as`:
    - "increase": counter increases (e.g. pong timeouts, produce errors);
    - "changes":  changes of a gauge's value (e.g. process_start_time_seconds: a change is a restart);
    - "active":   series with a value > 0 at some point (e.g. ALERTS{alertstate="firing"}), one per series.
    `by_label` lists which label values contributed (reasons, alert names) in the evidence.
    """
    kind = "zero-events"
    if count_as not in ("increase", "changes", "active"):
        raise ValueError(f"count_as must be increase, changes or active, got {count_as!r}")
    if not series and not absent_is_zero:
        return no_data(name, kind, 0, "", "==", what)
    names: dict[str, float] = {}
    if count_as == "increase":
        observed = total_increase(series, window)
        names = increase_by_label(series, window, by_label) if by_label else {}
    elif count_as == "changes":
        observed = float(value_changes(series))
    else:
        active = [one for one in series if any(value > 0 for value in one.values())]
        observed = float(len(active))
        if by_label:
            for one in active:
                names[one.labels.get(by_label, "")] = names.get(one.labels.get(by_label, ""), 0) + 1
    listed = ", ".join(f"{key or '-'}: {format_number(value)}" for key, value in sorted(names.items()))
    evidence = f"{format_number(observed)} {what}" + (f" ({listed})" if listed else "")
    if not series:
        evidence += " (no series in window)"
    return CheckResult(name, observed == 0, observed, 0, "", evidence, "==", kind=kind, details={"by_label": names})


def ratio(
    name: str,
    numerator: float,
    denominator: float,
    *,
    low: float | None = None,
    high: float | None = None,
    unit: str = "%",
    scale: float = 100.0,
    what: str = "ratio",
    numerator_text: str = "",
    denominator_text: str = "",
) -> CheckResult:
    """numerator / denominator (times `scale`, so % by default) within [low, high] (given in `unit`).

    Takes the two quantities already reduced from series (see `uptime` and `counter_ratio`).
    """
    kind = "ratio"
    comparator = "in" if low is not None and high is not None else (">" if low is not None else "<")
    threshold = low if low is not None else high
    if threshold is None:
        raise ValueError(f"{name}: ratio needs low and/or high")
    upper = high if comparator == "in" else None
    if denominator <= 0:
        return no_data(name, kind, threshold, unit, comparator, f"{what}: denominator is 0", upper=upper)
    observed = numerator / denominator * scale
    if comparator == "in":
        passed = low <= observed <= high  # type: ignore[operator]
    elif comparator == ">":
        passed = observed > threshold
    else:
        passed = observed < threshold
    evidence = (
        f"{what} {format_number(observed)} {unit}: {numerator_text or format_number(numerator)} / "
        f"{denominator_text or format_number(denominator)}"
    )
    return CheckResult(
        name,
        passed,
        observed,
        threshold,
        unit,
        evidence,
        comparator,
        upper=upper,
        kind=kind,
        details={"numerator": numerator, "denominator": denominator},
    )


def uptime(name: str, series: Sequence[Series], window: Window, *, min_percent: float) -> CheckResult:
    """Share of the window the connection was up (gauge >= 1 at a point), in %, > min_percent.

    The evidence names the windows it was down (UTC), so a failing day says when."""
    if not series:
        return no_data(name, "ratio", min_percent, "%", ">", "connection status")
    fraction = time_fraction(series, window)
    up_seconds = fraction * window.seconds
    result = ratio(
        name,
        up_seconds,
        window.seconds,
        low=min_percent,
        what="uptime",
        numerator_text=f"{format_number(up_seconds)} s connected",
        denominator_text=f"{format_number(window.seconds)} s",
    )
    down = down_windows(series, window)
    if not down:
        return result
    listed = ", ".join(f"{utc_text(begin)} - {utc_text(end)} ({format_number(end - begin)} s)" for begin, end in down)
    return dataclasses.replace(
        result,
        evidence=f"{result.evidence}; down {listed}",
        details={**result.details, "down_windows": [[begin, end] for begin, end in down]},
    )


def utc_text(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def counter_ratio(
    name: str,
    numerator: Sequence[Series],
    denominator: Sequence[Series],
    window: Window,
    *,
    tolerance_percent: float,
    what: str = "ratio",
    numerator_text: str = "",
    denominator_text: str = "",
) -> CheckResult:
    """Increase of one set of counters over another's, within 100 % ± tolerance (e.g. produced/received)."""
    produced = total_increase(numerator, window)
    received = total_increase(denominator, window)
    return ratio(
        name,
        produced,
        received,
        low=100.0 - tolerance_percent,
        high=100.0 + tolerance_percent,
        what=what,
        numerator_text=f"{format_number(produced)} {numerator_text}".strip(),
        denominator_text=f"{format_number(received)} {denominator_text}".strip(),
    )
