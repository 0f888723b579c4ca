"""The local stack against the real services: Kafka round trip, file_sd scraping, alert delivery, clean stop."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from k2_ops.platform.services import status_report
from k2_ops.stack import (
    AlertmanagerService,
    KafkaService,
    LocalStack,
    PrometheusService,
    StackAlreadyRunning,
    allocate_port,
    wait_until,
)
from k2_ops.stack.local import running_services
from k2_ops.stack.process import pid_alive, read_pid_file


def test_kafka_round_trip_and_high_watermarks(kafka: KafkaService) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=30)

    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    sent = {f"key-{i}": f"value-{i}" for i in range(50)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, partition=int(key.split("-")[1]) % 2)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received: dict[str, str] = {}

    def all_received() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            received[message.key().decode()] = message.value().decode()
        return len(received) == len(sent)

    wait_until(all_received, 60, "consume all 50 messages", interval_s=0)
    assert received == sent
    watermarks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in (0, 1)]
    consumer.close()
    assert [high for _, high in watermarks] == [25, 25]
    assert [low for low, _ in watermarks] == [0, 0]


def test_prometheus_scrapes_a_file_sd_target_and_answers_a_query(prometheus: PrometheusService) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("k2_stack_probe_value", "test gauge", registry=registry)
    gauge.set(42.5)
    port = allocate_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus.add_scrape_target("probe", f"127.0.0.1:{port}", {"instance": "probe"})

        def scraped() -> bool:
            result = prometheus.query('k2_stack_probe_value{job="k2-streamer",instance="probe"}')
            return bool(result) and float(result[0]["value"][1]) == 42.5

        wait_until(scraped, 60, "Prometheus scrapes the file_sd target")
        prometheus.remove_scrape_target("probe")
        wait_until(lambda: not any(t["labels"].get("instance") == "probe" for t in prometheus.active_targets()),
                   60, "target dropped after its file_sd entry is removed")
    finally:
        prometheus.remove_scrape_target("probe")
        server.shutdown()


def test_a_firing_rule_reaches_alertmanager(
    prometheus: PrometheusService, alertmanager: AlertmanagerService, tmp_path: Path
) -> None:
    rule_file = tmp_path / "always_firing.yml"
    rule_file.write_text(
        "groups:\n- name: stack-test\n  rules:\n  - alert: K2StackTestAlwaysFiring\n"
        "    expr: vector(1)\n    labels: {severity: info}\n"
        "    annotations: {summary: fires at once to prove the Prometheus -> Alertmanager path}\n"
    )
    original = list(prometheus.rule_files)
    prometheus.set_rule_files([*original, rule_file])
    try:
        def delivered() -> bool:
            return any(a["labels"].get("alertname") == "K2StackTestAlwaysFiring" for a in alertmanager.firing_alerts())

        wait_until(delivered, 60, "test alert delivered to Alertmanager", interval_s=0.5)
    finally:
        prometheus.set_rule_files(original)


@pytest.mark.slow
def test_stack_up_refuses_a_second_start_and_down_leaves_no_process(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "run")
    timings = stack.up()
    try:
        assert set(timings) >= {"kafka", "schema-registry", "prometheus", "alertmanager", "stack"}
        pids = {pid_file.stem: read_pid_file(pid_file) for pid_file in (tmp_path / "run").glob("*.pid")}
        assert set(pids) == {"kafka", "schema-registry", "prometheus", "alertmanager"}
        assert all(pid_alive(*recorded) for recorded in pids.values())
        assert all(row["healthy"] for row in status_report(tmp_path / "run"))
        as_json = subprocess.run([sys.executable, "-m", "k2_ops.cli", "stack", "status", "--json", "--run-dir",
                                  str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
        assert as_json.returncode == 0, as_json.stderr
        answer = json.loads(as_json.stdout)
        assert answer["running"] and answer["healthy"]
        assert {row["name"] for row in answer["services"]} == {"kafka", "schema-registry", "prometheus", "alertmanager"}
        with pytest.raises(StackAlreadyRunning, match="already running"):
            LocalStack(tmp_path / "run").up()
    finally:
        # `down` from another process, like a user typing `k2 stack down` in a second shell.
        subprocess.run([sys.executable, "-m", "k2_ops.cli", "stack", "down", "--run-dir", str(tmp_path / "run")],
                       check=True, timeout=120)
    assert not any(pid_alive(*recorded) for recorded in pids.values())
    assert running_services(tmp_path / "run") == []
    status = subprocess.run([sys.executable, "-m", "k2_ops.cli", "stack", "status", "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1
    assert "not running" in status.stdout


@pytest.mark.slow
def test_kafka_restarts_on_new_ports_in_a_reused_run_folder_and_keeps_its_data(tmp_path: Path) -> None:
    first = KafkaService(tmp_path)
    first.start()
    try:
        topic = f"kept-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": first.bootstrap_servers})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
        producer = Producer({"bootstrap.servers": first.bootstrap_servers})
        producer.produce(topic, value=b"survives")
        assert producer.flush(30) == 0
    finally:
        first.stop()
    second = KafkaService(tmp_path)  # new free ports, same folder (e.g. `k2 stack up` after a reboot)
    assert second.port != first.port
    second.start()
    try:
        consumer = Consumer({"bootstrap.servers": second.bootstrap_servers, "group.id": "kept",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        values: list[bytes] = []

        def consumed() -> bool:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
            return bool(values)

        wait_until(consumed, 60, "the message produced before the restart", interval_s=0)
        consumer.close()
        assert values == [b"survives"]
    finally:
        second.stop()
