"""Fixtures for the simulator's tests: real simulators over TLS with their per-run CA."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k2_ops.paths import shared_samples_dir
from k2_ops.simulator import BackgroundSimulator, SimulatorConfig, client_ssl_context

SimFactory = Callable[..., BackgroundSimulator]


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[SimFactory]:
    """Start a simulator with config overrides; every simulator started is stopped after the test."""
    started: list[BackgroundSimulator] = []

    def make(**overrides: Any) -> BackgroundSimulator:
        settings: dict[str, Any] = {
            "symbols": ("btcusdt", "ethusdt"),
            "rate_per_symbol": 100.0,
            "control_port": None,
            "workdir": tmp_path / f"sim{len(started)}",
        }
        settings.update(overrides)
        sim = BackgroundSimulator(SimulatorConfig(**settings)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> BackgroundSimulator:
    """A default simulator, except the incoming-message limit is off so tests can talk freely."""
    return make_sim(max_incoming_per_s=None)


@pytest.fixture
def tls(sim: BackgroundSimulator) -> ssl.SSLContext:
    return client_ssl_context(sim.ca_file)


@pytest.fixture(scope="session")
def samples() -> Path:
    path = shared_samples_dir()
    if not (path / "btcusdt_20240808.gz").is_file():
        pytest.fail(f"real Binance recordings not found in {path} (see ../shared/binance_samples/README.md)")
    return path
