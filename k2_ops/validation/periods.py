"""Validations of calendar periods against Prometheus: a day, the 7-day validation, 30-day stability.

These are the calls the Dagster layer makes (one per daily partition, one weekly, one monthly) and the
`k2 validate` command runs. Each returns a `PeriodResult`: the check results, plus the series that were
fetched (report charts use them) and the window. `to_dict()` / `from_dict()` give the JSON a daily
partition stores, which the weekly report reads back.

What is judged (`Subject`): the active streamer across cutovers, stitched from every color's series with
the deployment history's timeline (`timeline.py`), or one color's series. `Subject.from_history` picks the
first when the history exists and says so plainly when it falls back to one color.

When the market is split into shards, each shard is a streamer of its own (its instances are `s<i>-<color>`,
its own deployment history): a Subject carries its shard and reads only that shard's series, and
`ShardedPeriod` judges the market in total: it passes only when every shard passes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.model import COLORS, instance_name
from k2_ops.validation import criteria
from k2_ops.validation.checks import CheckResult, format_number, utc_text
from k2_ops.validation.criteria import (
    DailyThresholds,
    MetricQuery,
    StabilityThresholds,
)
from k2_ops.validation.profiles import PRODUCTION, ValidationProfile
from k2_ops.validation.prometheus import PrometheusClient
from k2_ops.validation.series import Series, Window
from k2_ops.validation.timeline import (
    ACTIVE_INSTANCE,
    ActiveTimeline,
    Judgement,
    inactive_production,
    stitch,
)
from streamer.shards import WHOLE_MARKET, Shard

CHART_INPUTS: tuple[MetricQuery, ...] = (
    criteria.RSS_MAX,
    criteria.RSS_MIN,
    criteria.MESSAGES,
    criteria.SCHEDULED_ROTATIONS,
    criteria.PINGS,
    criteria.RECONNECTS,
    criteria.LEAK_SCORE_MAX,
)


@dataclass(frozen=True)
class Subject:
    """What a period judges: the active streamer along `timeline` (stitched), or the color `instance`.

    `note` says why a per-color judgement was made when it stands in for a stitched one (history missing).
    """

    instance: str | None = None
    timeline: ActiveTimeline | None = None
    note: str = ""
    shard: Shard = WHOLE_MARKET

    def __post_init__(self) -> None:
        if (self.instance is None) == (self.timeline is None):
            raise ValueError("a Subject is either one instance or a timeline, not both or neither")

    @property
    def judgement(self) -> Judgement:
        return Judgement.STITCHED if self.timeline is not None else Judgement.PER_COLOR

    @classmethod
    def color(cls, instance: str, note: str = "", shard: Shard = WHOLE_MARKET) -> Subject:
        return cls(instance=instance, note=note, shard=shard)

    @classmethod
    def from_history(cls, history: DeploymentHistory, instance: str = "", shard: Shard = WHOLE_MARKET) -> Subject:
        """The stitched active streamer when the history exists; `instance` (a color) when asked for;
        without a history, the active color alone with a note that says so. `history` is the shard's own."""
        if instance:
            return cls.color(instance, shard=shard)
        if history.exists():
            return cls(timeline=ActiveTimeline.from_records(history.records()), shard=shard)
        color = history.active_color()
        return cls.color(
            color,
            note=f"deployment history missing ({history.path} not found): judged per color, {color} only; "
            "a cutover or rollback in this period would show as that color's outage",
            shard=shard,
        )

    def instance_label(self, color: str) -> str:
        """The Prometheus `instance` of `color` in this subject's shard (a name that is not a color, such as a
        soak's, is used as it is)."""
        return instance_name(color, self.shard) if color in COLORS else color


@dataclass
class PeriodResult:
    criteria_set: str
    instance: str
    start: float
    end: float
    step: float
    profile: str
    checks: list[CheckResult]
    series: dict[str, list[Series]] = field(default_factory=dict, repr=False)
    day_seconds: float = 86_400.0  # the profile's day (report charts bucket per day)
    judgement: str = Judgement.PER_COLOR.value
    # Switches of the active color inside the period (unix seconds), the deployments that touched it
    # ({"text", "started_at", "finished_at", ...}) and what the report must say about how it was judged.
    switches: list[float] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # "<index>/<count>" when the market is split into shards ("all <count>": every shard combined, see
    # ShardedPeriod.combined); empty for a streamer that covers it alone.
    shard: str = ""
    # Reported, not judged: p50 and p99 of the period per latency histogram ({"event_to_ack": {"p50": s,
    # "p99": s}, "receive_to_ack": {...}}), None where the period holds no acknowledgement.
    latency: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return criteria.all_passed(self.checks)

    @property
    def label(self) -> str:
        """The period as a date (production days) or as seconds (compressed clocks)."""
        if self.profile == PRODUCTION.name:
            first = datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m-%d")
            last = datetime.fromtimestamp(self.end - 1, UTC).strftime("%Y-%m-%d")
            return first if first == last else f"{first} .. {last}"
        return f"{self.start:.0f}-{self.end:.0f}"

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"{self.criteria_set} result has no check {name!r}")

    def failed(self) -> list[str]:
        return [result.name for result in self.checks if not result.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "criteria_set": self.criteria_set,
            "instance": self.instance,
            "start": self.start,
            "end": self.end,
            "step": self.step,
            "profile": self.profile,
            "label": self.label,
            "passed": self.passed,
            "day_seconds": self.day_seconds,
            "judgement": self.judgement,
            "switches": list(self.switches),
            "deployments": list(self.deployments),
            "notes": list(self.notes),
            "shard": self.shard,
            "latency": {name: dict(quantiles) for name, quantiles in self.latency.items()},
            "checks": [result.to_dict() for result in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeriodResult:
        return cls(
            data["criteria_set"],
            data["instance"],
            float(data["start"]),
            float(data["end"]),
            float(data["step"]),
            data["profile"],
            [CheckResult.from_dict(item) for item in data["checks"]],
            day_seconds=float(data.get("day_seconds", 86_400.0)),
            judgement=str(data.get("judgement", Judgement.PER_COLOR.value)),
            switches=[float(t) for t in data.get("switches", [])],
            deployments=list(data.get("deployments", [])),
            notes=list(data.get("notes", [])),
            shard=str(data.get("shard", "")),
            latency={name: dict(quantiles) for name, quantiles in data.get("latency", {}).items()},
        )

    @property
    def judged_text(self) -> str:
        """How the period was judged, for report headers."""
        if self.shard.startswith("all "):
            of_shard = f"the market, every one of {self.shard.removeprefix('all ')} shards: "
        else:
            of_shard = f"shard {self.shard}: " if self.shard else ""
        if self.judgement == Judgement.STITCHED.value:
            return f"{of_shard}active streamer, stitched across deployments"
        return f"{of_shard}{self.instance} only (per color)"


def _run(
    criteria_set: criteria.CriteriaSet,
    prom: PrometheusClient,
    start: float,
    end: float,
    profile: ValidationProfile,
    subject: Subject,
    scrape_interval: float,
) -> PeriodResult:
    shard = "" if subject.shard.whole_market else f"{subject.shard.index}/{subject.shard.count}"
    if subject.timeline is None:
        assert subject.instance is not None
        instance = subject.instance_label(subject.instance)
        checks, series, window = criteria.evaluate_with_series(
            criteria_set, prom, start, end, instance, scrape_interval=scrape_interval, extra_queries=CHART_INPUTS,
        )
        return PeriodResult(
            criteria_set.name, instance, start, end, window.step, profile.name, checks, series,
            day_seconds=profile.day_seconds, notes=[subject.note] if subject.note else [], shard=shard,
            latency=latency_quantiles(prom, start, end, [instance]),
        )
    result = _run_stitched(criteria_set, prom, start, end, profile, subject, scrape_interval)
    instances = [subject.instance_label(color) for color in COLORS]
    return dataclasses.replace(result, shard=shard, latency=latency_quantiles(prom, start, end, instances))


LATENCY_HISTOGRAMS = {"event_to_ack": "binance_event_to_ack_seconds",
                      "receive_to_ack": "binance_receive_to_ack_seconds"}


def latency_quantiles(prom: PrometheusClient, start: float, end: float,
                      instances: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """p50 and p99 over [start, end] of each latency histogram, every stream kind and the given instances
    together (the colors of a stitched period: only the producing one acknowledges)."""
    selector = "|".join(instances)
    seconds = max(1, round(end - start))
    figures: dict[str, dict[str, float | None]] = {}
    for name, metric in LATENCY_HISTOGRAMS.items():
        figures[name] = {}
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            promql = (f'histogram_quantile({q}, sum by (le) (increase({metric}_bucket{{instance=~"{selector}"}}'
                      f'[{seconds}s])))')
            series = prom.query(promql, at=end)
            value = series[0].points[-1][1] if series else math.nan
            figures[name][label] = value if math.isfinite(value) else None
    return figures


def stitched_queries(criteria_set: criteria.CriteriaSet) -> dict[str, MetricQuery]:
    """What a stitched period reads: the set's inputs, the chart inputs and Kafka deliveries (overlaps)."""
    return {**criteria_set.inputs(), **{query.key: query for query in (*CHART_INPUTS, criteria.PRODUCED)}}


def _run_stitched(
    criteria_set: criteria.CriteriaSet,
    prom: PrometheusClient,
    start: float,
    end: float,
    profile: ValidationProfile,
    subject: Subject,
    scrape_interval: float,
) -> PeriodResult:
    """Every color's series of the subject's shard fetched, then `judge_stitched` (which knows colors)."""
    assert subject.timeline is not None
    window, range_seconds = criteria.query_window(start, end, scrape_interval)
    queries = stitched_queries(criteria_set)
    colors = {subject.instance_label(color): color for color in COLORS}
    raw = criteria.fetch_series(prom, list(queries.values()), window, range_seconds, list(colors))
    by_color = {key: [_as_color(one, colors) for one in series] for key, series in raw.items()}
    return judge_stitched(criteria_set, by_color, subject.timeline, window, profile)


def _as_color(series: Series, colors: Mapping[str, str]) -> Series:
    instance = series.labels.get("instance")
    if instance is None or instance not in colors:
        return series
    return Series({**series.labels, "instance": colors[instance]}, series.points)


def judge_stitched(
    criteria_set: criteria.CriteriaSet,
    raw: Mapping[str, Sequence[Series]],
    timeline: ActiveTimeline,
    window: Window,
    profile: ValidationProfile,
) -> PeriodResult:
    """Pure: every color's series (keyed like `stitched_queries`) stitched along the timeline, evaluated."""
    switches = timeline.switches_between(window.start, window.end)
    window = dataclasses.replace(window, switches=tuple(switch.at for switch in switches))
    queries = stitched_queries(criteria_set)
    series = {key: stitch(raw.get(key, []), timeline, query.series_kind) for key, query in queries.items()}
    checks = criteria.evaluate_series(criteria_set, series, window)
    return PeriodResult(
        criteria_set.name, ACTIVE_INSTANCE, window.start, window.end, window.step, profile.name, checks, series,
        day_seconds=profile.day_seconds, judgement=Judgement.STITCHED.value,
        switches=[switch.at for switch in switches],
        deployments=[one.to_dict() for one in timeline.deployments_between(window.start, window.end)],
        notes=_stitched_notes(timeline, list(raw.get(criteria.PRODUCED.key, [])), window),
    )


def _stitched_notes(timeline: ActiveTimeline, produced: list[Series], window: Window) -> list[str]:
    """What the report says about a stitched period: who was active when, overlaps, anything unexpected."""
    spans = timeline.spans(window.start, window.end)
    stretches = [f"{color} {utc_text(begin)} - {utc_text(finish)}" for begin, finish, color in spans]
    notes = ["active streamer: " + "; ".join(stretches)]
    notes += [
        f"switch {switch.from_color} -> {switch.to_color} at {utc_text(switch.at)} placed at the end of "
        f"deployment {switch.deployment_id} (its record has no switch instant)"
        for switch in timeline.switches_between(window.start, window.end)
        if switch.approximate
    ]
    production = inactive_production(produced, timeline, window.start, window.end, 2 * window.step)
    for overlap in timeline.overlaps_between(window.start, window.end):
        amount = sum(production.in_overlaps.values())
        notes.append(
            f"dual-mode overlap (deliberate) in deployment {overlap.deployment_id}: both colors produced for "
            f"{format_number(overlap.seconds)} s, {utc_text(overlap.start)} - {utc_text(overlap.end)}; the "
            f"non-active color delivered {format_number(amount)} messages to Kafka meanwhile, which consumers "
            "dedupe on (symbol, trade id); counted once here, from the active color"
        )
    for color, amount in sorted(production.outside.items()):
        notes.append(
            f"unexpected: {color} delivered {format_number(amount)} messages to Kafka while not the active color "
            "and outside any dual-mode overlap (two producers: Kafka holds duplicates)"
        )
    return notes


def validate_day(
    prom: PrometheusClient,
    day_start: float,
    *,
    profile: ValidationProfile = PRODUCTION,
    instance: str | Subject = "blue",
    thresholds: DailyThresholds | None = None,
    scrape_interval: float = 15.0,
) -> PeriodResult:
    """The daily checks over [day_start, day_start + one profile day], of one color or a `Subject`."""
    criteria_set = criteria.daily(profile, thresholds or DailyThresholds())
    return _run(
        criteria_set, prom, day_start, day_start + profile.day_seconds, profile, _subject(instance), scrape_interval
    )


def validate_week(
    prom: PrometheusClient,
    first_day_start: float,
    *,
    days: int = 7,
    profile: ValidationProfile = PRODUCTION,
    instance: str | Subject = "blue",
    thresholds: DailyThresholds | None = None,
    scrape_interval: float = 15.0,
) -> list[PeriodResult]:
    """The 7-day validation: the daily checks of each day, in order."""
    return [
        validate_day(
            prom,
            first_day_start + index * profile.day_seconds,
            profile=profile,
            instance=instance,
            thresholds=thresholds,
            scrape_interval=scrape_interval,
        )
        for index in range(days)
    ]


def validate_month(
    prom: PrometheusClient,
    start: float,
    *,
    profile: ValidationProfile = PRODUCTION,
    instance: str | Subject = "blue",
    thresholds: StabilityThresholds | None = None,
    scrape_interval: float = 15.0,
) -> PeriodResult:
    """The 30-day stability criteria over [start, start + thresholds.days profile days]."""
    criteria_set = criteria.stability_30d(profile, thresholds or StabilityThresholds())
    return _run(
        criteria_set, prom, start, start + criteria_set.duration_seconds, profile, _subject(instance), scrape_interval
    )


def _subject(instance: str | Subject) -> Subject:
    return instance if isinstance(instance, Subject) else Subject.color(instance)


def week_passed(days: Sequence[PeriodResult]) -> bool:
    return bool(days) and all(day.passed for day in days)


@dataclass(frozen=True)
class ShardedPeriod:
    """One period of a market split into shards: each shard judged on its own (its results, in day order),
    and the market in total, which passes only when every shard passes."""

    shards: tuple[tuple[Shard, tuple[PeriodResult, ...]], ...]

    @property
    def passed(self) -> bool:
        return bool(self.shards) and all(result.passed for _, results in self.shards for result in results)

    def failures(self) -> list[str]:
        """`shard <i>/<n> <period>: <failed checks>` for every failed shard period."""
        return [
            f"shard {shard.index}/{shard.count} {result.label}: {', '.join(result.failed())}"
            for shard, results in self.shards
            for result in results
            if not result.passed
        ]

    def combined(self, position: int = 0) -> PeriodResult:
        """The market's result for each shard's period at `position` (the day of a week, or the only one): a
        check passes when it passed in every shard, and shows the first shard where it failed (else shard
        0's figures); evidence and details name every shard's verdict. Charts are per shard (no series)."""
        results = [(shard, results[position]) for shard, results in self.shards]
        first_shard, first = results[0]
        checks = []
        for index, check in enumerate(first.checks):
            per_shard = [(shard, result.checks[index]) for shard, result in results]
            failing = [(shard, one) for shard, one in per_shard if not one.passed]
            shown_shard, shown = failing[0] if failing else (first_shard, check)
            verdicts = ", ".join(f"{shard.index}/{shard.count} {'pass' if one.passed else 'FAIL'}"
                                 for shard, one in per_shard)
            checks.append(dataclasses.replace(
                shown, passed=not failing,
                evidence=f"shard {shown_shard.index}/{shown_shard.count}: {shown.evidence} (shards: {verdicts})",
                details={**shown.details, "shards": {f"{s.index}/{s.count}": one.passed for s, one in per_shard}},
            ))
        return dataclasses.replace(
            first, instance="market", checks=checks, series={}, shard=f"all {len(results)}",
            switches=sorted(t for _, result in results for t in result.switches),
            deployments=[{**d, "text": f"shard {s.index}/{s.count}: {d['text']}"}
                         for s, result in results for d in result.deployments],
            notes=[f"shard {s.index}/{s.count}: {note}" for s, result in results for note in result.notes],
            latency=_worst_latency([result.latency for _, result in results]),
        )


def _worst_latency(figures: Sequence[Mapping[str, Mapping[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    """Each quantile of the slowest shard (a market is as late as its slowest part)."""
    worst: dict[str, dict[str, float | None]] = {}
    for one in figures:
        for name, quantiles in one.items():
            for label, value in quantiles.items():
                known = [v for v in (worst.setdefault(name, {}).get(label), value) if v is not None]
                worst[name][label] = max(known) if known else None
    return worst
