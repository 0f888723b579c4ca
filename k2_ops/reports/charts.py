"""Charts as PNG bytes, drawn with matplotlib's Agg backend (no display, no files until rendered)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are rendered headless, in workers and CI

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Line = tuple[str, Sequence[float], Sequence[float]]  # (label, x values, y values)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
MARKER_COLOR = "#7f7f7f"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _time_axis(axis: Axes, span_seconds: float) -> None:
    fmt = "%m-%d" if span_seconds > 3 * 86_400 else "%m-%d %H:%M"
    # matplotlib.dates has no annotations (matplotlib#29994).
    formatter = mdates.DateFormatter(fmt, tz=UTC)  # type: ignore[no-untyped-call]
    axis.xaxis.set_major_formatter(formatter)
    for label in axis.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def line_chart(
    title: str,
    lines: Sequence[Line],
    *,
    ylabel: str,
    xlabel: str = "",
    timestamps: bool = False,
    limits: Sequence[tuple[float, str]] = (),
    step: bool = False,
    markers: Sequence[tuple[float, str]] = (),
) -> bytes:
    """Lines over time (unix seconds when `timestamps`, else plain numbers such as elapsed seconds).

    `limits` draw horizontal dashed lines (threshold, label); `step` draws counters as steps; `markers`
    draw vertical dotted lines (x, label), e.g. the deployments of the period.
    """
    figure, axis = plt.subplots(figsize=(8, 3.2))
    spans = []
    for index, (label, xs, ys) in enumerate(lines):
        if not xs:
            continue
        x_values = [datetime.fromtimestamp(x, UTC) for x in xs] if timestamps else list(xs)
        spans.append(max(xs) - min(xs))
        color = COLORS[index % len(COLORS)]
        # The stubs take no datetimes, which matplotlib's units registry plots (matplotlib#27140): arg-type below.
        if step:
            axis.step(x_values, ys, where="post", label=label, color=color, linewidth=1.2)  # type: ignore[arg-type]
        else:
            axis.plot(x_values, ys, label=label, color=color, linewidth=1.2)  # type: ignore[arg-type]
    for value, label in limits:
        axis.axhline(value, linestyle="--", color="#d62728", linewidth=1, label=label)
    for index, (x, label) in enumerate(markers):
        at = datetime.fromtimestamp(x, UTC) if timestamps else x
        # One legend entry for all markers: they share a meaning. A datetime x, as above (matplotlib#27140).
        legend = label if index == 0 else None
        axis.axvline(at, linestyle=":", color=MARKER_COLOR, linewidth=1.4, label=legend)  # type: ignore[arg-type]
    if timestamps:
        _time_axis(axis, max(spans, default=0.0))
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    if xlabel:
        axis.set_xlabel(xlabel)
    axis.grid(alpha=0.3)
    if lines or limits or markers:
        axis.legend(loc="best", fontsize=8)
    return _png(figure)


def bar_chart(
    title: str,
    categories: Sequence[str],
    bars: Sequence[tuple[str, Sequence[float]]],
    *,
    ylabel: str,
    limits: Sequence[tuple[float, str]] = (),
    bands: Sequence[tuple[float, float]] | None = None,
    marked: Sequence[int] = (),
    marked_label: str = "",
    y_range: tuple[float, float] | None = None,
) -> bytes:
    """Grouped bars per category (e.g. rotations and pings per day); `bands` draws (low, high) ranges instead.

    `marked` shades the categories at those indexes (e.g. days with a deployment), named `marked_label`;
    `y_range` zooms the value axis (an uptime of 99.3 % is invisible on 0-100).
    """
    figure, axis = plt.subplots(figsize=(8, 3.2))
    positions = list(range(len(categories)))
    if bands is not None:
        lows = [low for low, _ in bands]
        heights = [high - low for low, high in bands]
        axis.bar(positions, heights, bottom=lows, color=COLORS[0], alpha=0.7, label="band observed (min - max)")
    else:
        width = 0.8 / max(1, len(bars))
        for index, (label, values) in enumerate(bars):
            offsets = [p - 0.4 + width * (index + 0.5) for p in positions]
            axis.bar(offsets, values, width=width, label=label, color=COLORS[index % len(COLORS)])
    for value, label in limits:
        axis.axhline(value, linestyle="--", color="#d62728", linewidth=1, label=label)
    for index, position in enumerate(marked):
        axis.axvspan(position - 0.5, position + 0.5, color=MARKER_COLOR, alpha=0.15,
                     label=marked_label if index == 0 else None)
    if y_range is not None:
        axis.set_ylim(*y_range)
    axis.set_xticks(positions)
    axis.set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(loc="best", fontsize=8)
    return _png(figure)
