"""One config object, validated at start-up, with messages naming the bad setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k2_ops.simulator import BackgroundSimulator, ConfigError, SimulatorConfig, SimulatorError


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"symbols": ("BTCUSDT",)}, "symbols"),
        ({"symbols": "btcusdt"}, "symbols"),
        ({"symbols": ()}, "symbols"),
        ({"symbols": ("btcusdt", "btcusdt")}, "symbols"),
        ({"rate_per_symbol": -1}, "rate_per_symbol"),
        ({"port": 70000}, "port"),
        ({"cert_mode": "expired"}, "cert_mode"),
        ({"cert_mode": "wrong_host", "tls": False}, "cert_mode"),
        ({"server_ping_interval_s": 0}, "server_ping_interval_s"),
        ({"pong_timeout_s": float("nan")}, "pong_timeout_s"),
        ({"max_lifetime_s": -5.0}, "max_lifetime_s"),
        ({"max_incoming_per_s": 0}, "max_incoming_per_s"),
        ({"max_streams_per_connection": 0}, "max_streams_per_connection"),
        ({"max_connection_attempts": 1.5}, "max_connection_attempts"),
        ({"connection_attempt_window_s": 0}, "connection_attempt_window_s"),
        ({"replay_file": "/no/such/file.gz"}, "replay_file"),
        ({"replay_speed": -1}, "replay_speed"),
        ({"replay_start": "later"}, "replay_start"),
        ({"control_port": -1}, "control_port"),
        ({"tick_interval_s": 0}, "tick_interval_s"),
        ({"ground_truth_max_per_series": 1}, "ground_truth_max_per_series"),
    ],
)
def test_bad_settings_are_named(overrides: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"SimulatorConfig\.{setting}"):
        SimulatorConfig(**overrides)


def test_rules_can_be_switched_off_and_replace_validates() -> None:
    config = SimulatorConfig(
        server_ping_interval_s=None,
        pong_timeout_s=None,
        max_lifetime_s=None,
        max_incoming_per_s=None,
        max_connection_attempts=None,
        control_port=None,
    )
    assert config.replace(rate_per_symbol=5.0).rate_per_symbol == 5.0
    with pytest.raises(ConfigError, match="no setting"):
        config.replace(colour="red")
    with pytest.raises(ConfigError, match="rate_per_symbol"):
        config.replace(rate_per_symbol=-2)


def test_start_failure_is_reported(tmp_path: Path) -> None:
    with BackgroundSimulator(SimulatorConfig(control_port=None, workdir=tmp_path)) as sim:
        taken = sim.port
        clash = BackgroundSimulator(SimulatorConfig(port=taken, control_port=None, workdir=tmp_path / "b"))
        with pytest.raises(SimulatorError, match="failed to start"):
            clash.start()
    with pytest.raises(SimulatorError, match="not running"):
        sim.generated_ids("btcusdt")


def test_plain_ws_and_uvloop_variants(make_sim: Any) -> None:
    import asyncio
    import json

    from websockets.asyncio.client import connect

    plain = make_sim(tls=False, use_uvloop=True)
    assert plain.ws_base_url.startswith("ws://127.0.0.1:")
    with pytest.raises(SimulatorError, match="without TLS"):
        _ = plain.ca_file

    async def first() -> dict[str, Any]:
        async with connect(f"{plain.ws_base_url}/ws/btcusdt@aggTrade") as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(first())["e"] == "aggTrade"


def test_control_port_clash_is_reported_and_nothing_is_left_running(make_sim: Any, tmp_path: Path) -> None:
    first = make_sim(control_port=0)
    taken = int(first.control_url.rsplit(":", 1)[1])
    clash = BackgroundSimulator(SimulatorConfig(control_port=taken, workdir=tmp_path / "clash"))
    with pytest.raises(SimulatorError, match="control endpoint"):
        clash.start()
    with pytest.raises(SimulatorError, match="not running"):
        clash.connections()
