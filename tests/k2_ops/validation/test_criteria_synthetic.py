"""Pure evaluation of every criteria set over synthetic history: each injected fault breaks exactly the
criteria it is designed to break, on exactly its day, and nothing else (no Prometheus here; the same
histories go through a real Prometheus in test_history_prometheus.py)."""

from __future__ import annotations

import dataclasses

import pytest

from k2_ops.validation import criteria
from k2_ops.validation.criteria import evaluate_series, select_series
from k2_ops.validation.profiles import PRODUCTION, ValidationProfile, compressed
from k2_ops.validation.series import Series, Window
from k2_ops.validation.synthetic import Fault, SyntheticError, SyntheticHistory, generate

START = 1_790_000_000.0 // 86_400 * 86_400  # a UTC midnight

# What each fault is designed to break in the daily checks of its day and in the 30-day criteria.
DAILY_EFFECTS = {
    "missing_rotation": {"rotations"},
    "pong_timeout": {"unscheduled_reconnects"},
    "rss_over_ceiling": {"memory_stable"},
    "critical_alert": {"critical_alerts"},
    "leak_alert": {"critical_alerts"},
    "message_loss": set(),
    "kafka_shortfall": set(),
    "outage": {"unscheduled_reconnects", "pings", "uptime"},
}
MONTHLY_EFFECTS = {
    "missing_rotation": {"rotations"},
    "pong_timeout": {"pong_timeouts", "unscheduled_reconnects"},
    "rss_over_ceiling": set(),
    "critical_alert": set(),
    "leak_alert": {"leak_score", "memory_alerts"},
    "message_loss": {"message_loss"},
    "kafka_shortfall": {"kafka_matches_messages"},
    "outage": {"uptime", "unscheduled_reconnects"},
}


def daily_failures(history: SyntheticHistory) -> list[set[str]]:
    raw = generate(history)
    daily = criteria.daily(history.profile)
    failures = []
    for day in range(history.days):
        start, end = history.day_window(day)
        results = evaluate_series(
            daily, select_series(raw, daily.inputs(), start, end), Window(start, end, history.scrape_interval)
        )
        assert [result.name for result in results] == daily.names()
        failures.append({result.name for result in results if not result.passed})
    return failures


def monthly_failures(history: SyntheticHistory, profile: ValidationProfile | None = None) -> set[str]:
    """Failed 30-day criteria; `profile` is the schedule validated against (default: the history's)."""
    raw = generate(history)
    month = criteria.stability_30d(profile or history.profile)
    start, end = history.start, history.start + month.duration_seconds
    results = evaluate_series(
        month, select_series(raw, month.inputs(), start, end), Window(start, end, history.scrape_interval)
    )
    return {result.name for result in results if not result.passed}


def test_a_good_week_passes_every_daily_check_every_day() -> None:
    assert daily_failures(SyntheticHistory(START, 7, "good")) == [set()] * 7


@pytest.mark.parametrize("kind", sorted(DAILY_EFFECTS))
def test_each_fault_breaks_exactly_its_daily_checks_on_its_day(kind: str) -> None:
    history = SyntheticHistory(START, 4, "bad", faults=(Fault(kind, 2),))
    assert daily_failures(history) == [set(), set(), DAILY_EFFECTS[kind], set()]


@pytest.mark.parametrize("kind", sorted(MONTHLY_EFFECTS))
def test_each_fault_breaks_exactly_its_30_day_criteria(kind: str) -> None:
    history = SyntheticHistory(START, 30, "bad", scrape_interval=300.0, faults=(Fault(kind, 11),))
    assert monthly_failures(history) == MONTHLY_EFFECTS[kind]


def test_good_month_passes_and_slow_growth_rate_and_pings_are_caught() -> None:
    good = SyntheticHistory(START, 30, "good", scrape_interval=300.0)
    assert monthly_failures(good) == set()
    assert monthly_failures(dataclasses.replace(good, rss_growth_mb_per_day=4.0)) == {"memory_growth"}
    assert monthly_failures(dataclasses.replace(good, rate_per_symbol=4.0)) == {"message_rate"}
    # A streamer pinging every 182 s instead of 180 s: 14,241 pings, outside 14,400 +- 144.
    slow_pings = dataclasses.replace(good, profile=dataclasses.replace(PRODUCTION, ping_interval_seconds=182.0))
    assert monthly_failures(slow_pings, PRODUCTION) == {"pings"}


def test_the_daily_set_on_a_compressed_clock() -> None:
    """The same model on a 240 s day: 6 rotations and 480 pings per day, sampled every second."""
    profile = compressed(240.0)
    history = SyntheticHistory(
        START,
        3,
        "ci",
        profile=profile,
        scrape_interval=0.25,
        lead_in_seconds=profile.hours(1),
        faults=(Fault("missing_rotation", 1),),
    )
    assert daily_failures(history) == [set(), {"rotations"}, set()]


def soak_series(history: SyntheticHistory, duration: float) -> tuple[dict[str, list[Series]], Window]:
    raw = generate(history)
    soak = criteria.soak_24h(history.profile, duration_seconds=duration)
    start = history.process_start
    window = Window(start, start + duration + history.scrape_interval, history.scrape_interval, counters_from_zero=True)
    return select_series(raw, soak.inputs(), window.start, window.end), window


def test_soak_criteria_over_a_synthetic_day() -> None:
    history = SyntheticHistory(START, 2, "soak")
    series, window = soak_series(history, 86_400.0)
    results = {r.name: r for r in evaluate_series(criteria.soak_24h(PRODUCTION), series, window)}
    assert all(r.passed for r in results.values()), [r.evidence for r in results.values() if not r.passed]
    assert results["runs_full_duration"].observed >= 86_400
    assert results["message_rate"].observed == pytest.approx(24.0, rel=0.05)


def test_12h_validation_over_synthetic_history_and_its_failures() -> None:
    history = SyntheticHistory(START, 1, "v12", lead_in_seconds=3_600.0)
    raw = generate(history)
    v12 = criteria.validation_12h(PRODUCTION)
    start = history.process_start
    window = Window(start, start + 12 * 3_600 + 60, 60.0, counters_from_zero=True)
    results = evaluate_series(v12, select_series(raw, v12.inputs(), window.start, window.end), window)
    assert {r.name: r.passed for r in results} == dict.fromkeys(v12.names(), True)
    assert {r.name: r.observed for r in results}["rotations"] == 3
    # A restart half-way (start time changes, counters reset) fails no_crash only.
    restarted = []
    for one in raw:
        if one.labels["__name__"] == "process_start_time_seconds":
            one = Series(one.labels, [(t, v if t < start + 6 * 3_600 else v + 21_600) for t, v in one.points])
        restarted.append(one)
    results = evaluate_series(v12, select_series(restarted, v12.inputs(), window.start, window.end), window)
    assert {r.name for r in results if not r.passed} == {"no_crash"}


def test_no_crash_fails_when_the_process_is_gone_before_the_end() -> None:
    window = Window(0.0, 1_000.0, 10.0)
    gone_early = {criteria.START_TIME.key: [Series({}, [(t, 5.0) for t in range(0, 600, 10)])]}
    result = criteria.validation_12h(PRODUCTION).get("no_crash").evaluate(gone_early, window)
    assert not result.passed and "last seen at +590 s" in result.evidence


def test_a_required_input_without_data_never_passes() -> None:
    window = Window(0.0, 100.0, 10.0)
    result = criteria.daily(PRODUCTION).get("pings").evaluate({}, window)
    assert not result.passed and result.observed is None


def test_faults_outside_the_history_are_refused() -> None:
    with pytest.raises(SyntheticError, match="outside"):
        SyntheticHistory(START, 7, "x", faults=(Fault("outage", 7),))
    with pytest.raises(SyntheticError, match="unknown fault"):
        Fault("meteor", 1)
