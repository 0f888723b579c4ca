"""`blue_green_deploy` and `rollback` run through Dagster against real streamers, Kafka and the simulator."""

from __future__ import annotations

import os
import signal
import threading

import dagster as dg
import pytest

from dagster_project.assets.deployment import deployment_history
from dagster_project.jobs.deploy import blue_green_deploy, rollback
from dagster_project.resources import DeploymentResource
from k2_ops.deploy.audit import IdAudit, audit_ids
from k2_ops.deploy.model import DeployConfig
from k2_ops.stack.process import wait_until

pytestmark = pytest.mark.slow

# The checklist's bound on a rollback, whatever started it: back on the previous color in under 2 minutes.
ROLLBACK_BOUND_SECONDS = 120.0
SHORT = {"dual_operation_seconds": 3.0, "validation_seconds": 3.0, "ready_timeout_seconds": 60.0,
         "first_data_timeout_seconds": 20.0, "poll_interval_seconds": 0.5, "stop_grace_seconds": 20.0}


def deploy_config(**overrides: object) -> dict[str, object]:
    return {"ops": {"build_image": {"config": {"image": "k2-platform:test", **SHORT, **overrides}}}}


def start_blue(deploy) -> None:
    deploy.resource.orchestrator().ensure_running("blue", DeployConfig(ready_timeout_seconds=60.0))


def settled_audit(deploy) -> IdAudit:
    """Stop the market, wait for Kafka to hold its last trade, check Kafka against the simulator's trades."""
    sim = deploy.simulator
    sim.pause_market()
    try:
        last = {s: sim.generated_ids(s)[-1] for s in ("btcusdt", "ethusdt")}

        def delivered() -> bool:
            seen = audit_ids(deploy.kafka_ids()).symbols
            return all(s in seen and seen[s].last_id >= last[s] for s in last)

        wait_until(delivered, 60.0, "Kafka holds the last generated trade", interval_s=0.5)
        pairs = deploy.kafka_ids()
    finally:
        sim.resume_market()
    for symbol, last_id in last.items():
        got = sorted({i for s, i in pairs if s == symbol})
        assert got == [i for i in sim.generated_ids(symbol) if got[0] <= i <= last_id], symbol
    return audit_ids(pairs)


def test_handover_deploy_job_zero_gap_zero_duplicates(deploy, resources, dagster_instance) -> None:
    start_blue(deploy)
    result = blue_green_deploy.execute_in_process(run_config=deploy_config(mode="handover"), resources=resources,
                                                  instance=dagster_instance)
    assert result.success
    record = result.output_for_node("record_deployment")
    assert (record["status"], record["from_color"], record["active_color"]) == ("succeeded", "blue", "green")
    assert record["measurements"]["kafka"]["duplicates"] == 0
    assert record["measurements"]["kafka"]["missing"] == 0
    audit = settled_audit(deploy)
    assert (audit.duplicates, audit.missing) == (0, 0)
    # Each step is its own op with its timing.
    step_events = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert [e.step_key for e in step_events] == ["build_image", "start_new_color", "wait_until_ready",
                                                 "dual_operation", "cutover", "validate_new_color",
                                                 "record_deployment"]
    print(f"\nDagster handover deploy: {audit.messages} trades, duplicates {audit.duplicates}, missing "
          f"{audit.missing}; cutover {record['steps']['cutover']:.2f} s")

    # Then the manual rollback job hands back to blue, measured.
    back = rollback.execute_in_process(resources=resources, instance=dagster_instance)
    assert back.success
    rolled = back.output_for_node("rollback_to_previous")
    assert (rolled["active_color"], rolled["measurements"]["rollback"]["method"]) == ("blue", "handover")
    assert 0 < rolled["rollback_seconds"] < ROLLBACK_BOUND_SECONDS
    audit = settled_audit(deploy)
    assert (audit.duplicates, audit.missing) == (0, 0)
    print(f"Dagster manual rollback: {rolled['rollback_seconds']:.2f} s, no gap/dup")

    history = dg.materialize([deployment_history], resources=resources, instance=dagster_instance)
    assert history.success
    metadata = history.asset_materializations_for_node("deployment_history")[0].metadata
    assert metadata["records"].value == 2 and metadata["active_color"].value == "blue"
    assert "| succeeded |" in metadata["history"].value and "| manual_rollback |" in metadata["history"].value


def test_dual_mode_job_counts_duplicates(deploy, resources, dagster_instance) -> None:
    start_blue(deploy)
    result = blue_green_deploy.execute_in_process(run_config=deploy_config(mode="dual"), resources=resources,
                                                  instance=dagster_instance)
    assert result.success
    record = result.output_for_node("record_deployment")
    kafka = record["measurements"]["kafka"]
    assert kafka["duplicates"] > 0 and kafka["missing"] == 0
    events = [e for e in result.all_events if e.step_key == "record_deployment" and e.is_successful_output]
    metadata = events[0].event_specific_data.metadata
    assert metadata["duplicates"].value == kafka["duplicates"]
    assert "dedupe on (symbol, trade id)" in metadata["note"].value
    audit = settled_audit(deploy)
    assert audit.missing == 0
    print(f"\nDagster dual deploy: {audit.messages} trades, {audit.duplicates} duplicates, missing {audit.missing}")


@pytest.mark.parametrize(("target_env", "failed_step", "reason"), [
    ({"K2_PING_TIMEOUT_SECONDS": "0"}, "wait_until_ready", "K2_PING_TIMEOUT_SECONDS"),
    ({"K2_BINANCE_SYMBOLS": "nosuchcoin"}, "wait_until_ready", "data_fresh: no data yet"),
], ids=["bad-config", "no-data"])
def test_failing_green_fails_the_run_and_rolls_back(deploy, resources, dagster_instance, target_env, failed_step,
                                                    reason) -> None:
    start_blue(deploy)
    result = blue_green_deploy.execute_in_process(
        run_config=deploy_config(mode="handover", target_env=target_env, ready_timeout_seconds=15.0,
                                 first_data_timeout_seconds=5.0),
        resources=resources, instance=dagster_instance, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failure] == [failed_step]
    message = failure[0].event_specific_data.error.message
    assert reason in message and "rolled back to blue in" in message
    steps = ["build_image", "start_new_color", "wait_until_ready", "dual_operation", "cutover", "validate_new_color",
             "record_deployment"]
    started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert started == steps[: steps.index(failed_step) + 1]  # later steps never ran
    record = resources["deployment"].history().last()
    assert record.status == "rolled_back" and record.active_color == "blue"
    assert record.rollback_seconds is not None and 0 < record.rollback_seconds < ROLLBACK_BOUND_SECONDS
    backend = resources["deployment"].make_backend()
    assert backend.is_running("blue") and not backend.is_running("green")
    audit = settled_audit(deploy)
    assert (audit.duplicates, audit.missing) == (0, 0)
    print(f"\nDagster failed deploy ({failed_step}): rolled back in {record.rollback_seconds:.3f} s; "
          "blue kept streaming, no gap/dup")


def test_failure_after_cutover_hands_back_to_blue_within_the_bound(deploy, resources, dagster_instance) -> None:
    start_blue(deploy)
    # Green took over at the cutover, then cannot meet an impossible rate during validation.
    result = blue_green_deploy.execute_in_process(
        run_config=deploy_config(mode="handover", min_rate_per_second=1e6), resources=resources,
        instance=dagster_instance, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failure] == ["validate_new_color"]
    assert "rolled back to blue in" in failure[0].event_specific_data.error.message
    record = resources["deployment"].history().last()
    assert (record.status, record.active_color) == ("rolled_back", "blue")
    assert record.measurements["rollback"]["method"] == "handover"  # after the cutover: handed back
    assert record.rollback_seconds is not None and 0 < record.rollback_seconds < ROLLBACK_BOUND_SECONDS
    backend = resources["deployment"].make_backend()
    assert backend.is_running("blue") and not backend.is_running("green")
    audit = settled_audit(deploy)
    assert (audit.duplicates, audit.missing) == (0, 0)
    print(f"\nDagster deploy failed after cutover: handed back in {record.rollback_seconds:.2f} s; no gap/dup")


def interrupt_when_step_runs(instance: dg.DagsterInstance, step: str, timeout_s: float) -> threading.Thread:
    """SIGINT to this process once the op's own code runs `step` in the instance's only run (its first log line,
    not STEP_START: an interrupt while Dagster still loads the op's inputs ends the run before the op can act).
    SIGINT is what `dagster run terminate` (and the UI's Terminate) delivers to a run worker."""

    def running() -> bool:
        runs = instance.get_runs(limit=1)
        return bool(runs) and any(entry.user_message.startswith(f"{step}: ")
                                  for entry in instance.all_logs(runs[0].run_id))

    def run() -> None:
        wait_until(running, timeout_s, f"{step} running", interval_s=0.2)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_terminating_a_deploy_run_rolls_back(deploy, resources, dagster_instance) -> None:
    start_blue(deploy)
    # A dual operation far longer than the test: only the termination ends it.
    interrupter = interrupt_when_step_runs(dagster_instance, "dual_operation", 120.0)
    result = blue_green_deploy.execute_in_process(
        run_config=deploy_config(mode="dual", dual_operation_seconds=600.0), resources=resources,
        instance=dagster_instance, raise_on_error=False)
    interrupter.join(timeout=5)
    assert not result.success
    started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert started[-1] == "dual_operation" and "cutover" not in started
    record = resources["deployment"].history().last()
    assert (record.status, record.active_color) == ("rolled_back", "blue")
    assert "dual_operation: the run was terminated during this step" in (record.reason or "")
    backend = resources["deployment"].make_backend()
    assert backend.is_running("blue") and not backend.is_running("green")
    audit = settled_audit(deploy)
    assert audit.missing == 0  # dual mode: green's copies are duplicates, nothing is lost
    print(f"\nDagster deploy terminated in dual_operation: rolled back in {record.rollback_seconds:.3f} s; "
          f"{audit.duplicates} duplicates, 0 missing")


def test_deploy_and_rollback_jobs_act_on_one_shard(deploy, resources, dagster_instance) -> None:
    """shard_count 2: `shard: 1` in the run config deploys and rolls back shard 1 (own history, s1-* streamers)
    while shard 0's streamer keeps running as it was."""
    sharded = DeploymentResource(**{**deploy.resource.model_dump(), "shard_count": 2})
    resources = {**resources, "deployment": sharded}
    for shard in (0, 1):
        sharded.orchestrator(shard=shard).ensure_running("blue", DeployConfig(ready_timeout_seconds=60.0))
    shard0 = sharded.settings(0).make_backend()
    pid = shard0._process("blue").recorded_pid()
    try:
        result = blue_green_deploy.execute_in_process(run_config=deploy_config(mode="handover", shard=1),
                                                      resources=resources, instance=dagster_instance)
        assert result.success
        assert result.output_for_node("record_deployment")["active_color"] == "green"
        assert sharded.settings(1).history().active_color() == "green"
        assert not sharded.settings(0).history().exists()

        back = rollback.execute_in_process(run_config={"ops": {"rollback_to_previous": {"config": {"shard": 1}}}},
                                           resources=resources, instance=dagster_instance)
        assert back.success and back.output_for_node("rollback_to_previous")["active_color"] == "blue"
        assert shard0.is_running("blue") and shard0._process("blue").recorded_pid() == pid
        audit = settled_audit(deploy)
        assert (audit.duplicates, audit.missing) == (0, 0)
    finally:
        for shard in (0, 1):
            backend = sharded.settings(shard).make_backend()
            for color in ("blue", "green"):
                backend.stop(color, 10.0)
