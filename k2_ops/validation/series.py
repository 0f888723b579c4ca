"""Time series as the checks see them, and the pure arithmetic on them (counter increases, time fractions).

A `Series` is one label set with its points `(unix_time_seconds, value)` in time order, exactly what a
Prometheus range query returns per result, or what the soak sampler collects from `/metrics`.

Counters are handled the way Prometheus' `increase()` handles them, minus the extrapolation (the
validation counts events, so 480 pings must read 480, not 479.6):
- a drop in value is a counter reset (process restart): the new value is counted as increase from 0;
- a series that appears inside the window (a labelled child created by its first event, or a process
  started inside the window) counts its first value as increase from 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Point = tuple[float, float]


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str] = field(default_factory=dict)
    points: Sequence[Point] = ()

    def values(self) -> list[float]:
        return [value for _, value in self.points]

    def times(self) -> list[float]:
        return [time for time, _ in self.points]

    def label_text(self) -> str:
        inner = ",".join(f'{key}="{value}"' for key, value in sorted(self.labels.items()) if key != "__name__")
        return f"{self.labels.get('__name__', '')}{{{inner}}}"

    def between(self, start: float, end: float) -> Series:
        """The points with start <= time <= end."""
        return Series(self.labels, [(t, v) for t, v in self.points if start <= t <= end])


@dataclass(frozen=True)
class Window:
    """The period a check covers. `step` is the spacing of the points (range-query step or sample interval).

    `counters_from_zero`: every counter in the window started at 0 (the process was launched at `start`,
    as in a soak), so the first value seen is itself an increase.
    `switches`: the instants inside the window at which the active streamer changed color (a stitched
    period, see `timeline.py`); scheduled counts allow one event more or fewer per switch.
    """

    start: float
    end: float
    step: float
    counters_from_zero: bool = False
    switches: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        if self.step <= 0:
            raise ValueError(f"window step must be > 0, got {self.step}")

    @property
    def seconds(self) -> float:
        return self.end - self.start


def appeared_in_window(series: Series, window: Window) -> bool:
    """True when the series did not exist at the window start (its first point comes later)."""
    if window.counters_from_zero:
        return True
    return bool(series.points) and series.points[0][0] > window.start + window.step / 2


def counter_increments(points: Sequence[Point], from_zero: bool = False) -> list[Point]:
    """(time, events since the previous point) for each point, resets included."""
    if not points:
        return []
    increments: list[Point] = [(points[0][0], points[0][1])] if from_zero else []
    previous = points[0][1]
    for time, value in points[1:]:
        # A drop means the process restarted and the counter began again from 0.
        increments.append((time, value - previous if value >= previous else value))
        previous = value
    return increments


def counter_increase(points: Sequence[Point], from_zero: bool = False) -> float:
    """Events counted by a counter over its points (resets included; `from_zero`: first value too)."""
    return sum(amount for _, amount in counter_increments(points, from_zero))


def series_increase(series: Series, window: Window) -> float:
    return counter_increase(series.points, from_zero=appeared_in_window(series, window))


def total_increase(series: Iterable[Series], window: Window) -> float:
    """Sum of the per-series increases (the correct order: increase first, then sum)."""
    return sum(series_increase(one, window) for one in series)


def increase_by_label(series: Iterable[Series], window: Window, label: str) -> dict[str, float]:
    """Increase per value of `label` (e.g. reconnects per reason), omitting zeros."""
    result: dict[str, float] = {}
    for one in series:
        amount = series_increase(one, window)
        if amount:
            key = one.labels.get(label, "")
            result[key] = result.get(key, 0.0) + amount
    return result


def chunk_increases(series: Sequence[Series], window: Window, chunk_seconds: float) -> list[tuple[float, float]]:
    """(chunk start, summed increase) for consecutive chunks of `chunk_seconds` covering the window.

    Each increment belongs to the chunk holding the time it was observed (chunks are half-open on the
    left). A trailing remainder shorter than half a chunk joins the last chunk; a longer one is its own.
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
    count = max(1, int(window.seconds // chunk_seconds))
    if window.seconds - count * chunk_seconds >= chunk_seconds / 2:
        count += 1
    sums = [0.0] * count
    for one in series:
        for time, amount in counter_increments(one.points, appeared_in_window(one, window)):
            if window.start <= time <= window.end:
                # An increment seen at t happened in (previous point, t]: chunk k covers (start + k*c, start + (k+1)*c].
                index = min(max(0, math.ceil((time - window.start) / chunk_seconds - 1e-9) - 1), count - 1)
                sums[index] += amount
    return [(window.start + index * chunk_seconds, amount) for index, amount in enumerate(sums)]


def chunk_length(window: Window, chunk_seconds: float, index: int, count: int) -> float:
    """Length of chunk `index`: the last one runs to the window end."""
    start = window.start + index * chunk_seconds
    return (window.end - start) if index == count - 1 else chunk_seconds


def _up_share_by_point(series: Sequence[Series], window: Window) -> dict[int, float]:
    """Per expected point index, the highest value among series clamped to [0, 1] (missing: absent)."""
    best: dict[int, float] = {}
    for one in series:
        for t, value in one.points:
            if window.start <= t <= window.end:
                index = round((t - window.start) / window.step)
                best[index] = max(best.get(index, 0.0), min(1.0, max(0.0, value)))
    return best


def time_fraction(series: Sequence[Series], window: Window) -> float:
    """Share of the window a 0/1 gauge was 1, from points spaced `window.step` apart.

    Each expected point contributes its value clamped to [0, 1] (an `avg_over_time` point is already the
    share of that step), the highest among series at that point. A missing point (no scrape, process
    down) contributes 0, which is what an uptime needs.
    """
    expected = int(window.seconds // window.step) + 1
    return min(1.0, sum(_up_share_by_point(series, window).values()) / expected)


def down_windows(series: Sequence[Series], window: Window, min_seconds: float | None = None) -> list[Point]:
    """The stretches a 0/1 gauge was not 1: [(begin, end)] from the first point below 1 (or missing) of a
    run to the next point at 1, kept when the time down in it adds up to `min_seconds` (default: one
    step, so a one-second reconnect blip does not count as a window)."""
    least = window.step if min_seconds is None else min_seconds
    best = _up_share_by_point(series, window)
    expected = int(window.seconds // window.step) + 1
    windows: list[Point] = []
    run_start: int | None = None
    down = 0.0
    for index in range(expected + 1):
        share = best.get(index, 0.0) if index < expected else 1.0
        if share < 1.0:
            run_start = index if run_start is None else run_start
            down += (1.0 - share) * window.step
            continue
        if run_start is not None:
            if down >= least:
                begin = window.start + run_start * window.step
                windows.append((begin, min(window.end, window.start + index * window.step)))
            run_start, down = None, 0.0
    return windows


def value_changes(series: Sequence[Series]) -> int:
    """How many times a gauge changed value (like PromQL `changes()`), summed over series."""
    count = 0
    for one in series:
        values = one.values()
        count += sum(1 for before, after in itertools.pairwise(values) if after != before)
    return count


def all_values(series: Iterable[Series]) -> list[float]:
    return [value for one in series for value in one.values()]
