"""Synthetic production history backfilled into a real Prometheus (promtool tsdb create-blocks-from
openmetrics): the daily checks of a good week all pass; a bad week fails exactly the injected checks on
exactly the injected days; the same for the 30-day criteria."""

from __future__ import annotations

import pytest

from k2_ops.validation import criteria, periods
from k2_ops.validation.profiles import PRODUCTION

from .conftest import MONTH_SCRAPE_SECONDS, WEEK_SCRAPE_SECONDS, HistoryPrometheus

pytestmark = pytest.mark.slow

DAILY_CHECKS = criteria.daily(PRODUCTION).names()
MONTHLY_CRITERIA = criteria.stability_30d(PRODUCTION).names()


def failures_by_day(history_prometheus: HistoryPrometheus, instance: str) -> list[set[str]]:
    days = periods.validate_week(
        history_prometheus.client, history_prometheus.week_start, instance=instance, scrape_interval=WEEK_SCRAPE_SECONDS
    )
    assert [day.start for day in days] == [history_prometheus.week_start + index * 86_400 for index in range(7)]
    for day in days:
        assert [check.name for check in day.checks] == DAILY_CHECKS
        assert all(check.observed is not None for check in day.checks), day.to_dict()
    return [set(day.failed()) for day in days]


def test_backfill_wrote_blocks_before_now(history_prometheus: HistoryPrometheus) -> None:
    assert history_prometheus.backfill.blocks >= 7 * 12  # 2 h blocks over at least a week
    # The history (a week and the hour of lead-in before it) starts up to 8 d 4 h before now (its last day ends
    # 3 to 27 h ago): a 9-day window holds all of it at any time of day (8 d cut off the lead-in after 23:00 UTC).
    count = history_prometheus.client.query_value('count_over_time(binance_pings_sent_total{instance="good-week"}[9d])')
    assert count == pytest.approx((7 * 86_400 + 3_600) / WEEK_SCRAPE_SECONDS + 1, abs=1)


def test_good_week_passes_all_daily_checks_on_all_seven_days(history_prometheus: HistoryPrometheus) -> None:
    assert failures_by_day(history_prometheus, "good-week") == [set()] * 7


def test_bad_week_fails_exactly_the_injected_checks_on_the_injected_days(history_prometheus: HistoryPrometheus) -> None:
    assert failures_by_day(history_prometheus, "bad-week") == [
        set(),
        {"rotations"},
        set(),
        {"unscheduled_reconnects"},
        set(),
        {"memory_stable"},
        set(),
    ]


def test_bad_week_measures_what_went_wrong(history_prometheus: HistoryPrometheus) -> None:
    client, start = history_prometheus.client, history_prometheus.week_start

    def day(index: int) -> periods.PeriodResult:
        return periods.validate_day(
            client, start + index * 86_400, instance="bad-week", scrape_interval=WEEK_SCRAPE_SECONDS
        )

    assert day(1).check("rotations").observed == 5
    assert day(0).check("rotations").observed == 6
    assert day(0).check("pings").observed == 480
    reconnects = day(3).check("unscheduled_reconnects")
    assert reconnects.observed == 1 and "pong_timeout: 1" in reconnects.evidence
    memory = day(5).check("memory_stable")
    assert 300 <= memory.observed < 302 and memory.threshold == 250
    assert memory.details["band_low"] < 235  # the band observed is reported, not just the peak


def test_a_critical_alert_fails_that_day_through_the_alerts_series(history_prometheus: HistoryPrometheus) -> None:
    assert failures_by_day(history_prometheus, "alert-week") == [
        set(),
        set(),
        {"critical_alerts"},
        set(),
        set(),
        set(),
        set(),
    ]
    names = history_prometheus.client.firing_alert_names(
        history_prometheus.week_start, history_prometheus.week_start + 7 * 86_400, matchers={"instance": "alert-week"}
    )
    assert names == {"KafkaProduceErrors"}


def test_good_month_passes_every_30_day_criterion(history_prometheus: HistoryPrometheus) -> None:
    month = periods.validate_month(
        history_prometheus.client,
        history_prometheus.month_start,
        instance="good-month",
        scrape_interval=MONTH_SCRAPE_SECONDS,
    )
    assert [check.name for check in month.checks] == MONTHLY_CRITERIA
    assert month.passed, [check.evidence for check in month.checks if not check.passed]
    assert month.check("rotations").observed == 180
    assert month.check("pings").observed == 14_400
    assert month.check("uptime").observed == pytest.approx(100.0)
    # 30 days in whole steps under Prometheus' 11,000-point limit.
    assert (month.end - month.start) / month.step + 1 <= 11_000


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        (
            "bad-month",
            {"pong_timeouts", "unscheduled_reconnects", "kafka_matches_messages", "leak_score", "memory_alerts"},
        ),
        ("worse-month", {"rotations", "uptime", "unscheduled_reconnects", "message_loss", "memory_growth"}),
    ],
)
def test_bad_months_fail_exactly_the_injected_criteria(
    history_prometheus: HistoryPrometheus, instance: str, expected: set[str]
) -> None:
    month = periods.validate_month(
        history_prometheus.client,
        history_prometheus.month_start,
        instance=instance,
        scrape_interval=MONTH_SCRAPE_SECONDS,
    )
    assert set(month.failed()) == expected
    if instance == "worse-month":
        assert month.check("rotations").observed == 179
        assert 99.8 < month.check("uptime").observed < 99.9
        loss = month.check("message_loss")
        assert loss.observed == 3 and "binance_gap_unrepaired_messages_total: 3" in loss.evidence
