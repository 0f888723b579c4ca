from __future__ import annotations

from pathlib import Path

import pytest

from k2_ops.deploy.history import DeploymentHistory, DeploymentRecord
from k2_ops.deploy.model import DeployConfig, DeploymentState, other_color


def record(status: str, from_color: str, to_color: str, active: str, **extra: object) -> DeploymentRecord:
    return DeploymentRecord(
        deployment_id=f"d-{status}",
        kind="deploy",
        status=status,
        from_color=from_color,
        to_color=to_color,
        active_color=active,
        image="k2-platform:test",
        mode="handover",
        started_at=1.0,
        **extra,
    )


def test_defaults_match_the_issue() -> None:
    config = DeployConfig()
    assert config.image == "k2-platform:v2.0-stable"
    assert config.dual_operation_seconds == 600.0
    assert config.validation_seconds == 900.0
    assert config.mode == "dual"
    assert config.first_data_timeout_seconds == 60.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mode", "canary", "mode='canary'; allowed: dual or handover"),
        ("validation_seconds", -1.0, "validation_seconds=-1.0"),
        ("ready_timeout_seconds", 0.0, "ready_timeout_seconds=0.0"),
        ("rate_tolerance", 1.5, "rate_tolerance=1.5"),
        ("image", " ", "image: must not be empty"),
    ],
)
def test_bad_config_names_the_setting(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        DeployConfig(**{field: value})


def test_other_color_and_state_round_trip() -> None:
    assert other_color("blue") == "green"
    assert other_color("green") == "blue"
    with pytest.raises(ValueError, match="unknown color"):
        other_color("red")
    state = DeploymentState("green", "blue", DeployConfig(mode="handover", target_env={"K2_LOG_LEVEL": "DEBUG"}))
    state.steps["start_target"] = 1.5
    state.cutover_at = 12.0
    again = DeploymentState.from_dict(state.to_dict())
    assert again == state
    assert again.cutover_done
    with pytest.raises(ValueError, match="other color"):
        DeploymentState("blue", "blue", DeployConfig())


def test_history_tracks_active_and_previous_color(tmp_path: Path) -> None:
    history = DeploymentHistory(tmp_path / "deploy" / "history.jsonl")
    assert history.records() == []
    assert history.active_color() == "blue"
    assert history.previous_color() is None

    history.append(record("succeeded", "blue", "green", "green", steps={"cutover": 0.4}))
    assert history.active_color() == "green"
    assert history.previous_color() == "blue"

    history.append(record("rolled_back", "green", "blue", "green", reason="validation failed", rollback_seconds=2.5))
    assert history.active_color() == "green"
    # The last change went back to where it was: a manual rollback has nowhere to go.
    assert history.previous_color() is None

    # A damaged line (e.g. a disk-full partial write) does not hide the other records.
    with history.path.open("a") as handle:
        handle.write('{"deployment_id": "broken"\n')
    history.append(record("succeeded", "green", "blue", "blue"))
    records = history.records()
    assert [r.status for r in records] == ["succeeded", "rolled_back", "succeeded"]
    assert records[1].reason == "validation failed"
    assert records[1].rollback_seconds == 2.5
    assert history.active_color() == "blue"


def test_record_rejects_unknown_status_and_color() -> None:
    with pytest.raises(ValueError, match="status='done'"):
        record("done", "blue", "green", "green")
    with pytest.raises(ValueError, match="to_color='red'"):
        record("succeeded", "blue", "red", "green")
