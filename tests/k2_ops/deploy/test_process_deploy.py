"""Blue-green deployments with the process backend against real Kafka, Prometheus and the simulator."""

from __future__ import annotations

import re

import pytest

from k2_ops.deploy.audit import audit_ids
from k2_ops.deploy.model import DeployConfig
from k2_ops.deploy.orchestrator import DeploymentFailed
from k2_ops.stack.process import wait_until

pytestmark = pytest.mark.slow

# The checklist's bound on a rollback, whatever started it: back on the previous color in under 2 minutes.
ROLLBACK_BOUND_SECONDS = 120.0

SHORT = dict(
    dual_operation_seconds=3.0,
    validation_seconds=3.0,
    ready_timeout_seconds=60.0,
    first_data_timeout_seconds=20.0,
    poll_interval_seconds=0.5,
    stop_grace_seconds=20.0,
)


def settle_and_compare(rig, symbols=("btcusdt", "ethusdt")) -> dict[str, object]:
    """Stop the market, wait until Kafka holds the last generated trade, then compare with the ground truth."""
    rig.simulator.pause_market()
    try:
        last = {s: rig.simulator.generated_ids(s)[-1] for s in symbols}

        def delivered() -> bool:
            seen = audit_ids(rig.kafka_ids()).symbols
            return all(s in seen and seen[s].last_id >= last[s] for s in symbols)

        wait_until(delivered, 60.0, "Kafka holds the last generated trade", interval_s=0.5)
        pairs = rig.kafka_ids()
    finally:
        rig.simulator.resume_market()
    audit = audit_ids(pairs)
    for symbol in symbols:
        got = sorted(i for s, i in pairs if s == symbol)
        generated = rig.simulator.generated_ids(symbol)
        expected = [i for i in generated if got[0] <= i <= last[symbol]]
        assert sorted(set(got)) == expected, f"{symbol}: Kafka ids differ from the simulator's"
    return {"audit": audit}


def test_handover_deploy_has_no_gap_and_no_duplicate(rig) -> None:
    config = DeployConfig(image="k2-platform:test", mode="handover", **SHORT)
    assert rig.deployment.ensure_running("blue", config)
    record = rig.deployment.run(config, run_id="test-handover")

    assert record.status == "succeeded"
    assert rig.history.active_color() == "green"
    assert not rig.backend.is_running("blue")
    assert rig.backend.is_running("green")
    assert record.measurements["handover_release_gaps"] == {}
    # The instant green took over is recorded (the validations stitch the colors there); no dual overlap.
    [switch] = record.switches
    assert (switch["from_color"], switch["to_color"]) == ("blue", "green")
    assert record.started_at < switch["at"] < record.finished_at and record.overlap is None
    assert rig.history.records()[-1].switches == record.switches
    assert set(record.steps) >= {
        "start_target",
        "wait_target_ready",
        "dual_operation",
        "cutover",
        "validate_target",
        "record_deployment",
    }
    result = settle_and_compare(rig)
    audit = result["audit"]
    assert audit.duplicates == 0
    assert audit.missing == 0
    print(
        f"\nhandover: {audit.messages} trades, duplicates {audit.duplicates}, missing {audit.missing}, "
        f"cutover {record.steps['cutover']:.2f} s"
    )


def test_manual_rollback_after_a_deploy_hands_back_exactly(rig) -> None:
    config = DeployConfig(image="k2-platform:test", mode="handover", **SHORT)
    rig.deployment.ensure_running("blue", config)
    rig.deployment.run(config)
    record = rig.deployment.manual_rollback(config, run_id="test-manual")
    assert record.kind == "rollback"
    assert (record.from_color, record.to_color, record.active_color) == ("green", "blue", "blue")
    assert record.measurements["rollback"]["method"] == "handover"
    assert record.rollback_seconds is not None and 0 < record.rollback_seconds < ROLLBACK_BOUND_SECONDS
    [switch] = record.switches
    assert (switch["from_color"], switch["to_color"]) == ("green", "blue")
    assert record.started_at < switch["at"] < record.finished_at
    assert rig.backend.is_running("blue") and not rig.backend.is_running("green")
    audit = settle_and_compare(rig)["audit"]
    assert (audit.duplicates, audit.missing) == (0, 0)
    print(f"\nmanual rollback (handover) in {record.rollback_seconds:.2f} s; {audit.messages} trades, no gap/dup")


def test_dual_mode_counts_duplicates_and_loses_nothing(rig) -> None:
    config = DeployConfig(image="k2-platform:test", mode="dual", **SHORT)
    rig.deployment.ensure_running("blue", config)
    record = rig.deployment.run(config)
    assert record.status == "succeeded"
    kafka = record.measurements["kafka"]
    # Both colors produced during the overlap: every trade of that window is there twice.
    assert kafka["duplicates"] > 0
    assert kafka["missing"] == 0
    assert "dedupe on (symbol, trade id)" in record.measurements["note"]
    # The deliberate overlap: from green's start to the cutover, which is the one switch.
    [switch] = record.switches
    assert record.overlap is not None and record.overlap[1] == pytest.approx(switch["at"], abs=0.01)
    assert record.started_at < record.overlap[0] < record.overlap[1] < record.finished_at
    audit = settle_and_compare(rig)["audit"]
    assert audit.missing == 0
    assert audit.duplicates == kafka["duplicates"]
    print(f"\ndual: {audit.messages} trades, {audit.duplicates} duplicates, missing {audit.missing}")


@pytest.mark.parametrize(
    ("target_env", "reason"),
    [
        ({"K2_PING_INTERVAL_SECONDS": "-1"}, "K2_PING_INTERVAL_SECONDS"),
        # Subscribed to a symbol the exchange does not trade: connects, but never gets data, so never ready.
        ({"K2_BINANCE_SYMBOLS": "nosuchcoin"}, "not ready within 8 s; .*data_fresh: no data yet"),
    ],
    ids=["bad-config", "no-data"],
)
def test_failing_green_rolls_back_and_blue_keeps_streaming(rig, target_env, reason) -> None:
    config = DeployConfig(
        image="k2-platform:broken",
        mode="handover",
        target_env=target_env,
        **{**SHORT, "ready_timeout_seconds": 8.0, "first_data_timeout_seconds": 5.0},
    )
    rig.deployment.ensure_running("blue", config)
    with pytest.raises(DeploymentFailed, match=reason) as failure:
        rig.deployment.run(config)
    record = failure.value.record
    assert record.status == "rolled_back"
    assert re.search(reason, record.reason or "")
    assert record.active_color == "blue"
    assert record.rollback_seconds is not None and 0 < record.rollback_seconds < ROLLBACK_BOUND_SECONDS
    assert record.switches == []  # rolled back before the cutover: blue never stopped being active
    assert rig.history.active_color() == "blue"
    assert rig.backend.is_running("blue") and not rig.backend.is_running("green")
    audit = settle_and_compare(rig)["audit"]
    assert (audit.duplicates, audit.missing) == (0, 0)
    print(f"\n{reason}: rolled back in {record.rollback_seconds:.2f} s; blue kept streaming, no gap/dup")


def test_failure_after_cutover_hands_back_to_blue(rig) -> None:
    # Green cannot meet an impossible rate during validation, after it already took over.
    config = DeployConfig(image="k2-platform:slow", mode="handover", **{**SHORT, "min_rate_per_second": 1e6})
    rig.deployment.ensure_running("blue", config)
    with pytest.raises(DeploymentFailed, match="validate_target: validation of green: message rate") as failure:
        rig.deployment.run(config)
    record = failure.value.record
    assert record.status == "rolled_back"
    assert record.measurements["rollback"]["method"] == "handover"
    assert record.rollback_seconds is not None and 0 < record.rollback_seconds < ROLLBACK_BOUND_SECONDS
    # Two switches: the cutover to green, then the rollback's handover back to blue.
    assert [(s["from_color"], s["to_color"]) for s in record.switches] == [("blue", "green"), ("green", "blue")]
    assert record.started_at < record.switches[0]["at"] < record.switches[1]["at"] < record.finished_at
    assert rig.backend.is_running("blue") and not rig.backend.is_running("green")
    audit = settle_and_compare(rig)["audit"]
    assert (audit.duplicates, audit.missing) == (0, 0)
    print(f"\nafter cutover: rolled back in {record.rollback_seconds:.2f} s by handover; no gap/dup")
