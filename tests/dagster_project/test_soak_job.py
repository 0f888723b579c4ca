"""`soak_test` materialises `soak_memory_profile` and `soak_report` from a real soak: a streamer started by the
soak runner against the simulator and Kafka, sampled on a compressed clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagster_project.assets.soak import soak_test
from dagster_project.definitions import defs
from k2_ops.validation.soak import SOAK_TOPIC_PREFIX

pytestmark = pytest.mark.slow


def test_soak_job_emits_profile_and_report(deploy, resources, dagster_instance) -> None:
    job = defs.resolve_job_def(soak_test.name)
    run_config = {"ops": {"soak_memory_profile": {"config": {
        "profile": "ci", "duration_seconds": 12.0, "sample_interval_seconds": 1.0}}}}
    result = job.execute_in_process(run_config=run_config, resources=resources, instance=dagster_instance,
                                    raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]

    profile_out = result.output_for_node("soak_memory_profile")
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
    assert evaluation.check_name == "soak_criteria_passed"
    assert evaluation.passed == profile_out["passed"]
    # The runner's progress lines (elapsed, ETA, RSS, rate) and verdict reached the run log.
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    assert any("ETA" in m for m in messages), messages
    assert any(m.startswith("soak: PASSED") or m.startswith("soak: FAILED") for m in messages)
