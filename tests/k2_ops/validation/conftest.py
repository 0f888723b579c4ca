"""A real Prometheus holding synthetic production history, backfilled with promtool before it starts.

Instances (one streamer each, all job k2-streamer):
- `good-week` / `bad-week`: the 7 whole UTC days ending >= 3 h before now; the bad week has one day with
  5 rotations (day 1), one with a pong timeout (day 3), one with RSS over the 250 MB ceiling (day 5);
- `alert-week`: a good week but for a critical alert firing on day 2 (exercises the ALERTS path);
- `good-month` / `bad-month` / `worse-month`: the 30 days ending >= 3 h before now, sampled every 120 s.

`deployment_weeks_prometheus` is another Prometheus with `blue` and `green` through three weeks with
deployments (`synthetic.WeekScenario`), and, in the latest of those weeks, a market split into two shards:
shard 0 of 2 (`s0-blue`, `s0-green`) through the rollback-with-outage week, shard 1 of 2 through the clean
handover-and-rollback week, each with its own deployment history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k2_ops.stack import AlertmanagerService, PrometheusService
from k2_ops.validation.backfill import BackfillResult, create_blocks
from k2_ops.validation.prometheus import PrometheusClient
from k2_ops.validation.synthetic import (
    DeploymentWeek,
    Fault,
    SyntheticHistory,
    WeekScenario,
    deployment_week,
    generate,
    history_days,
)
from streamer.shards import Shard

WEEK_SCRAPE_SECONDS = 60.0
MONTH_SCRAPE_SECONDS = 120.0

BAD_WEEK_FAULTS = (Fault("missing_rotation", 1), Fault("pong_timeout", 3), Fault("rss_over_ceiling", 5))
BAD_MONTH_FAULTS = (Fault("pong_timeout", 4), Fault("kafka_shortfall", 10), Fault("leak_alert", 12))
WORSE_MONTH_FAULTS = (Fault("missing_rotation", 3), Fault("outage", 9), Fault("message_loss", 21))


@dataclass
class HistoryPrometheus:
    service: PrometheusService
    client: PrometheusClient
    histories: dict[str, SyntheticHistory]
    backfill: BackfillResult
    week_start: float
    month_start: float


@pytest.fixture(scope="session")
def history_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryPrometheus]:
    root: Path = tmp_path_factory.mktemp("history-prometheus")
    week_start = history_days(7)
    month_start = history_days(30)
    histories = {
        "good-week": SyntheticHistory(week_start, 7, "good-week", scrape_interval=WEEK_SCRAPE_SECONDS),
        "bad-week": SyntheticHistory(
            week_start, 7, "bad-week", scrape_interval=WEEK_SCRAPE_SECONDS, faults=BAD_WEEK_FAULTS
        ),
        "alert-week": SyntheticHistory(
            week_start,
            7,
            "alert-week",
            scrape_interval=WEEK_SCRAPE_SECONDS,
            faults=(Fault("critical_alert", 2, alertname="KafkaProduceErrors"),),
        ),
        "good-month": SyntheticHistory(month_start, 30, "good-month", scrape_interval=MONTH_SCRAPE_SECONDS),
        "bad-month": SyntheticHistory(
            month_start, 30, "bad-month", scrape_interval=MONTH_SCRAPE_SECONDS, faults=BAD_MONTH_FAULTS
        ),
        "worse-month": SyntheticHistory(
            month_start,
            30,
            "worse-month",
            scrape_interval=MONTH_SCRAPE_SECONDS,
            rss_growth_mb_per_day=4.0,
            faults=WORSE_MONTH_FAULTS,
        ),
    }
    series = [one for history in histories.values() for one in generate(history)]
    # Retention far beyond the data's age, or Prometheus deletes the backfilled blocks at start-up.
    service = PrometheusService(root, retention="3650d")
    backfill = create_blocks(series, service.data_dir, root / "openmetrics")
    service.start()
    try:
        yield HistoryPrometheus(service, PrometheusClient(service.url), histories, backfill, week_start, month_start)
    finally:
        service.stop()


@pytest.fixture(scope="session")
def own_alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerService]:
    """A real Alertmanager of our own (the client tests need no Kafka or Prometheus)."""
    service = AlertmanagerService(tmp_path_factory.mktemp("alertmanager"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@dataclass
class DeploymentWeeksPrometheus:
    """A real Prometheus holding three weeks of a blue-green pair, one scenario each, a day apart (a process
    of one week never overlaps one of another), and each week's deployment history."""

    client: PrometheusClient
    weeks: dict[WeekScenario, DeploymentWeek]
    starts: dict[WeekScenario, float]
    shards: tuple[DeploymentWeek, ...]  # shard i of len(shards), all starting at `shards_start`
    shards_start: float


@pytest.fixture(scope="session")
def deployment_weeks_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeploymentWeeksPrometheus]:
    root: Path = tmp_path_factory.mktemp("deployment-weeks")
    latest = history_days(7)
    starts = {scenario: latest - index * 8 * 86_400.0 for index, scenario in enumerate(WeekScenario)}
    weeks = {
        scenario: deployment_week(start, scenario, scrape_interval=WEEK_SCRAPE_SECONDS)
        for scenario, start in starts.items()
    }
    shards = tuple(
        deployment_week(latest, scenario, scrape_interval=WEEK_SCRAPE_SECONDS, shard=Shard(index, 2))
        for index, scenario in enumerate((WeekScenario.ROLLBACK_WITH_OUTAGE, WeekScenario.HANDOVER_AND_ROLLBACK))
    )
    series = [one for week in (*weeks.values(), *shards) for history in week.histories for one in generate(history)]
    service = PrometheusService(root, retention="3650d")
    create_blocks(series, service.data_dir, root / "openmetrics")
    service.start()
    try:
        yield DeploymentWeeksPrometheus(PrometheusClient(service.url), weeks, starts, shards, latest)
    finally:
        service.stop()
