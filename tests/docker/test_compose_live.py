"""The production stack for real: docker/compose.yaml on a real Docker engine (dockerd started here when none
answers, stopped here by its PID), images built from Debian packages (k2 images build --local-bases), the
exchange simulator as a container feeding streamer-blue over verified TLS.

One module-scoped stack; each test asserts against the real services on 127.0.0.1. Every phase prints its
duration (`-s` shows them; they also go to the test report). A dockerd that cannot start fails the module
with the reason: nothing here skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from k2_ops.deploy.audit import audit_ids, read_trade_ids
from k2_ops.images.build import build_all, compose_env
from k2_ops.images.compose_stack import PROJECT, URLS, ComposeStack, compose_run_dir, write_env_files
from k2_ops.images.engine import Engine, compose_plugin_binary, ensure_engine
from k2_ops.polling import poll_until
from tests.dagster_project.ui import graphql, launch, wait_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROMETHEUS = URLS["prometheus"]
ALERTMANAGER = URLS["alertmanager"]
REGISTRY = URLS["schema-registry"]
STREAMER = URLS["streamer-blue"]
DAGSTER = URLS["dagster-webserver"]
TOPIC = "market.crypto.binance.trades"
SERVICES = ("kafka", "schema-registry", "postgres", "prometheus", "alertmanager", "dagster-code",
            "dagster-webserver", "dagster-daemon", "streamer-blue", "simulator")
FORCED_RULE = """groups:
  - name: k2-live-test
    rules:
      - alert: K2LiveTestForced
        expr: vector(1)
        labels: {severity: info}
        annotations: {summary: forced by tests/docker/test_compose_live.py}
"""


@dataclass
class Phases:
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, began: float) -> None:
        self.seconds[name] = time.monotonic() - began
        print(f"\ncompose live test: {name}: {self.seconds[name]:.1f} s", flush=True)


PHASES = Phases()


def get_json(url: str, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def prom_query(expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    answer = get_json(f"{PROMETHEUS}/api/v1/query?{query}")
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@dataclass
class LiveStack:
    engine: Engine
    compose: ComposeStack


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    began = time.monotonic()
    # Fails (never skips) with dockerd's own last log lines when it cannot start.
    engine = ensure_engine(compose_run_dir())
    PHASES.record("engine", began)
    try:
        began = time.monotonic()
        build_all(engine.docker, compose_plugin_binary())
        PHASES.record("local images", began)
        extra_rules = tmp_path_factory.mktemp("extra-rules")
        (extra_rules / "forced.yml").write_text(FORCED_RULE)
        extra_rules.chmod(0o755)
        (extra_rules / "forced.yml").chmod(0o644)
        compose = ComposeStack(engine)
        write_env_files(compose.docker_dir, compose_env())
        compose.extra_env = {"PROMETHEUS_EXTRA_RULES_DIR": str(extra_rules)}
        began = time.monotonic()
        compose.up(wait_timeout_s=420.0)
        PHASES.record("compose up --build --wait", began)
        print("compose live test: healthy after start: " + ", ".join(
            f"{name} {seconds:.0f} s" for name, seconds in sorted(compose.start_seconds().items())), flush=True)
        yield LiveStack(engine, compose)
        began = time.monotonic()
        compose.down()
        leftovers = {
            kind: engine.docker.run(kind, "ls", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                    *(["--all"] if kind == "container" else [])).stdout.decode().split()
            for kind in ("container", "network", "volume")
        }
        PHASES.record("compose down -v", began)
        assert leftovers == {"container": [], "network": [], "volume": []}, leftovers
    finally:
        started = engine.started_pid
        if started is not None:
            ComposeStack(engine).run("down", "--volumes", "--remove-orphans", check=False)
            assert engine.stop(), f"dockerd PID {started} was not stopped"
        print("compose live test phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in PHASES.seconds.items()),
              flush=True)


def test_every_service_is_healthy(live: LiveStack) -> None:
    """Runs first, so it carries the module's stack: dockerd, the Debian-built images (fresh: ~4 min of
    mmdebstrap, docker builds and pip installs inside images) and `compose up --wait` of ten services."""
    containers = {str(c["Service"]): c for c in live.compose.containers()}
    assert set(SERVICES) <= set(containers), sorted(containers)
    unhealthy = {name: (c.get("State"), c.get("Health"), live.engine.docker.run(
                     "inspect", "--format", "{{json .State.Health}}", str(c["Name"])).stdout.decode()[-1500:])
                 for name, c in containers.items()
                 if name in SERVICES and (c.get("State") != "running" or c.get("Health") != "healthy")}
    assert not unhealthy, unhealthy


def test_streamer_records_in_kafka_decode_with_the_registry_schema(live: LiveStack) -> None:
    began = time.monotonic()
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9094", "group.id": "k2-live-test",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(TOPIC, timeout=30)
        partitions = [TopicPartition(TOPIC, p, 0) for p in metadata.topics[TOPIC].partitions]
        assert partitions, f"{TOPIC} has no partitions"
        consumer.assign(partitions)
        deserialize = AvroDeserializer(SchemaRegistryClient({"url": REGISTRY}))
        records: list[dict[str, Any]] = []

        def some_records() -> bool:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                value = deserialize(message.value(), SerializationContext(TOPIC, MessageField.VALUE))
                records.append(value)
            return len(records) >= 20

        poll_until(some_records, 60, "20 Avro records decoded from Kafka", interval_s=0.0, error=AssertionError)
    finally:
        consumer.close()
    symbols = {str(r.get("symbol", "")).lower() for r in records}
    assert symbols & {"btcusdt", "ethusdt"}, records[:2]
    subjects = get_json(f"{REGISTRY}/subjects")
    assert f"{TOPIC}-value" in subjects, subjects
    PHASES.record("kafka + registry", began)


def test_prometheus_scrapes_streamer_blue_and_loads_the_k2_rules(live: LiveStack) -> None:
    began = time.monotonic()
    poll_until(lambda: any(r["value"][1] == "1" for r in prom_query('up{job="k2-streamer",instance="blue"}')),
               60, "Prometheus: up{instance=blue} == 1", interval_s=1.0, error=AssertionError)
    names = get_json(f"{PROMETHEUS}/api/v1/label/__name__/values")["data"]
    streamer_metrics = [n for n in names if n.startswith("binance_") or n.startswith("k2_")]
    assert len(streamer_metrics) > 10, streamer_metrics
    groups = get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    files = {g["file"] for g in groups}
    assert "/etc/prometheus/rules/k2_alerts.yml" in files, files
    assert sum(len(g["rules"]) for g in groups if g["file"].endswith("k2_alerts.yml")) > 5
    PHASES.record("prometheus", began)


def test_a_forced_rule_reaches_alertmanager(live: LiveStack) -> None:
    began = time.monotonic()

    def forced_alert() -> bool:
        alerts = get_json(f"{ALERTMANAGER}/api/v2/alerts")
        return any(a["labels"].get("alertname") == "K2LiveTestForced" for a in alerts)

    poll_until(forced_alert, 90, "K2LiveTestForced in Alertmanager", interval_s=1.0, error=AssertionError)
    PHASES.record("alert to alertmanager", began)


def test_daily_validation_report_runs_in_the_compose_dagster(live: LiveStack) -> None:
    began = time.monotonic()
    graphql(DAGSTER, "{ version }")
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86_400))
    run_id = launch(DAGSTER, "daily_validation_job",
                    {"ops": {"daily_validation_report": {"config": {"instance": "blue"}}}},
                    tags={"dagster/partition": day})
    assert wait_run(DAGSTER, run_id, 240.0) == "SUCCESS"
    PHASES.record("dagster daily_validation_report", began)


DEPLOY_CONFIG = {"image": "k2-platform:v2.0-stable", "mode": "handover", "dual_operation_seconds": 15.0,
                 "validation_seconds": 15.0, "poll_interval_seconds": 0.5, "ready_timeout_seconds": 120.0,
                 "progress_interval_seconds": 5.0}


RUN_LOGS = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
  ... on MessageEvent { message } } } } }"""


def run_messages(run_id: str) -> list[str]:
    events = graphql(DAGSTER, RUN_LOGS, {"id": run_id})["logsForRun"]["events"]
    return [str(e["message"])[:400] for e in events if e.get("message")]


def deployment_history(live: LiveStack) -> list[dict[str, Any]]:
    done = live.compose.run("exec", "-T", "dagster-code", "cat", "/opt/dagster/app/.run/deploy/history.jsonl",
                            check=False)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def service_state(live: LiveStack, service: str) -> str:
    matches = [c for c in live.compose.containers() if c["Service"] == service]
    return str(matches[0]["State"]) if matches else "absent"


def test_blue_green_deploy_in_handover_mode_then_rollback(live: LiveStack, artifacts_dir: Path) -> None:
    """Through the Dagster UI's GraphQL: build k2-platform:v2.0-stable in dagster-code (compose backend),
    start streamer-green, hand over, validate, stop blue; Kafka audit exact; then a rollback brings blue back."""
    began = time.monotonic()
    run_id = launch(DAGSTER, "blue_green_deploy", {"ops": {"build_image": {"config": DEPLOY_CONFIG}}})
    assert wait_run(DAGSTER, run_id, 300.0) == "SUCCESS", (run_messages(run_id)[-12:], deployment_history(live)[-1:])
    PHASES.record("blue_green_deploy (handover, compose backend)", began)
    record = deployment_history(live)[-1]
    assert (record["kind"], record["status"], record["from_color"], record["to_color"], record["mode"]) == (
        "deploy", "succeeded", "blue", "green", "handover"), record
    kafka = record["measurements"]["kafka"]
    assert kafka["duplicates"] == 0 and kafka["missing"] == 0 and kafka["gaps"] == 0, kafka
    assert service_state(live, "streamer-green") == "running"
    assert service_state(live, "streamer-blue") == "exited"
    print(f"compose live test: deploy steps {record['steps']}", flush=True)

    began = time.monotonic()
    run_id = launch(DAGSTER, "rollback", {"ops": {"rollback_to_previous": {"config": {"reason": "live test"}}}})
    assert wait_run(DAGSTER, run_id, 240.0) == "SUCCESS", (run_messages(run_id)[-12:], deployment_history(live)[-1:])
    PHASES.record("rollback", began)
    history = deployment_history(live)
    assert [r["kind"] for r in history[-2:]] == ["deploy", "rollback"], history
    assert history[-1]["active_color"] == "blue" and history[-1]["status"] == "manual_rollback", history[-1]
    print(f"compose live test: rollback {history[-1].get('rollback_seconds')} s, steps {history[-1]['steps']}",
          flush=True)
    assert service_state(live, "streamer-blue") == "running"
    assert service_state(live, "streamer-green") == "exited"
    poll_until(lambda: get_json(f"{STREAMER}/readyz")["ready"], 60, "blue ready after the rollback",
               interval_s=1.0, error=AssertionError)

    began = time.monotonic()
    graphql(DAGSTER, "mutation { setNuxSeen }")
    shot = artifacts_dir / "compose-dagster-runs.png"
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                           f"--user-data-dir={artifacts_dir / 'chromium-compose'}", "--virtual-time-budget=15000",
                           f"--screenshot={shot}", f"{DAGSTER}/runs"], capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-1000:]
    PHASES.record("UI screenshot", began)


STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def test_two_deploys_launched_at_once_run_one_after_the_other(live: LiveStack) -> None:
    """The run queue of dagster/dagster.yaml (k2/kind=deployment, limit 1) in the compose Dagster: the second
    deploy waits QUEUED while the first runs, then runs; both succeed (blue -> green, then green -> blue)."""
    began = time.monotonic()
    first = launch(DAGSTER, "blue_green_deploy", {"ops": {"build_image": {"config": DEPLOY_CONFIG}}})
    second = launch(DAGSTER, "blue_green_deploy", {"ops": {"build_image": {"config": DEPLOY_CONFIG}}})

    def status(run_id: str) -> str:
        return str(graphql(DAGSTER, STATUS, {"id": run_id})["runOrError"]["status"])

    poll_until(lambda: status(first) == "STARTED" and status(second) == "QUEUED", 60,
               "first deploy STARTED while the second waits QUEUED", interval_s=0.5, error=AssertionError)
    assert wait_run(DAGSTER, first, 300.0) == "SUCCESS", run_messages(first)[-12:]
    assert wait_run(DAGSTER, second, 300.0) == "SUCCESS", run_messages(second)[-12:]
    records = deployment_history(live)[-2:]
    assert [(r["from_color"], r["to_color"], r["status"]) for r in records] == [
        ("blue", "green", "succeeded"), ("green", "blue", "succeeded")], records
    first_end = records[0]["finished_at"]
    assert records[1]["started_at"] >= first_end - 1.0, "the second deploy started before the first ended"
    for record in records:
        kafka = record["measurements"]["kafka"]
        assert kafka["duplicates"] == 0 and kafka["missing"] == 0, kafka
    PHASES.record("two deploys through the run queue", began)


def test_compose_restart_keeps_the_handover_mode(live: LiveStack) -> None:
    """After the deploy and the rollback, blue is active again; `docker compose restart` keeps the mode the
    streamer recorded (K2_HANDOVER_MODE_FILE inside the container), it does not fall back to K2_START_MODE."""
    began = time.monotonic()
    mode_before = get_json(f"{STREAMER}/readyz")["mode"]
    container = next(str(c["Name"]) for c in live.compose.containers() if c["Service"] == "streamer-blue")
    created_env = live.engine.docker.run("inspect", "--format", "{{json .Config.Env}}", container).stdout.decode()
    # The rollback recreated blue in standby (K2_START_MODE=standby) and released it: it produces now.
    assert mode_before == "active" and "K2_START_MODE=standby" in created_env, (mode_before, created_env)
    live.compose.run("restart", "streamer-blue")
    poll_until(lambda: get_json(f"{STREAMER}/readyz")["ready"], 120, "blue ready after compose restart",
               interval_s=1.0, error=AssertionError)
    assert get_json(f"{STREAMER}/readyz")["mode"] == mode_before
    PHASES.record("compose restart", began)


def test_a_crashed_streamer_is_restarted_by_its_restart_policy(live: LiveStack) -> None:
    """The streamer's process killed (SIGKILL from the host to the container's PID 1, i.e. a crash): compose's
    `restart: unless-stopped` brings it back. (`docker kill` itself counts as a manual stop for Docker, which
    then does not restart the container: measured on Docker 20.10.)"""
    began = time.monotonic()
    docker = live.engine.docker
    container = next(str(c["Name"]) for c in live.compose.containers() if c["Service"] == "streamer-blue")
    before = docker.run("inspect", "--format", "{{.RestartCount}}", container).stdout.decode().strip()
    pid = int(docker.run("inspect", "--format", "{{.State.Pid}}", container).stdout.decode().strip())
    assert pid > 0, f"{container} is not running"
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)

    def restarted_and_ready() -> bool:
        count = docker.run("inspect", "--format", "{{.RestartCount}}", container).stdout.decode().strip()
        if count == before:
            return False
        with urllib.request.urlopen(f"{STREAMER}/readyz", timeout=5) as response:
            return response.status == 200

    poll_until(restarted_and_ready, 120, "streamer-blue restarted by its restart policy and ready",
               interval_s=1.0, error=AssertionError)
    # The outage is a gap in Kafka's trade ids (each symbol's ids continue after the restart); nothing is
    # duplicated. The restarted process's own gap counter starts from zero: the gap is the audit's.
    restarted_at = time.time()
    poll_until(lambda: get_json(f"{STREAMER}/readyz")["ready"] and time.time() - restarted_at > 5, 30,
               "data after the restart", interval_s=0.5, error=AssertionError)
    audit = audit_ids(read_trade_ids("127.0.0.1:9094", TOPIC, int((killed_at - 20) * 1000)))
    print(f"compose live test: Kafka across the crash: {audit.to_dict()['symbols']}", flush=True)
    assert audit.duplicates == 0, audit.to_dict()
    assert set(audit.symbols) == {"btcusdt", "ethusdt"}
    assert all(s.gaps >= 1 and s.missing > 0 for s in audit.symbols.values()), audit.to_dict()
    PHASES.record("docker kill -> restarted", began)


def test_phases_fit_the_budget() -> None:
    # Runs last in this module: the live test's budget is 10 minutes on 2 cores.
    total = sum(PHASES.seconds.values())
    print(f"compose live test: phases so far {total:.0f} s", flush=True)
    assert total < 600, PHASES.seconds
