"""Fixtures of the Dagster tests: resources pointed at real services (the session's Kafka, Prometheus and
Alertmanager, an exchange simulator, streamers run by the process backend) and a Dagster instance on disk."""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.assets.reporting import ReportsResource
from dagster_project.resources import AlertmanagerResource, DeploymentResource, PrometheusResource
from dagster_project.sensors import FailureNotifier
from k2_ops.deploy.audit import read_trade_ids
from k2_ops.deploy.history import DeploymentRecord
from k2_ops.deploy.local import trades_topic
from k2_ops.simulator import BackgroundSimulator, SimulatorConfig
from k2_ops.stack import AlertmanagerService, KafkaService, PrometheusService
from k2_ops.stack.apps import DagsterProcess
from k2_ops.validation.backfill import create_blocks
from k2_ops.validation.synthetic import (
    DeploymentWeek,
    Fault,
    SyntheticHistory,
    WeekScenario,
    deployment_week,
    generate,
)
from streamer.shards import Shard

SYMBOLS = ("btcusdt", "ethusdt")


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundSimulator]:
    config = SimulatorConfig(symbols=SYMBOLS, rate_per_symbol=40.0, workdir=tmp_path_factory.mktemp("sim"))
    with BackgroundSimulator(config) as sim:
        yield sim


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@dataclass
class Deploy:
    resource: DeploymentResource
    simulator: BackgroundSimulator
    bootstrap_servers: str
    topic: str

    def kafka_ids(self) -> list[tuple[str, int]]:
        return read_trade_ids(self.bootstrap_servers, self.topic)

    def stop_all(self) -> None:
        backend = self.resource.make_backend()
        for color in ("blue", "green"):
            backend.stop(color, 10.0)


@pytest.fixture
def deploy(tmp_path: Path, kafka: KafkaService, prometheus: PrometheusService,
           simulator: BackgroundSimulator) -> Iterator[Deploy]:
    prefix = f"dagstertest.{uuid.uuid4().hex[:8]}"
    resource = DeploymentResource(
        backend="process", run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "deploy"),
        kafka_bootstrap_servers=kafka.bootstrap_servers, ws_url=f"{simulator.ws_base_url}/stream",
        ca_file=str(simulator.ca_file), schema_registry_url="mock://dagster-tests", topic_prefix=prefix,
        symbols=",".join(SYMBOLS), prometheus_run_dir=str(prometheus.run_dir),
        streamer_env={"K2_HEALTH_CHECK_TIMEOUT_SECONDS": "5", "K2_KAFKA_TOPIC_PARTITIONS": "1",
                      "K2_MEMORY_SAMPLE_INTERVAL_SECONDS": "1"},
        unhealthy_rollback_seconds=1.0,
    )
    rig = Deploy(resource, simulator, kafka.bootstrap_servers, trades_topic(prefix))
    try:
        yield rig
    finally:
        rig.stop_all()


@pytest.fixture
def resources(tmp_path: Path, prometheus: PrometheusService, alertmanager: AlertmanagerService,
              deploy: Deploy) -> dict[str, object]:
    return {
        "prometheus": PrometheusResource(url=prometheus.url, scrape_interval_seconds=1.0),
        "alertmanager": AlertmanagerResource(url=alertmanager.url),
        "deployment": deploy.resource,
        "reports": ReportsResource(root=str(tmp_path / "reports")),
        "failure_notifier": FailureNotifier(failures_file=str(tmp_path / "failures.jsonl")),
    }


# ---- a real Prometheus holding a backfilled synthetic production week (Monday..Sunday) -------------------
DAY = 86_400.0
SCRAPE = 60.0
BAD_WEEK = (Fault("missing_rotation", 1), Fault("pong_timeout", 3), Fault("rss_over_ceiling", 5))


def last_whole_monday_week(now: float, margin_s: float = 3 * 3600.0) -> float:
    """Start of the latest Monday..Sunday week that ended at least `margin_s` before now (blocks must
    precede Prometheus' head block)."""
    end_day = math.floor((now - margin_s) / DAY)  # days since the epoch, a Thursday
    monday = end_day - 7 - ((end_day - 7 + 3) % 7)
    return monday * DAY


@dataclass
class WeekPrometheus:
    service: PrometheusService
    week_start: float

    @property
    def deployments(self) -> tuple[DeploymentRecord, ...]:
        """The deployment history of the week's blue and green."""
        return deployment_week(self.week_start, WeekScenario.HANDOVER_AND_ROLLBACK, SCRAPE).records

    def day(self, index: int) -> str:
        return datetime.fromtimestamp(self.week_start + index * DAY, UTC).strftime("%Y-%m-%d")

    def shard_weeks(self) -> tuple[DeploymentWeek, ...]:
        return shard_weeks(self.week_start)


def shard_weeks(start: float) -> tuple[DeploymentWeek, ...]:
    """A market split into 2 shards through one week: shard 0 with a 10-minute outage in Friday's rollback,
    shard 1 without (instances s0-*, s1-*), each with its deployment history."""
    return tuple(deployment_week(start, scenario, SCRAPE, shard=Shard(index, 2)) for index, scenario
                 in enumerate((WeekScenario.ROLLBACK_WITH_OUTAGE, WeekScenario.HANDOVER_AND_ROLLBACK)))


@pytest.fixture(scope="session")
def week_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeekPrometheus]:
    root = tmp_path_factory.mktemp("week-prometheus")
    start = last_whole_monday_week(time.time())
    assert datetime.fromtimestamp(start, UTC).weekday() == 0
    histories = [SyntheticHistory(start, 7, "good-week", scrape_interval=SCRAPE),
                 SyntheticHistory(start, 7, "bad-week", scrape_interval=SCRAPE, faults=BAD_WEEK),
                 # blue and green: a handover cutover on Wednesday, a rollback on Friday (WeekPrometheus.deployments)
                 *deployment_week(start, WeekScenario.HANDOVER_AND_ROLLBACK, SCRAPE).histories]
    histories += [history for week in shard_weeks(start) for history in week.histories]
    service = PrometheusService(root, retention="3650d")
    create_blocks([s for h in histories for s in generate(h)], service.data_dir, root / "openmetrics")
    service.start()
    try:
        yield WeekPrometheus(service, start)
    finally:
        service.stop()


# ---- a real Prometheus holding a backfilled synthetic month (the 30 days ending with a calendar month) -------
MONTH_SCRAPE = 120.0


@dataclass
class MonthPrometheus:
    service: PrometheusService
    month: str  # partition key, first day of the month


def last_whole_month(now: float, margin_s: float = 3 * 3600.0) -> tuple[str, float]:
    """The latest calendar month that ended at least `margin_s` before now: (partition key, its end)."""
    limit = datetime.fromtimestamp(now - margin_s, UTC)
    end = datetime(limit.year, limit.month, 1, tzinfo=UTC)
    start = datetime(end.year - (end.month == 1), 12 if end.month == 1 else end.month - 1, 1, tzinfo=UTC)
    return start.strftime("%Y-%m-%d"), end.timestamp()


@pytest.fixture(scope="session")
def month_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonthPrometheus]:
    root = tmp_path_factory.mktemp("month-prometheus")
    month, end = last_whole_month(time.time())
    start = end - 30 * DAY
    histories = [SyntheticHistory(start, 30, "good-month", scrape_interval=MONTH_SCRAPE),
                 SyntheticHistory(start, 30, "bad-month", scrape_interval=MONTH_SCRAPE,
                                  faults=(Fault("pong_timeout", 4), Fault("leak_alert", 12)))]
    service = PrometheusService(root, retention="3650d")
    create_blocks([s for h in histories for s in generate(h)], service.data_dir, root / "openmetrics")
    service.start()
    try:
        yield MonthPrometheus(service, month)
    finally:
        service.stop()



# ---- `dagster dev` with the project's workspace, resources pointing at this module's services -----------------
@pytest.fixture
def dagster_ui(tmp_path: Path, kafka: KafkaService, alertmanager: AlertmanagerService, simulator: BackgroundSimulator,
               week_prometheus: WeekPrometheus) -> Iterator[tuple[DagsterProcess, DeploymentResource]]:
    run_dir = tmp_path / "run"
    (run_dir / "simulator").mkdir(parents=True)
    shutil.copy(simulator.ca_file, run_dir / "simulator" / "ca.pem")
    # What `k2 stack up` writes: resources find every service through it.
    (run_dir / "stack.json").write_text(json.dumps({"services": {
        "kafka": {"url": f"kafka://{kafka.bootstrap_servers}"},
        "alertmanager": {"url": alertmanager.url},
        "prometheus": {"url": week_prometheus.service.url},
        "simulator": {"url": simulator.ws_base_url},
    }}))
    prefix = f"browsertest.{uuid.uuid4().hex[:8]}"
    ui = DagsterProcess(tmp_path / "dagster", env={
        "K2_RUN_DIR": str(run_dir), "K2_KAFKA_TOPIC_PREFIX": prefix,
        "K2_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": f"{SCRAPE:g}",
    })
    deployment = DeploymentResource(run_dir=str(run_dir), topic_prefix=prefix)
    ui.start()
    try:
        yield ui, deployment
    finally:
        ui.stop()
        backend = deployment.make_backend()
        for color in ("blue", "green"):
            backend.stop(color, 10.0)
