"""Validation reports: soak, daily, 7-day and 30-day, as Markdown, self-contained HTML and JSON.

Every check row shows the observed value next to its threshold. Charts (matplotlib, Agg backend) are
PNG files beside the Markdown and inline base64 images in the HTML, which references nothing outside
itself.

Entry point for the Dagster assets and `k2 validate`:
`write_period_report(kind, results, out_dir) -> {"markdown", "html", "json", "chart:<name>"...: Path}`
with kind "daily" (a PeriodResult), "weekly" (a sequence of daily PeriodResults), "monthly" (a
PeriodResult) or "soak" (the memory profile dict, checks included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from k2_ops.reports.build import daily_report, monthly_report, soak_report, weekly_report
from k2_ops.reports.model import Chart, Report, Table
from k2_ops.reports.render import to_html, to_json, to_markdown, write_report
from k2_ops.validation.periods import PeriodResult

KINDS = ("soak", "daily", "weekly", "monthly")


def build_report(kind: str, results: Any) -> Report:
    if kind == "daily":
        return daily_report(_one(results))
    if kind == "monthly":
        return monthly_report(_one(results))
    if kind == "weekly":
        days = [results] if isinstance(results, PeriodResult) else list(results)
        return weekly_report(days)
    if kind == "soak":
        if not isinstance(results, Mapping):
            raise TypeError("a soak report is built from the memory profile dict")
        return soak_report(results)
    raise ValueError(f"unknown report kind {kind!r}; known: {KINDS}")


def _one(results: PeriodResult | Sequence[PeriodResult]) -> PeriodResult:
    if isinstance(results, PeriodResult):
        return results
    items = list(results)
    if len(items) != 1:
        raise ValueError(f"expected one period result, got {len(items)}")
    return items[0]


def write_period_report(kind: str, results: Any, out_dir: Path) -> dict[str, Path]:
    return write_report(build_report(kind, results), Path(out_dir))


__all__ = [
    "KINDS",
    "Chart",
    "Report",
    "Table",
    "build_report",
    "daily_report",
    "monthly_report",
    "soak_report",
    "to_html",
    "to_json",
    "to_markdown",
    "weekly_report",
    "write_period_report",
    "write_report",
]
