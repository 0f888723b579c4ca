"""Synthetic streamer history: what Prometheus would hold after days of a streamer running, as series and
as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics` (see `backfill.py`).

The model follows the streamer's contract on a production (or any) profile:
- one process started `lead_in_seconds` before the first day (process_start_time_seconds constant);
- a connection opens 1 s after start; a scheduled rotation comes `rotation_seconds` after each
  connection opened, so with the default lead-in every day holds exactly 6 rotations, none at midnight;
- a reconnect (pong timeout, outage) opens a new connection, which restarts the rotation clock;
- client pings every `ping_interval_seconds` (none while disconnected): 480 a day;
- messages at `rate_per_symbol` per symbol (trade stream), Kafka deliveries equal to messages;
- RSS around `rss_mb` with deterministic noise and an optional steady growth; leak score low;
- labelled counters (reconnects by reason, sequence gaps by symbol, log errors by level) appear at
  their first event, as prometheus_client exports them.

Faults (`Fault(kind, day)`), each placed so it breaks what its name says and nothing else that day:
- `missing_rotation`: the first scheduled rotation after noon does not happen (5 that day);
- `pong_timeout`: 60 s after the first rotation after 10:00 a pong deadline is missed; the connection
  is replaced (reconnect reason `pong_timeout`);
- `rss_over_ceiling`: RSS at `value` MB (default 300) from 13:00 to 15:00;
- `critical_alert`: an ALERTS series (alertname `alertname`, severity critical) firing 20:00-20:10;
- `leak_alert`: leak score 0.85 from 06:00 to 06:40 and BinanceMemoryLeakDetected firing from 06:15;
- `message_loss`: at 09:00 a sequence gap with `value` (default 3) missing messages, none repaired (as a
  streamer whose REST repair failed reports them: binance_gap_unrepaired_messages_total);
- `kafka_shortfall`: from that day on, `value` (default 0.03) of messages never reach Kafka;
- `outage`: disconnected for `value` minutes (default 50) from 1 min after the first rotation after
  07:00; no messages or pings meanwhile; one reconnect (reason `error`) at the end.

One history is one process. A blue-green deployment is several: `process_started_at` / `stopped_at` bound
a process's life (no samples outside it: a stopped process is not scraped), `producing_from` keeps it in
standby (connected, counting, delivering nothing to Kafka) until its handover release, and
`connect_delay_seconds` is how long after start its first connection opens (a slow start is an outage).
`deployment_week` builds the processes and the deployment history of a week with deployments.
"""

from __future__ import annotations

import bisect
import enum
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from k2_ops.deploy.history import DeploymentRecord, switch_entry
from k2_ops.deploy.model import instance_name
from k2_ops.validation.profiles import PRODUCTION, ValidationProfile
from k2_ops.validation.series import Series
from streamer.shards import WHOLE_MARKET, Shard

FAULT_KINDS = (
    "missing_rotation",
    "pong_timeout",
    "rss_over_ceiling",
    "critical_alert",
    "leak_alert",
    "message_loss",
    "kafka_shortfall",
    "outage",
)
HOUR = 3600.0
COUNTERS = {
    "binance_messages_received_total",
    "kafka_messages_produced_total",
    "binance_connection_rotations_total",
    "binance_pings_sent_total",
    "binance_pong_timeouts_total",
    "binance_reconnects_total",
    "binance_sequence_gaps_total",
    "binance_missing_messages_total",
    "binance_gap_unrepaired_messages_total",
    "binance_duplicates_dropped_total",
    "kafka_produce_errors_total",
    "streamer_log_errors_total",
}


class SyntheticError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    kind: str
    day: int
    value: float | None = None
    alertname: str = "BinanceStreamDown"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise SyntheticError(f"unknown fault kind {self.kind!r}; known: {FAULT_KINDS}")
        if self.day < 0:
            raise SyntheticError(f"fault day must be >= 0, got {self.day}")


@dataclass(frozen=True)
class SyntheticHistory:
    """`days` days of one streamer instance starting at `start` (a UTC midnight for production days)."""

    start: float
    days: int
    instance: str
    profile: ValidationProfile = PRODUCTION
    job: str = "k2-streamer"
    scrape_interval: float = 60.0
    lead_in_seconds: float = HOUR
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt")
    rate_per_symbol: float = 12.0
    rss_mb: float = 225.0
    rss_noise_mb: float = 3.0
    rss_growth_mb_per_day: float = 0.3
    faults: tuple[Fault, ...] = ()
    seed: int = 7
    topic: str = "market.crypto.binance.trades"
    process_started_at: float | None = None  # default: `lead_in_seconds` before `start`
    stopped_at: float | None = None  # default: runs to `end`
    producing_from: float | None = None  # standby (nothing delivered to Kafka) before this instant
    connect_delay_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.days < 1:
            raise SyntheticError(f"days must be >= 1, got {self.days}")
        if self.scrape_interval <= 0:
            raise SyntheticError(f"scrape_interval must be > 0, got {self.scrape_interval}")
        for fault in self.faults:
            if fault.day >= self.days:
                raise SyntheticError(f"fault {fault.kind} on day {fault.day} is outside the {self.days} days")

    @property
    def end(self) -> float:
        return self.start + self.days * self.profile.day_seconds

    @property
    def process_start(self) -> float:
        return self.process_started_at if self.process_started_at is not None else self.start - self.lead_in_seconds

    @property
    def process_end(self) -> float:
        return self.end if self.stopped_at is None else min(self.end, self.stopped_at)

    @property
    def connection_opens(self) -> float:
        return self.process_start + self.connect_delay_seconds

    def day_start(self, day: int) -> float:
        return self.start + day * self.profile.day_seconds

    def day_window(self, day: int) -> tuple[float, float]:
        return self.day_start(day), self.day_start(day + 1)

    def at(self, day: int, hours: float) -> float:
        """Time of `hours` (profile hours) into `day`."""
        return self.day_start(day) + self.profile.hours(hours)

    def faults_of(self, kind: str) -> list[Fault]:
        return [fault for fault in self.faults if fault.kind == kind]


@dataclass
class _Events:
    rotations: list[float] = field(default_factory=list)
    reconnects: list[tuple[float, str]] = field(default_factory=list)
    pong_timeouts: list[float] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)


def _schedule(history: SyntheticHistory) -> _Events:
    """Rotations, reconnects and pings as the streamer would produce them, faults included."""
    profile = history.profile
    events = _Events()
    skips = {fault.day for fault in history.faults_of("missing_rotation")}
    pong_days = {fault.day for fault in history.faults_of("pong_timeout")}
    outage_days = {fault.day: fault for fault in history.faults_of("outage")}
    connection_open = history.connection_opens
    next_rotation = connection_open + profile.rotation_seconds
    while next_rotation <= history.process_end:
        day = math.floor((next_rotation - history.start) / profile.day_seconds)
        hour = (next_rotation - history.day_start(day)) / profile.hours(1) if day >= 0 else -1
        if day in skips and hour >= 12:
            skips.discard(day)
            next_rotation += profile.rotation_seconds  # the connection simply lives on
            continue
        events.rotations.append(next_rotation)
        connection_open = next_rotation
        if day in pong_days and hour >= 10:
            pong_days.discard(day)
            failure = next_rotation + profile.hours(1 / 60)
            events.pong_timeouts.append(failure)
            events.reconnects.append((failure, "pong_timeout"))
            connection_open = failure + profile.hours(1 / 3600)
        elif day in outage_days and hour >= 7:
            fault = outage_days.pop(day)
            begin = next_rotation + profile.hours(1 / 60)
            finish = begin + profile.hours((fault.value or 50.0) / 60)
            events.outages.append((begin, finish))
            events.reconnects.append((finish, "error"))
            connection_open = finish
        next_rotation = connection_open + profile.rotation_seconds
    ping = history.connection_opens - 1.0 + 37.0 * profile.scale
    while ping <= history.process_end:
        if not any(begin <= ping <= finish for begin, finish in events.outages):
            events.pings.append(ping)
        ping += profile.ping_interval_seconds
    return events


def _count_until(times: Sequence[float], t: float) -> int:
    return bisect.bisect_right(times, t)


def _in_any(t: float, spans: Iterable[tuple[float, float]]) -> bool:
    return any(begin <= t < finish for begin, finish in spans)


def generate(history: SyntheticHistory) -> list[Series]:
    """Every series of the history, each with `__name__`, job and instance labels, at the scrape interval."""
    profile = history.profile
    events = _schedule(history)
    rng = random.Random(f"{history.seed}:{history.instance}")
    step = history.scrape_interval
    first = math.ceil(history.process_start / step) * step
    times = [first + index * step for index in range(int((history.process_end - first) // step) + 1)]
    base = {"job": history.job, "instance": history.instance}

    def labels(name: str, **extra: str) -> dict[str, str]:
        return {"__name__": name, **base, **extra}

    rotation_times = events.rotations
    ping_times = events.pings
    pong_times = events.pong_timeouts
    reconnect_reasons = sorted({reason for _, reason in events.reconnects})
    reconnect_times = {reason: [t for t, r in events.reconnects if r == reason] for reason in reconnect_reasons}
    loss = [(history.at(fault.day, 9), fault.value or 3.0) for fault in history.faults_of("message_loss")]
    loss_times = [t for t, _ in loss]
    shortfall = [
        (history.day_start(fault.day), fault.value if fault.value is not None else 0.03)
        for fault in history.faults_of("kafka_shortfall")
    ]
    rss_spans = [
        (history.at(fault.day, 13), history.at(fault.day, 15), fault.value or 300.0)
        for fault in history.faults_of("rss_over_ceiling")
    ]
    leak_spans = [
        (history.at(fault.day, 6), history.at(fault.day, 6 + 40 / 60)) for fault in history.faults_of("leak_alert")
    ]
    alert_spans: list[tuple[str, float, float]] = [
        (fault.alertname, history.at(fault.day, 20), history.at(fault.day, 20 + 10 / 60))
        for fault in history.faults_of("critical_alert")
    ]
    alert_spans += [("BinanceMemoryLeakDetected", begin + profile.hours(0.25), finish) for begin, finish in leak_spans]

    points: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}

    def add(name_labels: dict[str, str], t: float, value: float) -> None:
        key = (name_labels["__name__"], tuple(sorted(name_labels.items())))
        points.setdefault(key, []).append((t, value))

    messages = dict.fromkeys(history.symbols, 0.0)
    lost_to_kafka = 0.0
    held_in_standby = 0.0
    previous = history.process_start
    for t in times:
        dt = t - previous
        previous = t
        connected = t >= history.connection_opens and not _in_any(t, events.outages)
        delivered_fraction = 1.0
        for since, fraction in shortfall:
            if t > since:
                delivered_fraction = 1.0 - fraction
        if connected and dt > 0:
            for symbol in history.symbols:
                arriving = history.rate_per_symbol * dt * (0.8 + 0.4 * rng.random())
                messages[symbol] += arriving
                lost_to_kafka += arriving * (1.0 - delivered_fraction)
        rss = history.rss_mb + history.rss_growth_mb_per_day * (t - history.process_start) / profile.day_seconds
        rss += max(-2.5, min(2.5, rng.gauss(0.0, 1.0))) * history.rss_noise_mb
        for begin, finish, level in rss_spans:
            if begin <= t < finish:
                rss = level + rng.random()
        score = 0.02 + 0.1 * rng.random()
        if _in_any(t, leak_spans):
            score = 0.85
        add(labels("process_start_time_seconds"), t, history.process_start)
        add(labels("process_memory_rss_bytes"), t, round(rss * 1e6))
        add(labels("memory_leak_detection_score"), t, round(score, 4))
        add(labels("binance_connection_status"), t, 1.0 if connected else 0.0)
        total_messages = 0.0
        for symbol in history.symbols:
            add(
                labels("binance_messages_received_total", symbol=symbol, stream="trade"),
                t,
                math.floor(messages[symbol]),
            )
            total_messages += math.floor(messages[symbol])
        if history.producing_from is not None and t < history.producing_from:
            held_in_standby = total_messages  # released at the handover from the old color's last id on
        delivered = total_messages - lost_to_kafka - held_in_standby
        add(labels("kafka_messages_produced_total", topic=history.topic), t, math.floor(delivered))
        add(labels("binance_connection_rotations_total", reason="scheduled"), t, _count_until(rotation_times, t))
        add(labels("binance_pings_sent_total"), t, _count_until(ping_times, t))
        add(labels("binance_pong_timeouts_total"), t, _count_until(pong_times, t))
        for reason in reconnect_reasons:
            count = _count_until(reconnect_times[reason], t)
            if count:  # a labelled child exists from its first event on
                add(labels("binance_reconnects_total", reason=reason), t, count)
        gaps = _count_until(loss_times, t)
        if gaps:
            add(labels("binance_sequence_gaps_total", symbol=history.symbols[0], stream="trade"), t, gaps)
        lost = sum(amount for when, amount in loss if when <= t)
        add(labels("binance_missing_messages_total"), t, lost)
        if lost:
            add(labels("binance_gap_unrepaired_messages_total", stream="trade"), t, lost)
        add(labels("binance_duplicates_dropped_total"), t, 0)
        add(labels("kafka_produce_errors_total"), t, 0)
        for alertname, begin, finish in alert_spans:
            if begin <= t < finish:
                add(
                    {
                        "__name__": "ALERTS",
                        **base,
                        "alertname": alertname,
                        "alertstate": "firing",
                        "severity": "critical",
                    },
                    t,
                    1.0,
                )
    return [Series(dict(key[1]), values) for key, values in points.items()]


# --- OpenMetrics -------------------------------------------------------------------------------------


def _family(name: str) -> tuple[str, str]:
    if name in COUNTERS:
        return name.removesuffix("_total"), "counter"
    return name, "gauge"


def _label_text(labels: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    inner = ",".join(f'{key}="{escape(value)}"' for key, value in sorted(labels.items()) if key != "__name__")
    return f"{{{inner}}}" if inner else ""


def openmetrics_lines(series: Sequence[Series], start: float | None = None, end: float | None = None) -> Iterator[str]:
    """OpenMetrics exposition of the points with start <= t < end, one family after another, `# EOF` last."""
    by_family: dict[str, list[Series]] = {}
    for one in series:
        by_family.setdefault(one.labels["__name__"], []).append(one)
    for name in sorted(by_family):
        family, kind = _family(name)
        lines = []
        for one in by_family[name]:
            label_text = _label_text(dict(one.labels))
            for t, value in one.points:
                if (start is None or t >= start) and (end is None or t < end):
                    lines.append(f"{name}{label_text} {value:.17g} {t:.3f}")
        if lines:
            yield f"# TYPE {family} {kind}"
            yield from lines
    yield "# EOF"


def write_openmetrics_days(series: Sequence[Series], out_dir: Path, day_seconds: float = 86_400.0) -> list[Path]:
    """One OpenMetrics file per `day_seconds` of data.

    promtool re-parses its whole input once per 2 h block it writes, so a month in one file costs 360
    passes over a month of samples; day-sized files cost 12 passes over a day each.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    buckets: dict[int, list[Series]] = {}
    for one in series:
        split: dict[int, list[tuple[float, float]]] = {}
        for t, value in one.points:
            split.setdefault(math.floor(t / day_seconds), []).append((t, value))
        for bucket, points in split.items():
            buckets.setdefault(bucket, []).append(Series(one.labels, points))
    if not buckets:
        raise SyntheticError("no points to write")
    paths = []
    for bucket in sorted(buckets):
        path = out_dir / f"history-{int(bucket * day_seconds)}.om"
        with path.open("w") as handle:
            for line in openmetrics_lines(buckets[bucket]):
                handle.write(line + "\n")
        paths.append(path)
    return paths


def history_days(days: int, now: float | None = None, margin_seconds: float = 3 * HOUR) -> float:
    """Start (UTC midnight) of the last `days` whole days ending at least `margin_seconds` before now.

    Backfilled blocks must lie before the running Prometheus' head block, hence the margin.
    """
    now = time.time() if now is None else now
    end = math.floor((now - margin_seconds) / 86_400.0) * 86_400.0
    return end - days * 86_400.0


# --- a week with deployments ---------------------------------------------------------------------------


class WeekScenario(enum.Enum):
    """Weeks of a blue-green pair (instances `blue` and `green`), each with its deployment history."""

    # Wednesday (day 2) 11:00 handover cutover blue -> green; Friday (day 4) 15:00 handover rollback to blue.
    HANDOVER_AND_ROLLBACK = "handover-and-rollback"
    # The same, but Friday's rollback restarts blue, whose first connection opens only at 15:10.
    ROLLBACK_WITH_OUTAGE = "rollback-with-outage"
    # Wednesday 10:55-11:00 dual mode (both colors deliver to Kafka), cutover to green at 11:00.
    DUAL_MODE = "dual-mode"


@dataclass(frozen=True)
class DeploymentWeek:
    histories: tuple[SyntheticHistory, ...]
    records: tuple[DeploymentRecord, ...]
    outage: tuple[float, float] | None = None  # the real outage the scenario holds, if any


OUTAGE_MINUTES = 10.0


class _WeekHistoryArgs(TypedDict):
    """The SyntheticHistory fields every process of a deployment week shares."""

    start: float
    days: int
    scrape_interval: float
    profile: ValidationProfile
    faults: tuple[Fault, ...]


def deployment_week(
    start: float,
    scenario: WeekScenario,
    scrape_interval: float = 60.0,
    profile: ValidationProfile = PRODUCTION,
    faults: tuple[Fault, ...] = (),
    shard: Shard = WHOLE_MARKET,
) -> DeploymentWeek:
    """Seven days from `start` (a UTC midnight) of blue and green processes and the history that records
    their cutovers: a deploy starts the new color 5 min before its cutover (at :55), so both run meanwhile.
    `faults` go to every process; each happens only in the process running at its time. The processes are
    `shard`'s (instances `s<i>-blue`, `s<i>-green` when the market is split); the records name colors."""
    common: _WeekHistoryArgs = {
        "start": start, "days": 7, "scrape_interval": scrape_interval, "profile": profile, "faults": faults
    }
    wednesday = start + 2 * profile.day_seconds + profile.hours(11)
    friday = start + 4 * profile.day_seconds + profile.hours(15)
    lead = profile.hours(5 / 60)
    deploy_mode = "dual" if scenario is WeekScenario.DUAL_MODE else "handover"
    histories = [
        SyntheticHistory(instance=instance_name("blue", shard), stopped_at=wednesday, **common),
        SyntheticHistory(
            instance=instance_name("green", shard),
            process_started_at=wednesday - lead,
            producing_from=wednesday if deploy_mode == "handover" else None,
            stopped_at=None if scenario is WeekScenario.DUAL_MODE else friday,
            seed=11,
            **common,
        ),
    ]
    records = [
        DeploymentRecord(
            deployment_id="synthetic-deploy",
            kind="deploy",
            status="succeeded",
            from_color="blue",
            to_color="green",
            active_color="green",
            image="k2-platform:v2.1",
            mode=deploy_mode,
            started_at=wednesday - lead - 30.0,
            finished_at=wednesday + 60.0,
            switches=[switch_entry(wednesday, "blue", "green")],
            overlap=[wednesday - lead, wednesday] if deploy_mode == "dual" else None,
        )
    ]
    outage = None
    if scenario is not WeekScenario.DUAL_MODE:
        restart = scenario is WeekScenario.ROLLBACK_WITH_OUTAGE
        histories.append(
            SyntheticHistory(
                instance=instance_name("blue", shard),
                process_started_at=friday if restart else friday - lead,
                producing_from=None if restart else friday,
                connect_delay_seconds=profile.hours(OUTAGE_MINUTES / 60) if restart else 1.0,
                seed=13,
                **common,
            )
        )
        records.append(
            DeploymentRecord(
                deployment_id="synthetic-rollback",
                kind="rollback",
                status="manual_rollback",
                from_color="green",
                to_color="blue",
                active_color="blue",
                image="k2-platform:v2.0-stable",
                mode="restart" if restart else "handover",
                started_at=friday - (0.0 if restart else lead),
                finished_at=friday + (profile.hours(OUTAGE_MINUTES / 60) if restart else 10.0),
                rollback_seconds=profile.hours(OUTAGE_MINUTES / 60) if restart else lead + 10.0,
                switches=[switch_entry(friday, "green", "blue")],
            )
        )
        outage = (friday, friday + profile.hours(OUTAGE_MINUTES / 60)) if restart else None
    return DeploymentWeek(tuple(histories), tuple(records), outage)
