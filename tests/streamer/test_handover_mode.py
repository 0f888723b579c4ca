"""Handover mode across restarts and a forgotten standby (blue-green in production, issue 5/6).

A container restarted by Docker keeps the configuration it was created with: a color created in standby and
released later would come back in standby (producing nothing) unless the instance itself remembers its mode
(K2_HANDOVER_MODE_FILE). And a standby nobody releases must not look ready forever
(K2_HANDOVER_STANDBY_MAX_SECONDS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamer.app import initial_mode, record_mode, saved_mode, standby_check
from streamer.config import ConfigError, load_config
from tests.streamer.conftest import HANDOVER_TOKEN, wait_for

# ---- pure parts ------------------------------------------------------------------------------------------------


def test_handover_standby_check() -> None:
    assert standby_check(None, 60.0) == {"ok": True, "reason": "not in standby"}
    assert standby_check(12.34, 60.0) == {"ok": True, "reason": "standby for 12.3 s (limit 60 s)"}
    stuck = standby_check(61.0, 60.0)
    assert not stuck["ok"]
    assert stuck["reason"].startswith("standby for 61 s without a release (K2_HANDOVER_STANDBY_MAX_SECONDS=60)")
    assert standby_check(10_000.0, 0.0) == {"ok": True, "reason": "standby for 10000.0 s (no limit)"}


def test_handover_mode_file_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "mode")
    assert saved_mode(path) is None and saved_mode(None) is None
    record_mode(path, "active")
    assert saved_mode(path) == "active" and Path(path).read_text() == "active\n"
    record_mode(path, "standby")
    assert saved_mode(path) == "standby"
    assert not Path(f"{path}.tmp").exists(), "written through a temporary file and renamed"
    Path(path).write_text("producing\n")
    assert saved_mode(path) is None
    assert "holds 'producing', not active or standby" in caplog.text
    record_mode(None, "active")  # no file configured: nothing recorded, nothing raised


def test_handover_initial_mode_prefers_the_recorded_one(tmp_path: Path) -> None:
    mode_file = tmp_path / "mode"
    env = {"K2_START_MODE": "standby", "K2_HANDOVER_MODE_FILE": str(mode_file)}
    assert initial_mode(load_config(env)) == "standby", "a new container: K2_START_MODE"
    mode_file.write_text("active\n")
    assert initial_mode(load_config(env)) == "active", "restarted after its release"
    assert initial_mode(load_config({"K2_START_MODE": "standby"})) == "standby", "no file configured"


def test_handover_settings_are_validated(tmp_path: Path) -> None:
    config = load_config({})
    assert (config.handover_standby_max_s, config.handover_mode_file) == (1800.0, None)
    with pytest.raises(ConfigError, match="K2_HANDOVER_MODE_FILE"):
        load_config({"K2_HANDOVER_MODE_FILE": str(tmp_path / "no-such-folder" / "mode")})
    with pytest.raises(ConfigError, match=r"K2_HANDOVER_STANDBY_MAX_SECONDS.*0 \.\. 604800 seconds"):
        load_config({"K2_HANDOVER_STANDBY_MAX_SECONDS": "-1"})


# ---- the real process ------------------------------------------------------------------------------------------


def readyz(streamer: Any) -> tuple[int, dict[str, Any]]:
    status, body = streamer.get("/readyz")
    return status, body


@pytest.mark.slow
def test_handover_forgotten_standby_turns_unready_and_a_release_fixes_it(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator()
    green = make_streamer(sim, kafka.bootstrap_servers, K2_INSTANCE="green", K2_START_MODE="standby",
                          K2_HANDOVER_STANDBY_MAX_SECONDS="2")

    def stuck() -> Any:
        green.assert_running()
        status, body = readyz(green)
        return body if status == 503 and not body["checks"]["handover"]["ok"] else None

    body = wait_for(stuck, 30, f"green unready after 2 s of standby; log:\n{green.log_tail()}")
    assert body["mode"] == "standby"
    assert "without a release" in body["checks"]["handover"]["reason"]
    assert green.metric("streamer_handover_standby") == 1
    assert green.metric("kafka_messages_produced_total") == 0

    status, _ = green.post("/handover/release", {})
    assert status == 200
    ready = green.wait_ready()
    assert ready["mode"] == "active" and ready["checks"]["handover"] == {"ok": True, "reason": "not in standby"}
    wait_for(lambda: green.metric("kafka_messages_produced_total") > 0, 30, "green producing after its release")


@pytest.mark.slow
def test_handover_restarted_instance_resumes_its_recorded_mode(
    make_simulator: Any, make_streamer: Any, kafka: Any, tmp_path: Path
) -> None:
    """What `docker restart` (or the restart policy) does to a color released from standby: the same
    configuration (K2_START_MODE=standby) and the same files; it must come back producing."""
    sim = make_simulator()
    mode_file = tmp_path / "green-mode"
    container = {"K2_INSTANCE": "green", "K2_START_MODE": "standby", "K2_HANDOVER_MODE_FILE": str(mode_file)}
    green = make_streamer(sim, kafka.bootstrap_servers, **container)
    assert green.wait_ready()["mode"] == "standby"
    assert not mode_file.exists(), "nothing recorded until the mode changes"
    assert green.post("/handover/release", {})[0] == 200
    assert mode_file.read_text() == "active\n"
    prefix = green.env["K2_KAFKA_TOPIC_PREFIX"]
    assert green.terminate() == 0

    restarted = make_streamer(sim, kafka.bootstrap_servers, K2_KAFKA_TOPIC_PREFIX=prefix, **container)
    assert restarted.wait_ready()["mode"] == "active"
    wait_for(lambda: restarted.metric("kafka_messages_produced_total") > 0, 30, "the restarted green producing")
    assert restarted.metric("streamer_handover_standby") == 0
    assert "resuming in active mode as recorded in" in restarted.log_text()

    # The other way round: a color that handed over (standby) and restarts must not produce again.
    status, answer = restarted.post("/handover/standby", {"flush_timeout_seconds": 20})
    assert status == 200 and answer["flushed"], answer
    assert mode_file.read_text() == "standby\n"
    assert restarted.terminate() == 0
    again = make_streamer(sim, kafka.bootstrap_servers, K2_KAFKA_TOPIC_PREFIX=prefix,
                          **{**container, "K2_START_MODE": "active"})
    assert again.wait_ready()["mode"] == "standby"
    assert again.metric("kafka_messages_produced_total") == 0


def test_handover_endpoints_require_the_shared_token_and_the_probes_stay_open(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """POST /handover/* change what an instance produces: without the token, or with a wrong one, nothing
    changes; an instance with no token configured refuses them outright. /metrics, /healthz, /readyz and
    /positions answer anyone."""
    sim = make_simulator()
    green = make_streamer(sim, kafka.bootstrap_servers, K2_INSTANCE="green", K2_START_MODE="standby")
    assert green.wait_ready()["mode"] == "standby"
    for token in ("", "wrong-token-0123456789", HANDOVER_TOKEN + "x"):
        status, answer = green.post("/handover/release", {}, token=token)
        assert status == 401 and "K2_HANDOVER_TOKEN" in answer["error"], (token, answer)
    assert green.get("/positions")[1]["mode"] == "standby"  # refused: still buffering, producing nothing
    assert green.metric("kafka_messages_produced_total") == 0
    assert "refused (missing or wrong token)" in green.log_text()
    assert HANDOVER_TOKEN not in green.log_text()
    for path in ("/metrics", "/healthz", "/readyz", "/positions"):
        assert green.get(path)[0] == 200, path
    assert green.post("/handover/release", {})[0] == 200  # the right token
    wait_for(lambda: green.metric("kafka_messages_produced_total") > 0, 30, "green producing after its release")

    blue = make_streamer(sim, kafka.bootstrap_servers, K2_HANDOVER_TOKEN="")  # empty = unset
    blue.wait_ready()
    status, answer = blue.post("/handover/standby", {"flush_timeout_seconds": 5}, token=HANDOVER_TOKEN)
    assert status == 403 and "no token configured (K2_HANDOVER_TOKEN unset)" in answer["error"]
    assert blue.get("/positions")[1]["mode"] == "active"
