"""`k2 stack up --kafka-brokers 3 --kafka-security sasl_ssl|mtls`: a KRaft quorum of three on loopback, SCRAM
users made at format time, certificates from a per-run CA; the stack's streamer connects with the recorded
client settings and its topics get replication 3 and min.insync.replicas 2. The default stays one plaintext
node (tests/k2_ops/stack/test_local_stack.py)."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from k2_ops.polling import poll_until
from k2_ops.stack.kafka import KafkaSecurity, KafkaService
from k2_ops.stack.local import running_services, stop_all
from streamer.config import load_kafka_client_config
from tests.conftest import remember_secret

pytestmark = pytest.mark.slow


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "run"
    yield folder
    stop_all(folder, grace_s=5)


def _k2(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k2_ops.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)


def _admin(conf: dict[str, str]) -> AdminClient:
    return AdminClient({**conf, "socket.timeout.ms": 3000, "log_level": 0})


def test_stack_up_with_a_sasl_ssl_quorum_of_three_streams_into_replicated_topics(run_dir: Path) -> None:
    """`k2 stack up` with three SASL_SSL brokers and `k2 stack down` as a user runs them (~30 s: three JVMs
    formatted and started, the stack's streamer creating replicated topics)."""
    up = _k2("stack", "up", "--run-dir", str(run_dir), "--no-dagster", "--scrape-interval", "1",
             "--kafka-brokers", "3", "--kafka-security", "sasl_ssl")
    assert up.returncode == 0, up.stdout + up.stderr
    assert sorted(n for n in running_services(run_dir) if n.startswith("kafka")) == ["kafka-1", "kafka-2", "kafka-3"]
    state = json.loads((run_dir / "stack.json").read_text())
    env = state["services"]["kafka"]["client_env"]
    assert env["K2_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["K2_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert len(env["K2_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3
    assert (env["K2_KAFKA_REPLICATION_FACTOR"], env["K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    password_file = Path(env["K2_KAFKA_SASL_PASSWORD_FILE"])
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = remember_secret(password_file.read_text().strip())
    assert password not in up.stdout + up.stderr + (run_dir / "stack.json").read_text()

    conf = {**load_kafka_client_config(env).librdkafka(), "bootstrap.servers": env["K2_KAFKA_BOOTSTRAP_SERVERS"]}
    assert len(_admin(conf).list_topics(timeout=10).brokers) == 3
    # Without credentials the listener refuses (TLS + SASL required on every broker port).
    with pytest.raises(KafkaException):
        _admin({"bootstrap.servers": env["K2_KAFKA_BOOTSTRAP_SERVERS"]}).list_topics(timeout=3)
    wrong = {**conf, "sasl.password": "not-the-password"}
    with pytest.raises(KafkaException):
        _admin(wrong).list_topics(timeout=3)

    # The stack's streamer got the same settings through stack.json and streams into replicated topics.
    topic = "market.crypto.binance.trades"
    admin = _admin(conf)

    def trades_flowing() -> bool:
        info = admin.list_topics(topic, timeout=5).topics.get(topic)
        return info is not None and info.error is None and bool(info.partitions)

    poll_until(trades_flowing, 90, f"{topic} created by the stack's streamer", interval_s=0.5)
    info = admin.list_topics(topic, timeout=5).topics[topic]
    assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in info.partitions.values())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert admin.describe_configs([resource])[resource].result(timeout=10)["min.insync.replicas"].value == "2"
    status = _k2("stack", "status", "--run-dir", str(run_dir), timeout_s=60)
    assert status.returncode == 0, status.stdout

    down = _k2("stack", "down", "--run-dir", str(run_dir), timeout_s=120)
    assert down.returncode == 0 and not running_services(run_dir)
    logs = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*.log"))
    assert password not in logs


def test_mtls_cluster_requires_a_client_certificate_and_its_last_node_stops_without_a_quorum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mTLS on every broker. Then the stop of a cluster that lost its quorum (two nodes killed): the last
    node's controlled shutdown can never be approved (Kafka would wait 5 minutes), so it gets SIGKILL once
    the quorum-lost grace is over instead of holding the stop for the whole grace."""
    kafka = KafkaService(tmp_path, brokers=3, security=KafkaSecurity.MTLS)
    try:
        kafka.start()
        conf = kafka.client_conf()
        assert conf["security.protocol"] == "SSL" and "ssl.certificate.location" in conf
        assert len(_admin(conf).list_topics(timeout=10).brokers) == 3
        without_cert = {k: v for k, v in conf.items() if k not in ("ssl.certificate.location", "ssl.key.location")}
        with pytest.raises(KafkaException):
            _admin(without_cert).list_topics(timeout=3)
        kafka.kill_node(1)
        kafka.kill_node(2)
        caplog.set_level(logging.WARNING, logger="k2_ops.stack.kafka")
    finally:
        kafka.stop(grace_s=120)
    assert not kafka.is_running() and not list(tmp_path.glob("*.pid"))
    assert "kafka-3: no controller quorum is left to approve its shutdown; sending SIGKILL" in caplog.text
