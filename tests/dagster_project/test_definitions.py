"""The code location loads and validates as `dagster dev -w workspace.yaml` would load it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from dagster_project.definitions import defs
from k2_ops.paths import REPO_ROOT


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All code locations passed validation" in output


def test_everything_is_listed() -> None:
    repo = defs.get_repository_def()
    job_names = {job.name for job in repo.get_all_jobs()}
    assert {"blue_green_deploy", "rollback", "soak_test", "incident_snapshot", "daily_validation_job",
            "weekly_validation_job", "monthly_stability_job"} <= job_names
    assert {s.name for s in repo.schedule_defs} == {
        "daily_validation_schedule", "weekly_validation_schedule", "monthly_stability_schedule"}
    assert {s.name for s in repo.sensor_defs} == {
        "alertmanager_sensor", "k2_run_failure_sensor", "deployment_health_sensor"}
    asset_keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert asset_keys == {"daily_validation_report", "weekly_validation_report", "monthly_stability_report",
                          "soak_memory_profile", "soak_report", "deployment_history"}
    daily_checks = {key.name for key in repo.asset_graph.asset_check_keys
                    if key.asset_key.to_user_string() == "daily_validation_report"}
    assert daily_checks == {"memory_stable", "rotations", "pings", "message_rate", "unscheduled_reconnects",
                            "critical_alerts", "uptime", "book_integrity"}


def test_deploy_steps_are_separate_ops_in_order() -> None:
    job = defs.resolve_job_def("blue_green_deploy")
    order = [node.name for node in job.nodes_in_topological_order]
    assert order == ["build_image", "start_new_color", "wait_until_ready", "dual_operation", "cutover",
                     "validate_new_color", "record_deployment"]
    config = job.graph.node_named("build_image").definition.config_schema.config_type
    fields = config.fields
    assert fields["image"].default_value == "k2-platform:v2.0-stable"
    assert fields["dual_operation_seconds"].default_value == 600.0
    assert fields["validation_seconds"].default_value == 900.0
    assert fields["mode"].default_value == "dual"


def test_daily_schedule_runs_at_0015_utc_for_the_previous_day() -> None:
    schedule = defs.resolve_schedule_def("daily_validation_schedule")
    assert schedule.cron_schedule == "15 0 * * *"
    assert schedule.execution_timezone in (None, "UTC")
    at = datetime(2026, 3, 10, 0, 15, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        data = schedule.evaluate_tick(context)
    assert [request.partition_key for request in data.run_requests] == ["2026-03-09"]


def test_weekly_and_monthly_schedules_target_the_previous_period() -> None:
    weekly = defs.resolve_schedule_def("weekly_validation_schedule")
    monthly = defs.resolve_schedule_def("monthly_stability_schedule")
    with dg.instance_for_test() as instance:
        week = weekly.evaluate_tick(dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 3, 16, 1, 0, tzinfo=UTC)))  # a Monday
        month = monthly.evaluate_tick(dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 4, 1, 1, 30, tzinfo=UTC)))
    assert [r.partition_key for r in week.run_requests] == ["2026-03-09"]  # Monday 9 .. Sunday 15 March
    assert [r.partition_key for r in month.run_requests] == ["2026-03-01"]


def test_rotation_and_ping_checks_say_they_are_per_connection() -> None:
    from dagster_project.assets.validation import (
        daily_validation_report,
        monthly_stability_report,
        weekly_validation_report,
    )

    for asset in (daily_validation_report, weekly_validation_report, monthly_stability_report):
        specs = {spec.name: spec.description or "" for spec in asset.check_specs}
        for name in ("rotations", "pings"):
            assert "per connection" in specs[name], (asset, specs[name])
            assert "x the streamer's connections, binance_connection_slots" in specs[name]
        assert "per connection" not in specs["message_rate"]
