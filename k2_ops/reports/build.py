"""Reports from validation results: soak (from the memory profile), daily, 7-day and 30-day.

Charts come from the series a period validation fetched (`PeriodResult.series`); a result read back from
JSON has none, and its report then shows tables only (the 7-day report needs only the daily checks).

Every period report says how it was judged (the active streamer stitched across deployments, or one color
and why) and shows the period's deployments: a table, the notes (overlaps, a missing history), and on the
charts a dotted line at each switch of the active color (weekly: the days with a switch shaded).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from k2_ops.reports import charts
from k2_ops.reports.model import Chart, Report, Table
from k2_ops.validation import criteria
from k2_ops.validation.checks import CheckResult, format_number
from k2_ops.validation.periods import PeriodResult
from k2_ops.validation.series import Series, Window, chunk_increases, increase_by_label
from k2_ops.validation.timeline import Judgement

MB = 1e6


def _when(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _summed_cumulative(series: Sequence[Series], window: Window) -> tuple[list[float], list[float]]:
    """Cumulative events since the window start, summed over series, at each chunk boundary."""
    chunk = max(window.step, window.seconds / 200)
    total, xs, ys = 0.0, [window.start], [0.0]
    for start, amount in chunk_increases(series, window, chunk):
        total += amount
        xs.append(min(start + chunk, window.end))
        ys.append(total)
    return xs, ys


def _rate_line(series: Sequence[Series], window: Window, chunks: int = 96) -> tuple[list[float], list[float]]:
    chunk = max(window.step, window.seconds / chunks)
    pairs = chunk_increases(series, window, chunk)
    return [start for start, _ in pairs], [amount / chunk for _, amount in pairs]


SWITCH_LABEL = "switch of the active color"


def _period_charts(result: PeriodResult, daily_buckets: bool) -> list[Chart]:
    series = result.series
    if not series:
        return []
    window = Window(result.start, result.end, result.step)
    markers = [(at, SWITCH_LABEL) for at in result.switches]
    found: list[Chart] = []
    rss_max = series.get(criteria.RSS_MAX.key, [])
    if rss_max:
        lines = [
            (f"RSS max {one.labels.get('instance', '')}".strip(), one.times(), [v / MB for v in one.values()])
            for one in rss_max
        ]
        lines += [
            ("RSS min", one.times(), [v / MB for v in one.values()]) for one in series.get(criteria.RSS_MIN.key, [])
        ]
        limits = [
            (check.threshold, f"ceiling {format_number(check.threshold)} MB")
            for check in result.checks
            if check.name == "memory_stable"
        ]
        found.append(
            Chart(
                "rss",
                "RSS over time (MB)",
                charts.line_chart(
                    "RSS over time", lines, ylabel="MB", timestamps=True, limits=limits, markers=markers
                ),
            )
        )
    messages = series.get(criteria.MESSAGES.key, [])
    if messages:
        xs, ys = _rate_line(messages, window, chunks=30 if daily_buckets else 96)
        limits = [
            (check.threshold, f"minimum {format_number(check.threshold)} msg/s")
            for check in result.checks
            if check.name == "message_rate"
        ]
        found.append(
            Chart(
                "message_rate",
                "Message rate (msg/s)",
                charts.line_chart(
                    "Message rate" + (" per day" if daily_buckets else ""),
                    [("received", xs, ys)],
                    ylabel="msg/s",
                    timestamps=True,
                    limits=limits,
                    markers=markers,
                ),
            )
        )
    counters = {
        "rotations": series.get(criteria.SCHEDULED_ROTATIONS.key, []),
        "pings": series.get(criteria.PINGS.key, []),
    }
    if daily_buckets:
        days = max(1, round(window.seconds / result.day_seconds))
        day_seconds = window.seconds / days
        labels = [
            datetime.fromtimestamp(result.start + index * day_seconds, UTC).strftime("%m-%d") for index in range(days)
        ]
        for name, values in counters.items():
            per_day = [amount for _, amount in chunk_increases(values, window, day_seconds)]
            named = [check for check in result.checks if check.name == name]
            limits = [
                (check.threshold / days, f"expected {format_number(check.threshold / days)} per day")
                for check in named
            ]
            found.append(
                Chart(
                    f"{name}_per_day",
                    f"{name.capitalize()} per day",
                    charts.bar_chart(
                        f"{name.capitalize()} per day",
                        labels[: len(per_day)],
                        [(name, per_day)],
                        ylabel="count",
                        limits=limits,
                    ),
                )
            )
    else:
        for name, values in counters.items():
            xs, ys = _summed_cumulative(values, window)
            expected = [
                (check.threshold, f"expected {format_number(check.threshold)}")
                for check in result.checks
                if check.name == name
            ]
            found.append(
                Chart(
                    name,
                    f"{name.capitalize()} (cumulative)",
                    charts.line_chart(
                        f"{name.capitalize()} since the start of the period",
                        [(name, xs, ys)],
                        ylabel="count",
                        timestamps=True,
                        limits=expected,
                        step=True,
                        markers=markers,
                    ),
                )
            )
    reconnects = series.get(criteria.RECONNECTS.key, [])
    by_reason: dict[str, list[Series]] = {}
    for one in reconnects:
        by_reason.setdefault(one.labels.get("reason", "?"), []).append(one)
    lines = []
    for reason, group in sorted(by_reason.items()):
        xs, ys = _summed_cumulative(group, window)
        lines.append((reason, xs, ys))
    found.append(
        Chart(
            "reconnects",
            "Unscheduled reconnects (cumulative, by reason)",
            charts.line_chart(
                "Unscheduled reconnects by reason" + ("" if lines else " (none)"),
                lines or [("none", [result.start, result.end], [0, 0])],
                ylabel="count",
                timestamps=True,
                step=True,
                markers=markers,
            ),
        )
    )
    return found


def _period_facts(result: PeriodResult) -> dict[str, str]:
    return {
        "judged": result.judged_text,
        "deployments": str(len(result.deployments)) if result.deployments else "none",
        "profile": result.profile,
        "criteria": result.criteria_set,
        "window": f"{_when(result.start)} .. {_when(result.end)}",
        "resolution": f"{format_number(result.step)} s between points",
    }


DEPLOYMENT_COLUMNS = ["started (UTC)", "finished (UTC)", "kind", "mode", "colors", "status", "deployment"]


def _deployment_rows(deployments: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            _when(float(one["started_at"])),
            _when(float(one["finished_at"])),
            str(one["kind"]),
            str(one["mode"]),
            f"{one['from_color']} -> {one['to_color']} ({one['active_color']} active after)",
            str(one["status"]),
            str(one["deployment_id"]),
        ]
        for one in deployments
    ]


def _deployment_tables(deployments: Sequence[Mapping[str, Any]]) -> list[Table]:
    rows = _deployment_rows(deployments)
    return [Table("Deployments in this period", DEPLOYMENT_COLUMNS, rows)] if rows else []


LATENCY_TITLES = {"event_to_ack": "exchange event -> Kafka ack", "receive_to_ack": "received here -> Kafka ack"}


def _latency_cell(seconds: float | None) -> str:
    return "no acknowledgement" if seconds is None else f"{format_number(1000 * seconds)} ms"


def _latency_tables(result: PeriodResult) -> list[Table]:
    """The period's latency quantiles (reported, not judged); none for a result recorded before they existed."""
    if not result.latency:
        return []
    rows = [
        [LATENCY_TITLES.get(name, name), *(_latency_cell(quantiles.get(q)) for q in ("p50", "p99"))]
        for name, quantiles in result.latency.items()
    ]
    return [Table("Latency (reported, not judged; event -> ack includes the exchange/host clock difference)",
                  ["latency", "p50", "p99"], rows)]


def _subject(result: PeriodResult) -> str:
    return "active streamer" if result.judgement == Judgement.STITCHED.value else result.instance


def daily_report(result: PeriodResult) -> Report:
    reconnect_reasons = (
        increase_by_label(
            result.series.get(criteria.RECONNECTS.key, []), Window(result.start, result.end, result.step), "reason"
        )
        if result.series
        else {}
    )
    return Report(
        "daily",
        f"Daily validation {result.label} — {_subject(result)}",
        result.passed,
        time.time(),
        facts=_period_facts(result),
        checks=list(result.checks),
        tables=[*_latency_tables(result), *_deployment_tables(result.deployments)],
        charts=_period_charts(result, False),
        notes=list(result.notes),
        data={"result": result.to_dict(), "reconnects_by_reason": reconnect_reasons},
    )


def monthly_report(result: PeriodResult) -> Report:
    return Report(
        "monthly",
        f"30-day stability {result.label} — {_subject(result)}",
        result.passed,
        time.time(),
        facts=_period_facts(result),
        checks=list(result.checks),
        tables=_deployment_tables(result.deployments),
        charts=_period_charts(result, True),
        notes=list(result.notes),
        data={"result": result.to_dict()},
    )


def _day_value(day: PeriodResult, name: str) -> CheckResult | None:
    return next((check for check in day.checks if check.name == name), None)


def _observed_or_zero(check: CheckResult | None) -> float:
    if check is None or check.observed is None:
        return 0.0
    return check.observed


def _matrix_cell(check: CheckResult, column: CheckResult) -> str:
    """Observed value, FAIL marked; the day's own threshold when it differs from the column's (a day with a
    switch of the active color allows one scheduled event more or fewer)."""
    text = ("" if check.passed else "FAIL ") + check.observed_text()
    own = check.threshold_text()
    return text if own == column.threshold_text() else f"{text} ({own})"


def weekly_report(days: Sequence[PeriodResult]) -> Report:
    """The 7-day validation report (the seed's "report on day 7"): one row per day, every daily check."""
    if not days:
        raise ValueError("the weekly report needs at least one validated day")
    # Each column names its threshold (that of a day without a switch), so every cell reads as observed vs
    # threshold; a day whose own threshold differs shows it in its cell.
    reference_day = next((day for day in days if not day.switches), days[0])
    names = [check.name for check in reference_day.checks]
    columns = [f"{check.name} ({check.threshold_text()})" for check in reference_day.checks]
    matrix = Table(
        "Daily checks (observed vs the threshold in the column; FAIL marked)",
        ["day", "result", *columns],
        [
            [
                day.label,
                "PASS" if day.passed else "FAIL",
                *[
                    _matrix_cell(check, reference) if check else "-"
                    for check, reference in ((_day_value(day, name), column) for name, column in zip(
                        names, reference_day.checks, strict=True))
                ],
            ]
            for day in days
        ],
    )
    thresholds = Table(
        "Thresholds", ["check", "threshold"], [[check.name, check.threshold_text()] for check in reference_day.checks]
    )
    failed_rows = [
        [day.label, check.name, check.observed_text(), check.threshold_text(), check.evidence]
        for day in days
        for check in day.checks
        if not check.passed
    ]
    tables = [matrix, thresholds]
    if failed_rows:
        tables.append(Table("Failed checks", ["day", "check", "observed", "threshold", "evidence"], failed_rows))
    # A deployment spanning midnight is listed by both days: once here.
    deployments = list({one["deployment_id"]: one for day in days for one in day.deployments}.values())
    tables += _deployment_tables(deployments)
    labels = [day.label for day in days]
    switch_days = [index for index, day in enumerate(days) if day.switches]
    found: list[Chart] = []
    bands = []
    for day in days:
        memory = _day_value(day, "memory_stable")
        if memory and memory.details:
            bands.append((float(memory.details.get("band_low", 0.0)), float(memory.details.get("band_high", 0.0))))
        else:
            bands.append((0.0, 0.0))
    ceiling = _day_value(days[0], "memory_stable")
    found.append(
        Chart(
            "rss_band",
            "RSS band per day (MB)",
            charts.bar_chart(
                "RSS band per day",
                labels,
                [],
                ylabel="MB",
                bands=bands,
                limits=[(ceiling.threshold, f"ceiling {format_number(ceiling.threshold)} MB")] if ceiling else [],
                marked=switch_days,
                marked_label=SWITCH_LABEL,
            ),
        )
    )
    for name, title in (
        ("rotations", "Rotations per day"),
        ("pings", "Pings per day"),
        ("message_rate", "Average message rate per day (msg/s)"),
        ("unscheduled_reconnects", "Unscheduled reconnects per day"),
        ("uptime", "Uptime per day (%)"),
    ):
        values = [_observed_or_zero(_day_value(day, name)) for day in days]
        reference = _day_value(days[0], name)
        limits = [(reference.threshold, reference.threshold_text())] if reference else []
        found.append(
            Chart(
                f"{name}_per_day",
                title,
                charts.bar_chart(
                    title,
                    labels,
                    [(name, values)],
                    ylabel=reference.unit if reference and reference.unit else "count",
                    limits=limits,
                    marked=switch_days,
                    marked_label=SWITCH_LABEL,
                    y_range=_zoom(values, reference.threshold) if name == "uptime" and reference else None,
                ),
            )
        )
    passed = all(day.passed for day in days)
    first, last = days[0], days[-1]
    facts = {
        "judged": first.judged_text,
        "deployments": str(len(deployments)) if deployments else "none",
        "profile": first.profile,
        "days validated": str(len(days)),
        "period": f"{_when(first.start)} .. {_when(last.end)}",
        "failed days": ", ".join(day.label for day in days if not day.passed) or "none",
    }
    notes = [] if len(days) == 7 else [f"Only {len(days)} of 7 days were validated."]
    notes += [f"{day.label}: {note}" for day in days for note in day.notes if _worth_a_weekly_note(day, note)]
    return Report(
        "weekly",
        f"7-day validation {first.label} .. {last.label} — {_subject(first)}",
        passed and len(days) == 7,
        time.time(),
        facts=facts,
        tables=tables,
        charts=found,
        notes=notes,
        data={"days": [day.to_dict() for day in days]},
    )


def soak_report(profile: Mapping[str, Any]) -> Report:
    """The soak report from a memory profile (see k2_ops.validation.memory_profile for the schema)."""
    metadata = profile.get("metadata", {})
    summary = profile.get("summary", {})
    samples = profile.get("samples", [])
    checks = [CheckResult.from_dict(item) for item in profile.get("checks", [])]
    elapsed = [sample["elapsed_seconds"] for sample in samples]
    found: list[Chart] = []
    if samples:
        rss = [sample["rss_bytes"] / MB if sample.get("rss_bytes") is not None else float("nan") for sample in samples]
        found.append(
            Chart(
                "rss",
                "RSS over the soak (MB)",
                charts.line_chart("RSS over the soak", [("RSS", elapsed, rss)], ylabel="MB", xlabel="elapsed s"),
            )
        )
        scores = [
            sample.get("leak_score") if sample.get("leak_score") is not None else float("nan") for sample in samples
        ]
        found.append(
            Chart(
                "leak_score",
                "Leak detection score",
                charts.line_chart(
                    "memory_leak_detection_score",
                    [("score", elapsed, scores)],
                    ylabel="score",
                    xlabel="elapsed s",
                    limits=[(0.8, "alert 0.8"), (0.5, "30-day limit 0.5")],
                ),
            )
        )
        rates_x, rates_y = [], []
        for before, after in itertools.pairwise(samples):
            dt = after["elapsed_seconds"] - before["elapsed_seconds"]
            if dt > 0 and after.get("messages") is not None and before.get("messages") is not None:
                rates_x.append(after["elapsed_seconds"])
                rates_y.append(max(0.0, after["messages"] - before["messages"]) / dt)
        found.append(
            Chart(
                "message_rate",
                "Message rate (msg/s)",
                charts.line_chart(
                    "Message rate",
                    [("received", rates_x, rates_y)],
                    ylabel="msg/s",
                    xlabel="elapsed s",
                    limits=[(10.0, "minimum 10 msg/s")],
                ),
            )
        )
        for key, title in (("rotations", "Rotations"), ("pings", "Pings"), ("reconnects", "Unscheduled reconnects")):
            found.append(
                Chart(
                    key,
                    f"{title} (cumulative)",
                    charts.line_chart(
                        f"{title} since start",
                        [(key, elapsed, [sample.get(key) or 0 for sample in samples])],
                        ylabel="count",
                        xlabel="elapsed s",
                        step=True,
                    ),
                )
            )
    facts = {
        "profile": str(metadata.get("profile", {}).get("name", "")),
        "criteria": str(metadata.get("criteria", "")),
        "planned duration": f"{format_number(metadata.get('planned_duration_seconds'))} s",
        "measured duration": f"{format_number(summary.get('duration_seconds'))} s",
        "samples": str(summary.get("samples", len(samples))),
        "RSS start -> end": f"{format_number(summary.get('rss_start_mb'))} -> "
        f"{format_number(summary.get('rss_end_mb'))} MB (growth {format_number(summary.get('rss_growth_mb'))} MB)",
        "messages": f"{format_number(summary.get('messages'))} ({format_number(summary.get('average_rate'))} msg/s)",
        "rotations / pings / reconnects": f"{format_number(summary.get('rotations'))} / "
        f"{format_number(summary.get('pings'))} / "
        f"{format_number(summary.get('reconnects'))}",
        "max leak score": format_number(summary.get("max_leak_score")),
        "streamer": str(metadata.get("metrics_url", "")),
    }
    passed = bool(checks) and all(check.passed for check in checks)
    return Report(
        "soak",
        f"Soak report — {metadata.get('criteria', 'soak')} on profile {metadata.get('profile', {}).get('name', '?')}",
        passed,
        time.time(),
        facts=facts,
        checks=checks,
        charts=found,
        data={"summary": dict(summary), "metadata": dict(metadata)},
    )


def _worth_a_weekly_note(day: PeriodResult, note: str) -> bool:
    """The weekly report repeats a day's notes except the plain "who was active" line of a day with no switch."""
    return bool(day.switches) or not note.startswith("active streamer:")


def _zoom(values: Sequence[float], threshold: float) -> tuple[float, float]:
    """A value axis from just below the lowest value or threshold to just above the highest (percentages)."""
    low = min([*values, threshold])
    return (max(0.0, low - max(0.2, (100.0 - low) * 0.2)), 100.0 + 0.05)
