"""Validations of calendar periods against Prometheus: a day, the 7-day validation, 30-day stability.

These are the calls the Dagster layer makes (one per daily partition, one weekly, one monthly) and the
`k2 validate` command runs. Each returns a `PeriodResult`: the check results, plus the series that were
fetched (report charts use them) and the window. `to_dict()` / `from_dict()` give the JSON a daily
partition stores, which the weekly report reads back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from k2_ops.validation import criteria
from k2_ops.validation.checks import CheckResult
from k2_ops.validation.criteria import (
    DailyThresholds,
    MetricQuery,
    StabilityThresholds,
)
from k2_ops.validation.profiles import PRODUCTION, ValidationProfile
from k2_ops.validation.prometheus import PrometheusClient
from k2_ops.validation.series import Series

CHART_INPUTS: tuple[MetricQuery, ...] = (
    criteria.RSS_MAX,
    criteria.RSS_MIN,
    criteria.MESSAGES,
    criteria.SCHEDULED_ROTATIONS,
    criteria.PINGS,
    criteria.RECONNECTS,
    criteria.LEAK_SCORE_MAX,
)


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
        )


def _run(
    criteria_set: criteria.CriteriaSet,
    prom: PrometheusClient,
    start: float,
    end: float,
    profile: ValidationProfile,
    instance: str,
    scrape_interval: float,
) -> PeriodResult:
    checks, series, window = criteria.evaluate_with_series(
        criteria_set, prom, start, end, instance, scrape_interval=scrape_interval, extra_queries=CHART_INPUTS
    )
    return PeriodResult(
        criteria_set.name,
        instance,
        start,
        end,
        window.step,
        profile.name,
        checks,
        series,
        day_seconds=profile.day_seconds,
    )


def validate_day(
    prom: PrometheusClient,
    day_start: float,
    *,
    profile: ValidationProfile = PRODUCTION,
    instance: str = "blue",
    thresholds: DailyThresholds | None = None,
    scrape_interval: float = 15.0,
) -> PeriodResult:
    """The daily checks over [day_start, day_start + one profile day]."""
    criteria_set = criteria.daily(profile, thresholds or DailyThresholds())
    return _run(criteria_set, prom, day_start, day_start + profile.day_seconds, profile, instance, scrape_interval)


def validate_week(
    prom: PrometheusClient,
    first_day_start: float,
    *,
    days: int = 7,
    profile: ValidationProfile = PRODUCTION,
    instance: str = "blue",
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
    instance: str = "blue",
    thresholds: StabilityThresholds | None = None,
    scrape_interval: float = 15.0,
) -> PeriodResult:
    """The 30-day stability criteria over [start, start + thresholds.days profile days]."""
    criteria_set = criteria.stability_30d(profile, thresholds or StabilityThresholds())
    return _run(criteria_set, prom, start, start + criteria_set.duration_seconds, profile, instance, scrape_interval)


def week_passed(days: Sequence[PeriodResult]) -> bool:
    return bool(days) and all(day.passed for day in days)
