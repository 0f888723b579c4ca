"""A real deployment rig: the exchange simulator, the session's Kafka and Prometheus, and the process backend
running `python -m streamer` for blue and green."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k2_ops.deploy.audit import audit_ids, read_trade_ids
from k2_ops.deploy.handover import ensure_token_file
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.local import streamer_common_env, trades_topic
from k2_ops.deploy.orchestrator import BlueGreenDeployment
from k2_ops.deploy.process_backend import ProcessBackend
from k2_ops.simulator import BackgroundSimulator, SimulatorConfig
from k2_ops.stack import KafkaService, PrometheusService

SYMBOLS = ("btcusdt", "ethusdt")


@pytest.fixture(scope="module")
def deploy_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundSimulator]:
    config = SimulatorConfig(symbols=SYMBOLS, rate_per_symbol=40.0, workdir=tmp_path_factory.mktemp("sim"))
    with BackgroundSimulator(config) as sim:
        yield sim


@dataclass
class Rig:
    backend: ProcessBackend
    history: DeploymentHistory
    deployment: BlueGreenDeployment
    bootstrap_servers: str
    topic: str
    simulator: BackgroundSimulator

    def kafka_ids(self) -> list[tuple[str, int]]:
        return read_trade_ids(self.bootstrap_servers, self.topic)

    def stop_all(self) -> None:
        for color in ("blue", "green"):
            self.backend.stop(color, 10.0)


@pytest.fixture
def rig(
    tmp_path: Path, kafka: KafkaService, prometheus: PrometheusService, deploy_simulator: BackgroundSimulator
) -> Iterator[Rig]:
    prefix = f"deploytest.{uuid.uuid4().hex[:8]}"
    # What DeploySettings does for the process backend: one token file both colors and the orchestrator use.
    token_file = ensure_token_file(tmp_path / "deploy" / "handover.token")
    env = streamer_common_env(
        kafka.bootstrap_servers,
        f"{deploy_simulator.ws_base_url}/stream",
        ca_file=deploy_simulator.ca_file,
        topic_prefix=prefix,
        symbols=",".join(SYMBOLS),
        extra={
            "K2_HEALTH_CHECK_TIMEOUT_SECONDS": "5",
            "K2_MEMORY_SAMPLE_INTERVAL_SECONDS": "1",
            "K2_KAFKA_TOPIC_PARTITIONS": "1",
            "K2_HANDOVER_TOKEN_FILE": str(token_file),
        },
    )
    backend = ProcessBackend(tmp_path / "run", tmp_path / "deploy", env, prometheus_run_dir=prometheus.run_dir)
    history = DeploymentHistory(tmp_path / "deploy" / "history.jsonl")
    topic = trades_topic(prefix)
    deployment = BlueGreenDeployment(
        backend,
        history,
        audit=lambda since: audit_ids(read_trade_ids(kafka.bootstrap_servers, topic, int(since * 1000))),
        handover_token=token_file.read_text().strip(),
    )
    rig = Rig(backend, history, deployment, kafka.bootstrap_servers, topic, deploy_simulator)
    try:
        yield rig
    finally:
        rig.stop_all()
