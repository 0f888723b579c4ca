"""Every check kind at, just below and just above its threshold, plus missing data."""

from __future__ import annotations

import pytest

from k2_ops.validation import checks
from k2_ops.validation.checks import CheckResult
from k2_ops.validation.series import Series, Window

DAY = Window(0.0, 86_400.0, 60.0)


def gauge(values: list[float], step: float = 60.0, start: float = 0.0) -> Series:
    return Series({"__name__": "g"}, [(start + index * step, value) for index, value in enumerate(values)])


def counter_with_events(event_times: list[float], window: Window = DAY, labels: dict[str, str] | None = None) -> Series:
    """A counter sampled every window.step that counts events at the given times."""
    points = []
    t = window.start
    while t <= window.end:
        points.append((t, float(sum(1 for event in event_times if event <= t))))
        t += window.step
    return Series(labels or {"__name__": "c_total"}, points)


def linear_rss(start_mb: float, end_mb: float, points: int = 1441) -> Series:
    step = 86_400.0 / (points - 1)
    return gauge([(start_mb + (end_mb - start_mb) * index / (points - 1)) * 1e6 for index in range(points)], step)


# --- growth -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("growth_mb", "passes"), [(49.0, True), (49.9, True), (50.0, False), (50.5, False)])
def test_growth_passes_strictly_below_the_limit(growth_mb: float, passes: bool) -> None:
    # Flat edges so the medians are exactly the start and end levels.
    values = [200e6] * 100 + [(200 + growth_mb) * 1e6] * 100
    result = checks.growth("memory_growth", [gauge(values, 432.0)], DAY, 50.0)
    assert result.observed == pytest.approx(growth_mb)
    assert result.passed is passes
    assert (result.threshold, result.unit, result.comparator) == (50.0, "MB", "<")


def test_growth_uses_edge_medians_so_one_spike_does_not_decide() -> None:
    values = [200e6] * 200
    values[-1] = 400e6  # a single spike at the very end
    result = checks.growth("g", [gauge(values, 432.0)], DAY, 50.0)
    assert result.observed == pytest.approx(0.0)
    assert result.passed
    assert result.details["peak"] == pytest.approx(400.0)


def test_growth_skips_the_warmup() -> None:
    # 100 MB of start-up allocations over the first 3 hours, then flat.
    values = [(100 + min(index, 180) * 100 / 180) * 1e6 for index in range(1441)]
    assert not checks.growth("g", [gauge(values)], DAY, 50.0).passed
    after_warmup = checks.growth("g", [gauge(values)], DAY, 50.0, warmup_seconds=3 * 3_600.0 + 60)
    assert after_warmup.passed and after_warmup.observed == pytest.approx(0.0)


def test_growth_without_data_fails() -> None:
    result = checks.growth("g", [], DAY, 50.0)
    assert not result.passed and result.observed is None and "no data" in result.evidence


def test_growth_of_a_steady_leak_is_measured() -> None:
    result = checks.growth("g", [linear_rss(200, 300)], DAY, 50.0, edge_fraction=0.0)
    assert result.observed == pytest.approx(100.0)
    assert not result.passed


# --- value_range --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("peak_mb", "passes"), [(249.0, True), (250.0, True), (250.01, False), (300.0, False)])
def test_value_range_ceiling_is_inclusive(peak_mb: float, passes: bool) -> None:
    result = checks.value_range(
        "memory_stable", [gauge([210e6, peak_mb * 1e6, 220e6])], high=250.0, unit="MB", scale=1e6, what="RSS"
    )
    assert result.passed is passes
    assert result.observed == pytest.approx(peak_mb)
    assert result.details["band_low"] == pytest.approx(210.0)
    assert "band observed 210 - " in result.evidence


@pytest.mark.parametrize(("score", "passes"), [(0.4999, True), (0.5, False), (0.5001, False)])
def test_value_range_strict_ceiling(score: float, passes: bool) -> None:
    result = checks.value_range("leak_score", [gauge([0.1, score])], high=0.5, strict_high=True)
    assert result.passed is passes
    assert result.comparator == "<"


def test_value_range_band_with_floor_reports_the_violating_side() -> None:
    below = checks.value_range("band", [gauge([199e6, 230e6])], low=200.0, high=250.0, unit="MB", scale=1e6)
    assert not below.passed and below.observed == pytest.approx(199.0) and below.comparator == "in"
    inside = checks.value_range("band", [gauge([200e6, 250e6])], low=200.0, high=250.0, unit="MB", scale=1e6)
    assert inside.passed and inside.threshold_text() == "200 - 250 MB"


def test_value_range_band_series_widen_the_report_only() -> None:
    result = checks.value_range(
        "m", [gauge([220e6, 240e6])], high=250.0, scale=1e6, unit="MB", band_series=[gauge([180e6, 200e6])]
    )
    assert result.passed
    assert result.details["band_low"] == pytest.approx(180.0)


def test_value_range_needs_a_bound_and_data() -> None:
    with pytest.raises(ValueError):
        checks.value_range("x", [gauge([1.0])])
    assert not checks.value_range("x", [], high=1.0).passed


# --- count_per_period ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rotations", "passes"), [(5, False), (6, True), (7, False)])
def test_count_per_period_exact(rotations: int, passes: bool) -> None:
    events = [1_000.0 + index * 80_000 / rotations for index in range(rotations)]
    result = checks.count_per_period("rotations", [counter_with_events(events)], DAY, expected=6)
    assert result.observed == rotations
    assert result.passed is passes
    assert result.threshold_text() == "= 6"


@pytest.mark.parametrize(("pings", "passes"), [(474, False), (475, True), (480, True), (485, True), (486, False)])
def test_count_per_period_with_tolerance(pings: int, passes: bool) -> None:
    events = [10.0 + index * (86_000 / pings) for index in range(pings)]
    result = checks.count_per_period("pings", [counter_with_events(events)], DAY, expected=480, tolerance=5)
    assert result.observed == pings
    assert result.passed is passes


def test_count_per_period_counts_across_a_restart() -> None:
    # 3 events, restart (counter back to 0), 3 more events.
    points = [(0.0, 10.0), (100.0, 13.0), (200.0, 0.0), (300.0, 3.0)]
    window = Window(0.0, 300.0, 100.0)
    result = checks.count_per_period("c", [Series({}, points)], window, expected=6)
    assert result.observed == 6 and result.passed


def test_count_per_period_absent_series() -> None:
    assert not checks.count_per_period("c", [], DAY, expected=6).passed
    absent_zero = checks.count_per_period("c", [], DAY, expected=0, absent_is_zero=True)
    assert absent_zero.passed and absent_zero.observed == 0


@pytest.mark.parametrize(("drops", "passes"), [(0, True), (9, True), (10, False)])
def test_count_at_most(drops: int, passes: bool) -> None:
    events = [100.0 * (index + 1) for index in range(drops)]
    series = [counter_with_events(events, labels={"__name__": "r", "reason": "health_timeout"})]
    result = checks.count_at_most("connection_drops", series, DAY, maximum=9, by_label="reason")
    assert result.passed is passes
    assert result.observed == drops
    if drops:
        assert f"health_timeout: {drops}" in result.evidence


# --- rate ---------------------------------------------------------------------------------------------


def messages(rate_per_second: float, window: Window = DAY) -> Series:
    points = []
    t = window.start
    while t <= window.end:
        points.append((t, rate_per_second * (t - window.start)))
        t += window.step
    return Series({"__name__": "m_total"}, points)


@pytest.mark.parametrize(("rate", "passes"), [(9.99, False), (10.0, False), (10.01, True), (50.0, True)])
def test_rate_average_must_exceed_the_minimum(rate: float, passes: bool) -> None:
    result = checks.rate("message_rate", [messages(rate)], DAY, min_rate=10.0)
    assert result.observed == pytest.approx(rate)
    assert result.passed is passes


def test_rate_sums_series_and_sustained_catches_a_quiet_hour() -> None:
    busy = messages(20.0)
    # Second series: 5 msg/s except nothing at all between 10:00 and 11:00.
    points = []
    total = 0.0
    for t in range(0, 86_401, 60):
        if t and not 36_000 < t <= 39_600:
            total += 5 * 60
        points.append((float(t), total))
    quiet = Series({"__name__": "m_total", "symbol": "eth"}, points)
    average = checks.rate("r", [busy, quiet], DAY, min_rate=10.0)
    assert average.passed and average.observed == pytest.approx(20 + 5 * 23 / 24)
    sustained = checks.rate("r", [quiet], DAY, min_rate=1.0, sustained_seconds=3_600.0)
    assert not sustained.passed
    assert sustained.observed == pytest.approx(0.0)
    assert "+36,000 s" in sustained.evidence
    steady = checks.rate("r", [busy], DAY, min_rate=10.0, sustained_seconds=3_600.0)
    assert steady.passed and steady.observed == pytest.approx(20.0)


def test_rate_without_series_fails() -> None:
    assert not checks.rate("r", [], DAY, min_rate=10.0).passed


# --- zero_events --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("events", "passes"), [(0, True), (1, False), (3, False)])
def test_zero_events_on_counters(events: int, passes: bool) -> None:
    series = [counter_with_events([1_000.0 * (index + 1) for index in range(events)])]
    result = checks.zero_events("pong_timeouts", series, DAY)
    assert result.passed is passes and result.observed == events


def test_zero_events_on_gauge_changes_detects_a_restart() -> None:
    same = gauge([1_700_000_000.0] * 10)
    restarted = gauge([1_700_000_000.0] * 5 + [1_700_050_000.0] * 5)
    assert checks.zero_events("no_crash", [same], DAY, count_as="changes").passed
    result = checks.zero_events("no_crash", [restarted], DAY, count_as="changes")
    assert not result.passed and result.observed == 1


def test_zero_events_on_active_series_lists_alert_names() -> None:
    firing = Series({"alertname": "BinanceStreamDown"}, [(100.0, 1.0), (160.0, 1.0)])
    resolved_earlier = Series({"alertname": "KafkaProduceErrors"}, [(100.0, 0.0)])
    result = checks.zero_events(
        "critical_alerts", [firing, resolved_earlier], DAY, count_as="active", by_label="alertname"
    )
    assert not result.passed and result.observed == 1
    assert "BinanceStreamDown: 1" in result.evidence
    assert checks.zero_events("critical_alerts", [], DAY, count_as="active").passed


def test_zero_events_absent_counter() -> None:
    assert checks.zero_events("x", [], DAY).passed
    assert not checks.zero_events("x", [], DAY, absent_is_zero=False).passed
    with pytest.raises(ValueError):
        checks.zero_events("x", [], DAY, count_as="sum")


# --- ratio --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("down_seconds", "passes"), [(0, True), (86, True), (87, False), (3_600, False)])
def test_uptime_must_exceed_99_9_percent(down_seconds: int, passes: bool) -> None:
    window = Window(0.0, 86_399.0, 1.0)  # 86,400 points of 1 s
    status = Series({}, [(float(t), 0.0 if t < down_seconds else 1.0) for t in range(86_400)])
    result = checks.uptime("uptime", [status], window, min_percent=99.9)
    assert result.passed is passes
    assert result.observed == pytest.approx(100 * (86_400 - down_seconds) / 86_400)


@pytest.mark.parametrize(("produced", "passes"), [(98_999, False), (99_000, True), (101_000, True), (101_001, False)])
def test_counter_ratio_within_tolerance(produced: int, passes: bool) -> None:
    window = Window(0.0, 100.0, 100.0)
    result = checks.counter_ratio(
        "kafka",
        [Series({}, [(0.0, 0.0), (100.0, float(produced))])],
        [Series({}, [(0.0, 0.0), (100.0, 100_000.0)])],
        window,
        tolerance_percent=1.0,
    )
    assert result.passed is passes
    assert result.observed == pytest.approx(produced / 1000)


def test_ratio_with_zero_denominator_has_no_data() -> None:
    result = checks.ratio("r", 5.0, 0.0, low=99.0)
    assert not result.passed and result.observed is None


# --- CheckResult --------------------------------------------------------------------------------------


def test_check_result_texts_and_round_trip() -> None:
    result = CheckResult("pings", True, 480.0, 480.0, "", "480 pings", "==", 5.0, kind="count")
    assert result.threshold_text() == "= 480 ± 5"
    assert result.observed_text() == "480"
    data = result.to_dict()
    assert data["threshold_text"] == "= 480 ± 5"
    assert CheckResult.from_dict(data) == result
    assert CheckResult("r", True, 23.456, 10.0, "msg/s", "", ">").threshold_text() == "> 10 msg/s"
    assert CheckResult("g", False, None, 50.0, "MB", "", "<").observed_text() == "no data"
    with pytest.raises(ValueError):
        CheckResult("x", True, 1.0, 1.0, "", "", "!=")


def test_message_loss_judges_unrepaired_ids_and_reports_repaired_ones_beside() -> None:
    """A gap repaired from the REST history is not a loss: only unrepaired ids and failed deliveries fail."""
    from k2_ops.validation.criteria import PRODUCE_ERRORS, REPAIRED, UNREPAIRED, stability_30d
    from k2_ops.validation.profiles import PRODUCTION

    criterion = stability_30d(PRODUCTION).get("message_loss")

    def counter(name: str, values: list[float]) -> Series:
        return Series({"__name__": name}, [(index * 3600.0, value) for index, value in enumerate(values)])

    repaired_only = {REPAIRED.key: [counter("binance_gap_repaired_messages_total", [0, 40, 75])],
                     UNREPAIRED.key: [], PRODUCE_ERRORS.key: []}
    result = criterion.evaluate(repaired_only, DAY)
    assert result.passed and result.observed == 0
    assert "75 missed id(s) repaired from Binance's REST history" in result.evidence
    lost = {**repaired_only, UNREPAIRED.key: [counter("binance_gap_unrepaired_messages_total", [0, 0, 4])]}
    result = criterion.evaluate(lost, DAY)
    assert not result.passed and result.observed == 4
    assert "binance_gap_unrepaired_messages_total: 4" in result.evidence and "75 missed" in result.evidence


def test_no_active_streamer_is_charged_to_no_instance() -> None:
    """BinanceNoActiveStreamer has no instance label (it fires when none is up): the critical-alert input, which
    takes alerts without an instance as everyone's, leaves it out, in PromQL and over /metrics samples alike."""
    from k2_ops.validation.criteria import CRITICAL_ALERTS

    firing = {"alertstate": "firing", "severity": "critical"}
    assert CRITICAL_ALERTS.selector("blue") == (
        'ALERTS{instance=~"blue|",alertstate="firing",severity="critical",alertname!="BinanceNoActiveStreamer"}')
    assert not CRITICAL_ALERTS.matches("ALERTS", {**firing, "alertname": "BinanceNoActiveStreamer"})
    assert CRITICAL_ALERTS.matches("ALERTS", {**firing, "alertname": "BinanceStreamDown"})
