"""`soak_test` materialises `soak_memory_profile` and `soak_report` from a real soak: a streamer started by the
soak runner against the simulator and Kafka, sampled on a compressed clock.

A healthy streamer must pass every criterion; the same soak with a streamer that retains memory on purpose
(K2_TEST_LEAK_BYTES_PER_SECOND, the streamer's test-only leak) must fail `memory_growth`, and only it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_project.assets.soak import soak_test
from dagster_project.definitions import defs
from dagster_project.resources import DeploymentResource
from k2_ops.validation.soak import SOAK_TOPIC_PREFIX

pytestmark = pytest.mark.slow

SOAK_SECONDS = 12.0
# 10 MB/s retained for the ~11 s measured after the warm-up: ~110 MB, twice the 50 MB memory_growth bound.
LEAK_BYTES_PER_SECOND = 10_000_000
MAX_MEMORY_GROWTH_MB = 50.0


def run_soak_job(resources: dict[str, object], instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(soak_test.name)
    run_config = {"ops": {"soak_memory_profile": {"config": {
        "profile": "ci", "duration_seconds": SOAK_SECONDS, "sample_interval_seconds": 1.0}}}}
    result = job.execute_in_process(run_config=run_config, resources=resources, instance=instance,
                                    raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return result


def failed_checks(profile_out: dict[str, Any]) -> list[str]:
    return [check["name"] for check in profile_out["checks"] if not check["passed"]]


def run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_soak_of_a_healthy_streamer_passes_every_criterion(deploy, resources, dagster_instance) -> None:
    result = run_soak_job(resources, dagster_instance)

    profile_out = result.output_for_node("soak_memory_profile")
    assert failed_checks(profile_out) == [], profile_out["checks"]
    assert profile_out["passed"] is True
    assert {check["name"] for check in profile_out["checks"]} >= {
        "runs_full_duration", "memory_growth", "message_rate", "connection_drops", "data_integrity"}
    profile = json.loads(Path(profile_out["profile_path"]).read_text())
    assert len(profile["samples"]) >= 5
    # The soak streamer writes to its own topics, never beside the production color.
    assert profile["metadata"]["streamer_env"]["K2_KAFKA_TOPIC_PREFIX"] == SOAK_TOPIC_PREFIX
    assert resources["deployment"].topic_prefix != SOAK_TOPIC_PREFIX
    assert profile["samples"][-1]["messages"] > 0
    html = Path(result.output_for_node("soak_report")["files"]["html"]).read_text()
    for check in profile_out["checks"]:
        assert check["name"] in html
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("soak_criteria_passed", True)
    # The runner's progress lines (elapsed, ETA, RSS, rate) and verdict reached the run log.
    messages = run_log(dagster_instance, result)
    assert any("ETA" in m for m in messages), messages
    assert any(m.startswith("soak: PASSED") for m in messages), messages
    assert not any(m.startswith("soak: FAILED") for m in messages), messages


def test_soak_of_a_leaking_streamer_fails_memory_growth(deploy, resources, dagster_instance) -> None:
    production = resources["deployment"]
    assert isinstance(production, DeploymentResource)
    leaking = DeploymentResource(**{**production.model_dump(), "streamer_env": {
        **production.streamer_env, "K2_TEST_LEAK_BYTES_PER_SECOND": str(LEAK_BYTES_PER_SECOND)}})

    result = run_soak_job({**resources, "deployment": leaking}, dagster_instance)

    profile_out = result.output_for_node("soak_memory_profile")
    assert failed_checks(profile_out) == ["memory_growth"], profile_out["checks"]
    assert profile_out["passed"] is False
    [growth] = [check for check in profile_out["checks"] if check["name"] == "memory_growth"]
    assert growth["observed"] > MAX_MEMORY_GROWTH_MB, growth
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("soak_criteria_passed", False)
    assert evaluation.description == "failed: memory_growth"
    messages = run_log(dagster_instance, result)
    assert any(m.startswith("soak: FAILED") for m in messages), messages
    assert any(m.startswith("  FAIL memory_growth") for m in messages), messages
