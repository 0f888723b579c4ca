"""A market split into two shards, deployed per shard with the process backend against real Kafka, Prometheus
and the simulator: a handover deploy and a rollback of shard 1 leave shard 0's streamer untouched, each shard
keeps its own history, Prometheus scrapes every shard x color, and Kafka holds every trade exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from k2_ops.deploy.audit import audit_ids, read_trade_ids
from k2_ops.deploy.local import trades_topic
from k2_ops.deploy.model import DeployConfig
from k2_ops.deploy.settings import DeploySettings
from k2_ops.simulator import BackgroundSimulator
from k2_ops.stack import KafkaService, PrometheusService
from k2_ops.stack.process import wait_until
from k2_ops.stack.prometheus import STREAMER_JOB
from k2_ops.validation.prometheus import PrometheusClient
from streamer.shards import shard_of

from .conftest import SYMBOLS
from .test_process_deploy import SHORT

pytestmark = pytest.mark.slow


def test_one_shard_deploys_and_rolls_back_while_the_other_streams_on(
    tmp_path: Path, kafka: KafkaService, prometheus: PrometheusService, deploy_simulator: BackgroundSimulator
) -> None:
    assert {shard_of(s, 2) for s in SYMBOLS} == {0, 1}, "each shard owns one of the rig's symbols"
    prefix = f"deploytest.{uuid.uuid4().hex[:8]}"
    settings = DeploySettings(
        run_dir=str(tmp_path / "run"), kafka_bootstrap_servers=kafka.bootstrap_servers,
        ws_url=f"{deploy_simulator.ws_base_url}/stream", ca_file=str(deploy_simulator.ca_file),
        schema_registry_url=f"mock://{prefix}", topic_prefix=prefix, symbols=",".join(SYMBOLS),
        streamer_env={"K2_HEALTH_CHECK_TIMEOUT_SECONDS": "5", "K2_KAFKA_TOPIC_PARTITIONS": "1"},
        prometheus_run_dir=str(prometheus.run_dir), shard_count=2,
    )
    shards = [settings.for_shard(0), settings.for_shard(1)]
    config = DeployConfig(image="k2-platform:test", mode="handover", shard=1, **SHORT)
    backends = [shard.make_backend() for shard in shards]
    try:
        for shard in shards:
            assert shard.orchestrator().ensure_running("blue", config)
        shard0_pid = backends[0]._process("blue").recorded_pid()

        record = shards[1].orchestrator(print).run(config, run_id="test-shard-1")
        assert record.status == "succeeded" and record.measurements["handover_release_gaps"] == {}
        assert shards[1].history().active_color() == "green"
        assert shards[1].deploy_dir() == tmp_path / "run" / "deploy" / "shard-1"
        assert not shards[0].history().exists(), "shard 0 has no deployment"
        assert backends[0].is_running("blue") and backends[0]._process("blue").recorded_pid() == shard0_pid
        assert (tmp_path / "run" / "streamer-s1-green.log").is_file()

        # Every shard x color Prometheus scrapes is told apart by its labels.
        client = PrometheusClient(prometheus.url)

        def scraped() -> set[tuple[str, str, str]]:
            rows = client.query(f'up{{job="{STREAMER_JOB}"}} == 1')
            return {(r.labels.get("instance", ""), r.labels.get("shard", ""), r.labels.get("color", "")) for r in rows}

        wait_until(lambda: {("s0-blue", "0", "blue"), ("s1-green", "1", "green")} <= scraped(), 30.0,
                   "Prometheus scrapes s0-blue and s1-green with their shard and color", interval_s=0.5)

        rollback = shards[1].orchestrator(print).manual_rollback(config, reason="test: shard 1 back")
        assert rollback.active_color == "blue" and shards[1].history().active_color() == "blue"
        assert backends[0]._process("blue").recorded_pid() == shard0_pid

        deploy_simulator.pause_market()
        try:
            last = {s: deploy_simulator.generated_ids(s)[-1] for s in SYMBOLS}
            topic = trades_topic(prefix)

            def delivered() -> bool:
                seen = audit_ids(read_trade_ids(kafka.bootstrap_servers, topic)).symbols
                return all(s in seen and seen[s].last_id >= last[s] for s in SYMBOLS)

            wait_until(delivered, 60.0, "Kafka holds the last generated trade of both shards", interval_s=0.5)
            audit = audit_ids(read_trade_ids(kafka.bootstrap_servers, topic))
        finally:
            deploy_simulator.resume_market()
        assert (audit.missing, audit.duplicates) == (0, 0), audit
        print(f"\nshard 1 deploy + rollback beside shard 0: {audit.messages} trades, 0 missing, 0 duplicates")
    finally:
        for backend in backends:
            for color in ("blue", "green"):
                backend.stop(color, 10.0)
