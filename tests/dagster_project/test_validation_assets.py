"""Daily partitions materialised over a backfilled week (synthetic production history written into a real
Prometheus with promtool): the right checks pass and fail on the right days; the 7-day report lists them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.assets.reporting import ReportsResource
from dagster_project.assets.validation import (
    BOOK_INTEGRITY,
    DAILY_CHECKS,
    MONTHLY_CHECKS,
    daily_validation_report,
    monthly_stability_report,
    weekly_validation_report,
)
from dagster_project.resources import DeploymentResource, PrometheusResource
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.stack import KafkaService

from .conftest import MONTH_SCRAPE, SCRAPE, WeekPrometheus

pytestmark = pytest.mark.slow

def materialize_week(week: WeekPrometheus, instance_name: str, tmp_path: Path, dagster_instance: dg.DagsterInstance,
                     kafka: KafkaService) -> tuple[list[set[str]], dg.ExecuteInProcessResult, list[float]]:
    # The week's streamer streamed no depth (its topic prefix has none): book_integrity passes on that evidence.
    resources = {
        "prometheus": PrometheusResource(url=week.service.url, scrape_interval_seconds=SCRAPE),
        "deployment": DeploymentResource(state_dir=str(tmp_path / "deploy"), run_dir=str(tmp_path / "run"),
                                         kafka_bootstrap_servers=kafka.bootstrap_servers,
                                         topic_prefix=f"week.{uuid.uuid4().hex[:8]}"),
        "reports": ReportsResource(root=str(tmp_path / "reports")),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "storage")),
    }
    run_config = {"ops": {"daily_validation_report": {"config": {"instance": instance_name}}}}
    failures: list[set[str]] = []
    seconds: list[float] = []
    for index in range(7):
        began = time.monotonic()
        result = dg.materialize([daily_validation_report], partition_key=week.day(index), resources=resources,
                                run_config=run_config, instance=dagster_instance)
        seconds.append(time.monotonic() - began)
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == len(DAILY_CHECKS) + 1  # the criteria, and book_integrity
        assert next(e for e in evaluations if e.check_name == BOOK_INTEGRITY).passed
        failures.append({e.check_name for e in evaluations if not e.passed})
    began = time.monotonic()
    weekly = dg.materialize([daily_validation_report, weekly_validation_report],
                            selection=[weekly_validation_report], partition_key=week.day(0), resources=resources,
                            instance=dagster_instance)
    seconds.append(time.monotonic() - began)
    assert weekly.success
    return failures, weekly, seconds


def test_backfilled_bad_week_fails_the_right_checks_on_the_right_days(week_prometheus, tmp_path,
                                                                       dagster_instance, kafka) -> None:
    failures, weekly, seconds = materialize_week(week_prometheus, "bad-week", tmp_path, dagster_instance, kafka)
    assert failures == [set(), {"rotations"}, set(), {"unscheduled_reconnects"}, set(), {"memory_stable"}, set()]

    report = weekly.output_for_node("weekly_validation_report")
    bad_days = [week_prometheus.day(i) for i in (1, 3, 5)]
    assert report["failed_days"] == bad_days
    assert report["missing_days"] == []
    checks = {e.check_name: e for e in weekly.get_asset_check_evaluations()}
    assert not checks["all_days_passed"].passed
    # One check per daily criterion across the week: exactly the injected ones fail, naming their day.
    assert {name for name, e in checks.items() if not e.passed} == {
        "all_days_passed", "rotations", "unscheduled_reconnects", "memory_stable"}
    rotations = checks["rotations"].description
    assert rotations.startswith(f"failed on {week_prometheus.day(1)}: 5 (threshold = 6)"), rotations
    metadata = weekly.asset_materializations_for_node("weekly_validation_report")[0].metadata
    table = metadata["days"].value
    assert "| rotations (= 6) |" in table.splitlines()[0]
    for index in range(7):
        row = next(line for line in table.splitlines() if line.startswith(f"| {week_prometheus.day(index)} |"))
        assert ("| FAIL |" in row) == (index in (1, 3, 5)), row
    assert "| FAIL 5 |" in next(line for line in table.splitlines() if line.startswith(f"| {bad_days[0]} |"))
    html = Path(metadata["html_report"].value).read_text()
    assert all(day in html for day in bad_days)

    daily_dir = tmp_path / "reports" / "daily" / week_prometheus.day(5)
    assert (daily_dir / "daily.json").is_file()
    print(f"\ndaily validation: {min(seconds[:7]):.2f}..{max(seconds[:7]):.2f} s per day; 7-day report "
          f"{seconds[7]:.2f} s")


def test_backfilled_good_week_passes_every_day(week_prometheus, tmp_path, dagster_instance, kafka) -> None:
    failures, weekly, _ = materialize_week(week_prometheus, "good-week", tmp_path, dagster_instance, kafka)
    assert failures == [set()] * 7
    report = weekly.output_for_node("weekly_validation_report")
    assert report["passed"] and report["failed_days"] == []
    evaluations = weekly.get_asset_check_evaluations()
    assert len(evaluations) == len(DAILY_CHECKS) + 1 and all(e.passed for e in evaluations)


def test_a_week_with_a_cutover_and_a_rollback_is_judged_on_the_active_streamer(week_prometheus, tmp_path,
                                                                                 dagster_instance, kafka) -> None:
    """No instance configured: the deployment history of the stack decides, every day passes stitched, and
    the metadata and the 7-day report show the deployments."""
    history = DeploymentHistory(tmp_path / "deploy" / "history.jsonl")
    for record in week_prometheus.deployments:
        history.append(record)
    resources = {
        "prometheus": PrometheusResource(url=week_prometheus.service.url, scrape_interval_seconds=SCRAPE),
        "deployment": DeploymentResource(state_dir=str(tmp_path / "deploy"), run_dir=str(tmp_path / "run"),
                                         kafka_bootstrap_servers=kafka.bootstrap_servers,
                                         topic_prefix=f"week.{uuid.uuid4().hex[:8]}"),
        "reports": ReportsResource(root=str(tmp_path / "reports")),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "storage")),
    }
    assert resources["deployment"].history().path == history.path
    for index in range(7):
        result = dg.materialize([daily_validation_report], partition_key=week_prometheus.day(index),
                                resources=resources, instance=dagster_instance)
        assert result.success
        failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
        assert failed == set(), (index, failed)
        metadata = result.asset_materializations_for_node("daily_validation_report")[0].metadata
        assert metadata["judged"].value == "active streamer, stitched across deployments"
        assert ("synthetic-deploy" in metadata["deployments"].value) == (index == 2)
        assert ("synthetic-rollback" in metadata["deployments"].value) == (index == 4)
    weekly = dg.materialize([daily_validation_report, weekly_validation_report],
                            selection=[weekly_validation_report], partition_key=week_prometheus.day(0),
                            resources=resources, instance=dagster_instance)
    report = weekly.output_for_node("weekly_validation_report")
    assert report["passed"] and [d["deployment_id"] for d in report["deployments"]] == [
        "synthetic-deploy", "synthetic-rollback"]
    metadata = weekly.asset_materializations_for_node("weekly_validation_report")[0].metadata
    wednesday = next(line for line in metadata["days"].value.splitlines()
                     if line.startswith(f"| {week_prometheus.day(2)} |"))
    assert "(= 6 ± 1)" in wednesday, wednesday
    html = Path(metadata["html_report"].value).read_text()
    assert "Deployments in this period" in html and "synthetic-rollback" in html

    # The same week judged on blue alone (asked for): the days blue did not stream fail.
    blue = dg.materialize([daily_validation_report], partition_key=week_prometheus.day(3), resources=resources,
                          run_config={"ops": {"daily_validation_report": {"config": {"instance": "blue"}}}},
                          instance=dagster_instance)
    assert "uptime" in {e.check_name for e in blue.get_asset_check_evaluations() if not e.passed}


def test_weekly_report_says_which_days_were_not_validated(week_prometheus, tmp_path, dagster_instance) -> None:
    resources = {
        "reports": ReportsResource(root=str(tmp_path / "reports")),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "storage")),
        "prometheus": PrometheusResource(url=week_prometheus.service.url, scrape_interval_seconds=SCRAPE),
        "deployment": DeploymentResource(state_dir=str(tmp_path / "deploy")),
    }
    dg.materialize([daily_validation_report], partition_key=week_prometheus.day(0), resources=resources,
                   run_config={"ops": {"daily_validation_report": {"config": {"instance": "good-week"}}}},
                   instance=dagster_instance)
    weekly = dg.materialize([daily_validation_report, weekly_validation_report],
                            selection=[weekly_validation_report], partition_key=week_prometheus.day(0),
                            resources=resources, instance=dagster_instance)
    report = weekly.output_for_node("weekly_validation_report")
    assert report["missing_days"] == [week_prometheus.day(i) for i in range(1, 7)]
    assert not report["passed"]


def materialize_month(month, instance_name: str, tmp_path: Path, dagster_instance: dg.DagsterInstance
                      ) -> dg.ExecuteInProcessResult:
    resources = {
        "prometheus": PrometheusResource(url=month.service.url, scrape_interval_seconds=MONTH_SCRAPE),
        "deployment": DeploymentResource(state_dir=str(tmp_path / "deploy")),
        "reports": ReportsResource(root=str(tmp_path / "reports")),
    }
    result = dg.materialize([monthly_stability_report], partition_key=month.month, resources=resources,
                            run_config={"ops": {"monthly_stability_report": {"config": {"instance": instance_name}}}},
                            instance=dagster_instance)
    assert result.success
    return result


def test_monthly_stability_checks_on_a_backfilled_month(month_prometheus, tmp_path, dagster_instance) -> None:
    began = time.monotonic()
    good = materialize_month(month_prometheus, "good-month", tmp_path / "good", dagster_instance)
    seconds = time.monotonic() - began
    evaluations = good.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == set(MONTHLY_CHECKS)
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]

    bad = materialize_month(month_prometheus, "bad-month", tmp_path / "bad", dagster_instance)
    failed = {e.check_name for e in bad.get_asset_check_evaluations() if not e.passed}
    # A pong timeout (day 4) and a leak alert (day 12): exactly the criteria those break.
    assert failed == {"pong_timeouts", "unscheduled_reconnects", "leak_score", "memory_alerts"}
    metadata = bad.asset_materializations_for_node("monthly_stability_report")[0].metadata
    assert Path(metadata["html_report"].value).is_file()
    print(f"\n30-day stability report: {seconds:.2f} s")


def test_a_market_in_two_shards_is_judged_per_shard_and_in_total(week_prometheus, tmp_path, dagster_instance,
                                                                 kafka) -> None:
    """shard_count 2: each shard's history stitches its own instances; the asset fails a check where any
    shard failed it (shard 0's outage on Friday) and says which shard."""
    for index, week in enumerate(week_prometheus.shard_weeks()):
        history = DeploymentHistory(tmp_path / "deploy" / f"shard-{index}" / "history.jsonl")
        for record in week.records:
            history.append(record)
    resources = {
        "prometheus": PrometheusResource(url=week_prometheus.service.url, scrape_interval_seconds=SCRAPE),
        "deployment": DeploymentResource(state_dir=str(tmp_path / "deploy"), run_dir=str(tmp_path / "run"),
                                         shard_count=2, kafka_bootstrap_servers=kafka.bootstrap_servers,
                                         topic_prefix=f"week.{uuid.uuid4().hex[:8]}"),
        "reports": ReportsResource(root=str(tmp_path / "reports")),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "storage")),
    }
    verdicts = {}
    for index in (0, 4):
        result = dg.materialize([daily_validation_report], partition_key=week_prometheus.day(index),
                                resources=resources, instance=dagster_instance)
        assert result.success
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        verdicts[index] = {name for name, e in evaluations.items() if not e.passed}
        metadata = result.asset_materializations_for_node("daily_validation_report")[0].metadata
        assert metadata["judged"].value == "the market, every one of 2 shards: active streamer, stitched across " \
                                           "deployments"
    assert verdicts == {0: set(), 4: {"uptime"}}
    assert evaluations["uptime"].description.startswith("shard 0/2: ")
    assert evaluations["uptime"].description.endswith("(shards: 0/2 FAIL, 1/2 pass)")
