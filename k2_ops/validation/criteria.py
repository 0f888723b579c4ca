"""Every validation criterion of the seed, by name: the metrics it reads and the check it applies.

Four criteria sets (thresholds are the seed's, configurable through the `*Thresholds` dataclasses;
expected counts default to what the profile schedules, i.e. the seed's 3 / 6 / 480 / 180 / 14,400).
Rotations and pings are figures **per connection**: the streamer spreads its streams over a pool of
connections, each with its own rotation and ping schedule, so the expected count is the per-connection figure
x the connections, read from the streamer's `binance_connection_slots` gauge (its time-weighted mean over the
window, rounded; 1 when a streamer without a pool exports none), and the tolerance scales the same way:

| set              | criterion               | kind        | seed wording |
|------------------|-------------------------|-------------|--------------|
| `validation_12h` | `no_crash`              | zero-events | no crash (process start time unchanged) |
|                  | `memory_growth`         | growth      | memory growth < 30 MB |
|                  | `rotations`             | count       | 3 rotations |
|                  | `message_rate`          | rate        | message rate > 10 msg/s sustained |
|                  | `critical_errors`       | zero-events | zero critical errors (error-level logs) |
| `soak_24h`       | `runs_full_duration`    | range       | runs the whole duration |
|                  | `memory_growth`         | growth      | memory growth < 50 MB |
|                  | `message_rate`          | rate        | rate > 10 msg/s average |
|                  | `connection_drops`      | count       | < 10 connection drops (rotations excluded) |
|                  | `data_integrity`        | zero-events | zero integrity errors (unrepaired ids, produce errors) |
|                  | `memory_profile_written`| artifact    | profile JSON written (memory_profile.py) |
| `daily`          | `memory_stable`         | range       | RSS <= 250 MB ceiling, band reported |
|                  | `rotations`             | count       | 6 rotations |
|                  | `pings`                 | count       | 480 pings |
|                  | `message_rate`          | rate        | rate > 10 msg/s |
|                  | `unscheduled_reconnects`| count       | zero unscheduled reconnections |
|                  | `critical_alerts`       | zero-events | no critical alerts (ALERTS; NoActiveStreamer: `uptime`) |
|                  | `uptime`                | ratio       | (ours) uptime > 99.9 % of the day, down windows named |
| `stability_30d`  | `memory_growth`         | growth      | growth < 100 MB |
|                  | `leak_score`            | range       | leak score < 0.5 |
|                  | `memory_alerts`         | zero-events | no BinanceMemoryHigh / LeakDetected alert |
|                  | `uptime`                | ratio       | uptime > 99.9 % excluding scheduled rotations |
|                  | `rotations`             | count       | 180 rotations |
|                  | `pings`                 | count       | 14,400 pings |
|                  | `pong_timeouts`         | zero-events | zero pong timeouts |
|                  | `unscheduled_reconnects`| zero-events | zero unscheduled reconnections |
|                  | `message_rate`          | rate        | rate > 10 msg/s |
|                  | `message_loss`          | zero-events | zero message loss (unrepaired ids, produce errors) |
|                  | `kafka_matches_messages`| ratio       | Kafka production rate matches message rate |

The daily set's "report on day 7" is the weekly report (`k2_ops.reports`), built from seven daily runs.

A criterion reads named inputs (`MetricQuery`), each both a PromQL selector (for Prometheus) and a filter
over `/metrics` samples (for the soak runner), so one pure evaluation serves both sources:
`evaluate_series(criteria_set, series_by_key, window)`. `evaluate(...)` fetches from Prometheus first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from k2_ops.validation import checks
from k2_ops.validation.checks import CheckResult, format_number
from k2_ops.validation.profiles import ValidationProfile
from k2_ops.validation.prometheus import PrometheusClient, choose_step, promql_duration
from k2_ops.validation.series import Series, Window, total_increase
from k2_ops.validation.timeline import SeriesKind

MB = 1e6


@dataclass(frozen=True)
class MetricQuery:
    """One input of a criterion: a metric with label matches.

    In Prometheus it becomes `metric{instance="<instance>", labels...}`; gauges with `over_time` are read
    as `<over_time>_over_time(selector[range])` so a value between two points is not missed. On `/metrics`
    samples (the soak) the same metric and labels select the samples. `optional`: an absent series is
    legitimate (a labelled counter never incremented), not missing data.
    """

    key: str
    metric: str
    labels: Mapping[str, str] = field(default_factory=dict)
    regex_labels: Mapping[str, str] = field(default_factory=dict)
    over_time: str | None = None
    excluded_labels: Mapping[str, str] = field(default_factory=dict)  # label != value
    optional: bool = False
    # "exact": instance="<x>"; "or_absent": the series may lack the label (alerts from rules without it).
    instance_match: str = "exact"

    @property
    def series_kind(self) -> SeriesKind:
        """Counters follow Prometheus' naming (`_total`); everything else, `*_over_time` included, is a gauge."""
        return SeriesKind.COUNTER if self.metric.endswith("_total") and not self.over_time else SeriesKind.GAUGE

    def selector(self, instance: str | Sequence[str] | None) -> str:
        """The PromQL selector for one instance, any of several (a regex), or every instance (None)."""
        matchers: list[str] = []
        if instance is not None:
            names = [instance] if isinstance(instance, str) else list(instance)
            if len(names) == 1 and self.instance_match != "or_absent":
                matchers.append(f'instance="{names[0]}"')
            else:
                alternatives = "|".join(promql_regex_literal(name) for name in names)
                matchers.append(f'instance=~"{alternatives}{"|" if self.instance_match == "or_absent" else ""}"')
        matchers += [f'{label}="{value}"' for label, value in self.labels.items()]
        matchers += [f'{label}=~"{value}"' for label, value in self.regex_labels.items()]
        matchers += [f'{label}!="{value}"' for label, value in self.excluded_labels.items()]
        return f"{self.metric}{{{','.join(matchers)}}}"

    def promql(self, instance: str | Sequence[str] | None, range_seconds: float) -> str:
        selector = self.selector(instance)
        if self.over_time:
            return f"{self.over_time}_over_time({selector}[{promql_duration(range_seconds)}])"
        return selector

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        """Whether a /metrics sample belongs to this input (instance is ignored: one process is scraped)."""
        if name != self.metric:
            return False
        if any(labels.get(label) != value for label, value in self.labels.items()):
            return False
        if any(labels.get(label) == value for label, value in self.excluded_labels.items()):
            return False
        return all(re.fullmatch(pattern, labels.get(label, "")) for label, pattern in self.regex_labels.items())


def promql_regex_literal(value: str) -> str:
    """`value` matched literally inside a PromQL regex string (regex escapes, doubled for the string)."""
    return re.sub(r"([.+*?()|\[\]{}^$\\])", r"\\\\\1", value)


# The inputs, shared by the criteria and the report charts.
RSS_MAX = MetricQuery("rss_max", "process_memory_rss_bytes", over_time="max")
RSS_MIN = MetricQuery("rss_min", "process_memory_rss_bytes", over_time="min")
LEAK_SCORE_MAX = MetricQuery("leak_score_max", "memory_leak_detection_score", over_time="max")
START_TIME = MetricQuery("start_time", "process_start_time_seconds")
MESSAGES = MetricQuery("messages", "binance_messages_received_total", optional=True)
ROTATIONS = MetricQuery("rotations", "binance_connection_rotations_total", optional=True)
SCHEDULED_ROTATIONS = MetricQuery(
    "scheduled_rotations", "binance_connection_rotations_total", {"reason": "scheduled"}, optional=True
)
PINGS = MetricQuery("pings", "binance_pings_sent_total")
PONG_TIMEOUTS = MetricQuery("pong_timeouts", "binance_pong_timeouts_total", optional=True)
RECONNECTS = MetricQuery("reconnects", "binance_reconnects_total", optional=True)
SEQUENCE_GAPS = MetricQuery("sequence_gaps", "binance_sequence_gaps_total", optional=True)
MISSING_MESSAGES = MetricQuery("missing_messages", "binance_missing_messages_total", optional=True)
# Gap repair (streamer/repair.py): ids missed and then fetched from the REST history are not lost; those given up
# are. A streamer without repair counts every trade or aggTrade gap's ids as unrepaired at once.
UNREPAIRED = MetricQuery("unrepaired", "binance_gap_unrepaired_messages_total", optional=True)
REPAIRED = MetricQuery("repaired", "binance_gap_repaired_messages_total", optional=True)
DUPLICATES = MetricQuery("duplicates", "binance_duplicates_dropped_total", optional=True)
PRODUCED = MetricQuery("produced", "kafka_messages_produced_total", optional=True)
PRODUCE_ERRORS = MetricQuery("produce_errors", "kafka_produce_errors_total", optional=True)
LOG_ERRORS = MetricQuery("log_errors", "streamer_log_errors_total", optional=True)
CONNECTION_UP = MetricQuery("connection_up", "binance_connection_status", over_time="avg")
CONNECTION_SLOTS = MetricQuery("connection_slots", "binance_connection_slots", over_time="avg", optional=True)
# BinanceNoActiveStreamer is left out: it belongs to no instance (it fires when none is up), so `or_absent`
# would charge it to every instance and shard; a day without an active streamer fails its `uptime` check instead.
CRITICAL_ALERTS = MetricQuery(
    "critical_alerts",
    "ALERTS",
    {"alertstate": "firing", "severity": "critical"},
    over_time="max",
    optional=True,
    instance_match="or_absent",
    excluded_labels={"alertname": "BinanceNoActiveStreamer"},
)
MEMORY_ALERTS = MetricQuery(
    "memory_alerts",
    "ALERTS",
    {"alertstate": "firing"},
    {"alertname": "BinanceMemoryHigh|BinanceMemoryLeakDetected"},
    over_time="max",
    optional=True,
    instance_match="or_absent",
)

SeriesByKey = Mapping[str, Sequence[Series]]
CheckFunction = Callable[[SeriesByKey, Window], CheckResult]


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    kind: str
    inputs: tuple[MetricQuery, ...]
    check: CheckFunction

    def evaluate(self, series: SeriesByKey, window: Window) -> CheckResult:
        missing = [query.key for query in self.inputs if not query.optional and not series.get(query.key)]
        result = self.check(series, window)
        if missing and result.passed:
            # A required input without data can never back a pass.
            return dataclasses.replace(
                result, passed=False, evidence=f"no data for {', '.join(missing)}; {result.evidence}"
            )
        return dataclasses.replace(result, name=self.name, kind=result.kind or self.kind)


@dataclass(frozen=True)
class CriteriaSet:
    name: str
    title: str
    duration_seconds: float
    criteria: tuple[Criterion, ...]

    def inputs(self) -> dict[str, MetricQuery]:
        return {query.key: query for criterion in self.criteria for query in criterion.inputs}

    def names(self) -> list[str]:
        return [criterion.name for criterion in self.criteria]

    def get(self, name: str) -> Criterion:
        for criterion in self.criteria:
            if criterion.name == name:
                return criterion
        raise KeyError(f"{self.name} has no criterion {name!r}; known: {self.names()}")


# --- thresholds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation12hThresholds:
    max_memory_growth_mb: float = 30.0
    rotations: int | None = None  # None: what the profile schedules in 12 h (3)
    rotation_tolerance: int = 0
    min_rate: float = 10.0
    max_critical_errors: int = 0


@dataclass(frozen=True)
class Soak24hThresholds:
    max_memory_growth_mb: float = 50.0
    min_rate: float = 10.0
    max_connection_drops: int = 9  # "< 10"
    # "Runs the whole duration": the same process is still up at this share of the planned duration.
    min_duration_fraction: float = 1.0


@dataclass(frozen=True)
class DailyThresholds:
    memory_ceiling_mb: float = 250.0
    # The seed's band is 200-250 MB; the floor is reported, and enforced only when set.
    memory_floor_mb: float | None = None
    rotations: int | None = None  # None: what the profile schedules per day (6)
    rotation_tolerance: int = 0
    pings: int | None = None  # None: per day from the profile (480)
    ping_tolerance: int = 5  # ~1 %: a ping due at a rotation may go to either connection's schedule
    min_rate: float = 10.0
    max_unscheduled_reconnects: int = 0
    critical_severity: str = "critical"
    # The 30-day set's 99.9 % applied to each day: at most 86.4 s without a delivering connection.
    min_uptime_percent: float = 99.9


@dataclass(frozen=True)
class StabilityThresholds:
    days: float = 30.0
    max_memory_growth_mb: float = 100.0
    max_leak_score: float = 0.5
    min_uptime_percent: float = 99.9
    rotations: int | None = None  # None: profile schedule over `days` (180)
    rotation_tolerance: int = 0
    pings: int | None = None  # None: profile schedule over `days` (14,400)
    ping_tolerance: int = 144  # 1 %
    min_rate: float = 10.0
    kafka_tolerance_percent: float = 1.0


# --- criteria sets ------------------------------------------------------------------------------------


def _no_crash(name: str) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        start_times = series.get(START_TIME.key, [])
        result = checks.zero_events(
            name, start_times, window, count_as="changes", what="restarts", absent_is_zero=False
        )
        last_seen = max((one.points[-1][0] for one in start_times if one.points), default=None)
        if last_seen is None:
            return result
        alive_at_end = last_seen >= window.end - 2 * window.step
        starts = sorted({value for one in start_times for value in one.values()})
        evidence = (
            f"process_start_time_seconds {'unchanged' if len(starts) == 1 else 'changed'} "
            f"({len(starts)} distinct), last seen at +{format_number(last_seen - window.start)} s of "
            f"{format_number(window.seconds)} s"
        )
        return dataclasses.replace(
            result,
            passed=result.passed and alive_at_end,
            evidence=evidence,
            details={**result.details, "alive_at_end": alive_at_end},
        )

    return Criterion(
        name,
        "no crash: process start time unchanged and the process up at the end",
        "zero-events",
        (START_TIME,),
        check,
    )


def _growth(name: str, max_growth_mb: float, warmup_seconds: float, seed_text: str) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        return checks.growth(
            name,
            series.get(RSS_MAX.key, []),
            window,
            max_growth_mb,
            warmup_seconds=min(warmup_seconds, window.seconds / 4),
        )

    return Criterion(name, seed_text, "growth", (RSS_MAX,), check)


def _rate(name: str, min_rate: float, sustained_seconds: float | None, seed_text: str) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        return checks.rate(
            name, series.get(MESSAGES.key, []), window, min_rate=min_rate, sustained_seconds=sustained_seconds
        )

    return Criterion(name, seed_text, "rate", (MESSAGES,), check)


def connections_in(series: Sequence[Series], window: Window) -> int:
    """How many connections the streamer ran in the window: the time-weighted mean of binance_connection_slots
    (each point stands for the step after it), rounded, at least 1; 1 when the series is absent."""
    points = sorted(p for one in series for p in one.between(window.start, window.end).points)
    if not points:
        return 1
    total = weight = 0.0
    for (t, value), (t_next, _) in zip(points, [*points[1:], (window.end, 0.0)], strict=True):
        span = max(t_next - t, 0.0) or window.step
        total += value * span
        weight += span
    return max(1, round(total / weight))


def _count(name: str, query: MetricQuery, expected: int, tolerance: int, what: str, seed_text: str) -> Criterion:
    """A scheduled count (rotations, pings), `expected` and `tolerance` per connection: the check expects them
    x the connections of the window (`connections_in`). Each switch of the active color in the window widens
    the tolerance by one per connection: the new color runs its own schedules (its own connections' rotation
    clocks, their own ping slots), so the period holds one event more or fewer per connection than an unbroken
    schedule would."""

    def check(series: SeriesByKey, window: Window) -> CheckResult:
        switches = len(window.switches)
        connections = connections_in(series.get(CONNECTION_SLOTS.key, []), window)
        result = checks.count_per_period(
            name,
            series.get(query.key, []),
            window,
            expected=expected * connections,
            tolerance=(tolerance + switches) * connections,
            what=what,
            absent_is_zero=query.optional,
        )
        evidence = (f"{result.evidence}; {format_number(expected)} per connection x {connections} "
                    f"connection(s) (binance_connection_slots)")
        if switches:
            evidence += (f"; ± {switches} per connection for {switches} switch(es) of the active color, each "
                         "starting its own schedules")
        return dataclasses.replace(result, evidence=evidence, details={**result.details, "connections": connections,
                                                                        "per_connection": expected})

    return Criterion(name, seed_text, "count", (query, CONNECTION_SLOTS), check)


def _zero(
    name: str,
    queries: tuple[MetricQuery, ...],
    what: str,
    seed_text: str,
    by_label: str | None = None,
    count_as: str = "increase",
) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        combined = [one for query in queries for one in series.get(query.key, [])]
        return checks.zero_events(name, combined, window, count_as=count_as, what=what, by_label=by_label)

    return Criterion(name, seed_text, "zero-events", queries, check)


def _no_loss(name: str, seed_text: str, what: str) -> Criterion:
    """Zero unrepaired ids and zero failed Kafka deliveries; the ids repaired from REST are reported beside."""

    def check(series: SeriesByKey, window: Window) -> CheckResult:
        lost = [*series.get(UNREPAIRED.key, []), *series.get(PRODUCE_ERRORS.key, [])]
        result = checks.zero_events(name, lost, window, what=what, by_label="__name__")
        repaired = total_increase(series.get(REPAIRED.key, []), window)
        evidence = f"{result.evidence}; {format_number(repaired)} missed id(s) repaired from Binance's REST history"
        return dataclasses.replace(result, evidence=evidence, details={**result.details, "repaired": repaired})

    return Criterion(name, seed_text, "zero-events", (UNREPAIRED, PRODUCE_ERRORS, REPAIRED), check)


def validation_12h(
    profile: ValidationProfile,
    thresholds: Validation12hThresholds = Validation12hThresholds(),
    duration_seconds: float | None = None,
) -> CriteriaSet:
    """12 h on the profile clock; another `duration_seconds` scales the expected rotations with it."""
    duration = duration_seconds if duration_seconds is not None else profile.hours(12)
    rotations = thresholds.rotations if thresholds.rotations is not None else profile.rotations_in(duration)
    return CriteriaSet(
        "validation_12h",
        "12 h validation",
        duration,
        (
            _no_crash("no_crash"),
            _growth(
                "memory_growth",
                thresholds.max_memory_growth_mb,
                profile.warmup_seconds,
                f"memory growth < {format_number(thresholds.max_memory_growth_mb)} MB",
            ),
            _count(
                "rotations",
                SCHEDULED_ROTATIONS,
                rotations,
                thresholds.rotation_tolerance,
                "scheduled rotations",
                f"{rotations} rotations per connection",
            ),
            _rate(
                "message_rate",
                thresholds.min_rate,
                profile.sustained_rate_seconds,
                f"message rate > {format_number(thresholds.min_rate)} msg/s sustained "
                f"(every {format_number(profile.sustained_rate_seconds)} s chunk)",
            ),
            _zero(
                "critical_errors",
                (LOG_ERRORS,),
                "error-level log records",
                "zero critical errors",
                by_label="level",
            ),
        ),
    )


def _runs_full_duration(name: str, planned_seconds: float, min_fraction: float) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        start_times = series.get(START_TIME.key, [])
        points = sorted(point for one in start_times for point in one.points)
        required = planned_seconds * min_fraction
        if not points:
            return checks.no_data(name, "range", required, "s", ">=", "process_start_time_seconds")
        starts = {value for _, value in points}
        # Uptime of the process seen last; a restart makes it shorter than the run.
        observed = points[-1][0] - max(starts) if len(starts) > 1 else points[-1][0] - window.start
        passed = observed >= required and len(starts) == 1
        evidence = f"same process for {format_number(observed)} s of {format_number(planned_seconds)} s planned" + (
            "" if len(starts) == 1 else f"; {len(starts) - 1} restart(s)"
        )
        return CheckResult(
            name,
            passed,
            observed,
            required,
            "s",
            evidence,
            ">=",
            kind="range",
            details={"restarts": len(starts) - 1},
        )

    return Criterion(name, "runs the whole duration", "range", (START_TIME,), check)


def soak_24h(
    profile: ValidationProfile,
    thresholds: Soak24hThresholds = Soak24hThresholds(),
    duration_seconds: float | None = None,
) -> CriteriaSet:
    duration = duration_seconds if duration_seconds is not None else profile.hours(24)
    return CriteriaSet(
        "soak_24h",
        "24 h soak",
        duration,
        (
            _runs_full_duration("runs_full_duration", duration, thresholds.min_duration_fraction),
            _growth(
                "memory_growth",
                thresholds.max_memory_growth_mb,
                profile.warmup_seconds,
                f"memory growth < {format_number(thresholds.max_memory_growth_mb)} MB",
            ),
            _rate(
                "message_rate",
                thresholds.min_rate,
                None,
                f"message rate > {format_number(thresholds.min_rate)} msg/s average",
            ),
            Criterion(
                "connection_drops",
                f"connection drops < {thresholds.max_connection_drops + 1} excluding scheduled rotations",
                "count",
                (RECONNECTS,),
                lambda series, window: checks.count_at_most(
                    "connection_drops",
                    series.get(RECONNECTS.key, []),
                    window,
                    maximum=thresholds.max_connection_drops,
                    what="reconnects",
                    by_label="reason",
                ),
            ),
            _no_loss(
                "data_integrity",
                "zero data integrity errors (ids missed and not repaired, Kafka produce errors)",
                "integrity errors",
            ),
        ),
    )


def _memory_band(name: str, ceiling_mb: float, floor_mb: float | None) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        return checks.value_range(
            name,
            series.get(RSS_MAX.key, []),
            low=floor_mb,
            high=ceiling_mb,
            unit="MB",
            scale=MB,
            what="RSS",
            band_series=series.get(RSS_MIN.key, []),
        )

    band = (
        f"{format_number(floor_mb)}-{format_number(ceiling_mb)} MB"
        if floor_mb is not None
        else f"≤ {format_number(ceiling_mb)} MB ceiling"
    )
    return Criterion(
        name, f"memory stable: RSS within {band}, band observed reported", "range", (RSS_MAX, RSS_MIN), check
    )


def daily(profile: ValidationProfile, thresholds: DailyThresholds = DailyThresholds()) -> CriteriaSet:
    day = profile.day_seconds
    rotations = thresholds.rotations if thresholds.rotations is not None else profile.rotations_in(day)
    pings = thresholds.pings if thresholds.pings is not None else profile.pings_in(day)
    critical = dataclasses.replace(
        CRITICAL_ALERTS, labels={"alertstate": "firing", "severity": thresholds.critical_severity}
    )
    return CriteriaSet(
        "daily",
        "Daily check (7-day validation)",
        day,
        (
            _memory_band("memory_stable", thresholds.memory_ceiling_mb, thresholds.memory_floor_mb),
            _count(
                "rotations",
                SCHEDULED_ROTATIONS,
                rotations,
                thresholds.rotation_tolerance,
                "scheduled rotations",
                f"{rotations} rotations per day per connection",
            ),
            _count("pings", PINGS, pings, thresholds.ping_tolerance, "pings", f"{pings} pings per day per connection"),
            _rate(
                "message_rate",
                thresholds.min_rate,
                None,
                f"message rate > {format_number(thresholds.min_rate)} msg/s",
            ),
            Criterion(
                "unscheduled_reconnects",
                "zero unscheduled reconnections",
                "count",
                (RECONNECTS,),
                lambda series, window: checks.count_at_most(
                    "unscheduled_reconnects",
                    series.get(RECONNECTS.key, []),
                    window,
                    maximum=thresholds.max_unscheduled_reconnects,
                    what="reconnects",
                    by_label="reason",
                ),
            ),
            _zero(
                "critical_alerts",
                (critical,),
                "critical alerts firing",
                "no critical alerts (ALERTS series)",
                by_label="alertname",
                count_as="active",
            ),
            _uptime("uptime", thresholds.min_uptime_percent),
        ),
    )


def _uptime(name: str, min_percent: float) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        return checks.uptime(name, series.get(CONNECTION_UP.key, []), window, min_percent=min_percent)

    return Criterion(
        name,
        f"uptime > {format_number(min_percent)} % excluding scheduled rotations "
        "(make-before-break keeps the connection up across them)",
        "ratio",
        (CONNECTION_UP,),
        check,
    )


def _kafka_matches(name: str, tolerance_percent: float) -> Criterion:
    def check(series: SeriesByKey, window: Window) -> CheckResult:
        # The streamer counts received messages after duplicate removal (rotation overlaps), so every
        # received message should be delivered to Kafka exactly once: produced / received = 100 %.
        return checks.counter_ratio(
            name,
            series.get(PRODUCED.key, []),
            series.get(MESSAGES.key, []),
            window,
            tolerance_percent=tolerance_percent,
            what="produced / received",
            numerator_text="produced",
            denominator_text="received",
        )

    return Criterion(
        name,
        "Kafka production rate matches message rate "
        f"(produced / received = 100 ± {format_number(tolerance_percent)} %)",
        "ratio",
        (PRODUCED, MESSAGES),
        check,
    )


def stability_30d(profile: ValidationProfile, thresholds: StabilityThresholds = StabilityThresholds()) -> CriteriaSet:
    duration = profile.days(thresholds.days)
    rotations = thresholds.rotations if thresholds.rotations is not None else profile.rotations_in(duration)
    pings = thresholds.pings if thresholds.pings is not None else profile.pings_in(duration)
    return CriteriaSet(
        "stability_30d",
        f"{format_number(thresholds.days)}-day stability",
        duration,
        (
            _growth(
                "memory_growth",
                thresholds.max_memory_growth_mb,
                profile.warmup_seconds,
                f"memory growth < {format_number(thresholds.max_memory_growth_mb)} MB",
            ),
            Criterion(
                "leak_score",
                f"leak score < {format_number(thresholds.max_leak_score)}",
                "range",
                (LEAK_SCORE_MAX,),
                lambda series, window: checks.value_range(
                    "leak_score",
                    series.get(LEAK_SCORE_MAX.key, []),
                    high=thresholds.max_leak_score,
                    strict_high=True,
                    what="memory_leak_detection_score",
                ),
            ),
            _zero(
                "memory_alerts",
                (MEMORY_ALERTS,),
                "memory alerts firing",
                "no BinanceMemoryHigh / BinanceMemoryLeakDetected alerts",
                by_label="alertname",
                count_as="active",
            ),
            _uptime("uptime", thresholds.min_uptime_percent),
            _count(
                "rotations",
                SCHEDULED_ROTATIONS,
                rotations,
                thresholds.rotation_tolerance,
                "scheduled rotations",
                f"{rotations} rotations per connection",
            ),
            _count("pings", PINGS, pings, thresholds.ping_tolerance, "pings", f"{pings} pings per connection"),
            _zero("pong_timeouts", (PONG_TIMEOUTS,), "pong timeouts", "zero pong timeouts"),
            _zero(
                "unscheduled_reconnects",
                (RECONNECTS,),
                "unscheduled reconnects",
                "zero unscheduled reconnections",
                by_label="reason",
            ),
            _rate(
                "message_rate",
                thresholds.min_rate,
                None,
                f"message rate > {format_number(thresholds.min_rate)} msg/s",
            ),
            _no_loss(
                "message_loss",
                "zero message loss (ids missed and not repaired from REST, failed Kafka deliveries)",
                "messages lost",
            ),
            _kafka_matches("kafka_matches_messages", thresholds.kafka_tolerance_percent),
        ),
    )


CRITERIA_SETS: dict[str, Callable[[ValidationProfile], CriteriaSet]] = {
    "validation_12h": validation_12h,
    "soak_24h": soak_24h,
    "daily": daily,
    "stability_30d": stability_30d,
}


# --- evaluation ---------------------------------------------------------------------------------------


def evaluate_series(criteria_set: CriteriaSet, series: SeriesByKey, window: Window) -> list[CheckResult]:
    """Pure: every criterion of the set over already-fetched series (keyed by MetricQuery.key)."""
    return [criterion.evaluate(series, window) for criterion in criteria_set.criteria]


def query_window(start: float, end: float, scrape_interval: float) -> tuple[Window, float]:
    """The window (step per `choose_step`, never finer than the scrape interval) and the range to use
    inside `*_over_time` (at least two scrapes, so each point sees a sample)."""
    step = choose_step(start, end, min_step=scrape_interval)
    return Window(start, end, step), max(step, 2 * scrape_interval)


def fetch_series(
    prom: PrometheusClient,
    queries: Sequence[MetricQuery],
    window: Window,
    range_seconds: float,
    instance: str | Sequence[str] | None,
) -> dict[str, list[Series]]:
    """Range-query every input over the window (I/O; the evaluation itself stays pure)."""
    return {
        query.key: prom.query_range(query.promql(instance, range_seconds), window.start, window.end, window.step)
        for query in queries
    }


def evaluate(
    criteria_set: CriteriaSet,
    prom: PrometheusClient,
    start: float,
    end: float,
    profile: ValidationProfile | None = None,
    instance: str | None = "blue",
    *,
    scrape_interval: float = 15.0,
) -> list[CheckResult]:
    """Fetch what the set needs from Prometheus over [start, end] for `instance`, then evaluate it.

    `profile` is accepted for symmetry with the criteria builders (the set already carries its profile's
    thresholds); `scrape_interval` is the resolution of the stored data (the step never goes below it).
    """
    del profile  # the criteria set was built from it
    return evaluate_with_series(criteria_set, prom, start, end, instance, scrape_interval=scrape_interval)[0]


def evaluate_with_series(
    criteria_set: CriteriaSet,
    prom: PrometheusClient,
    start: float,
    end: float,
    instance: str | None = "blue",
    *,
    scrape_interval: float = 15.0,
    extra_queries: Sequence[MetricQuery] = (),
) -> tuple[list[CheckResult], dict[str, list[Series]], Window]:
    """Like `evaluate`, also returning the fetched series (for report charts) and the window used."""
    window, range_seconds = query_window(start, end, scrape_interval)
    queries = {**criteria_set.inputs(), **{query.key: query for query in extra_queries}}
    series = fetch_series(prom, list(queries.values()), window, range_seconds, instance)
    return evaluate_series(criteria_set, series, window), series, window


def all_passed(results: Sequence[CheckResult]) -> bool:
    return bool(results) and all(result.passed for result in results)


def select_series(
    raw: Sequence[Series],
    queries: Sequence[MetricQuery] | Mapping[str, MetricQuery],
    start: float | None = None,
    end: float | None = None,
) -> dict[str, list[Series]]:
    """Pure: the inputs' series picked from raw series (each labelled with `__name__`), cut to [start, end].

    This is how samples that did not come through PromQL (the soak's /metrics scrapes, synthetic history)
    feed the same evaluation as Prometheus range queries.
    """
    chosen = list(queries.values()) if isinstance(queries, Mapping) else list(queries)
    selected: dict[str, list[Series]] = {}
    for query in chosen:
        matching = [one for one in raw if query.matches(one.labels.get("__name__", ""), one.labels)]
        if start is not None and end is not None:
            matching = [one.between(start, end) for one in matching]
        selected[query.key] = [one for one in matching if one.points]
    return selected
