"""Integration harness: the streamer as a real subprocess against the exchange simulator (verified TLS) and
real Kafka; /metrics read over HTTP; Kafka consumed with confluent_kafka and decoded from the Avro wire format.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader
from prometheus_client.parser import text_string_to_metric_families

from k2_ops.polling import poll_until
from k2_ops.simulator import BackgroundSimulator, SimulatorConfig
from k2_ops.stack import KafkaService
from k2_ops.stack.process import launch_on_port, terminate
from streamer.kinds import stream_key
from streamer.serialize import load_schema, split_wire, topic_for
from streamer.summary import summary_from_log

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; return its value, or fail naming what never happened."""
    return poll_until(condition, timeout_s, what, interval_s=interval_s, error=AssertionError)


@dataclass
class Metrics:
    families: dict[str, Any]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        total = 0.0
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def type_of(self, exported_name: str) -> str | None:
        """The type of the family exporting `exported_name` (a histogram by its family name)."""
        for family in self.families.values():
            if family.name == exported_name and family.type == "histogram":
                return family.type
            for sample in family.samples:
                if sample.name == exported_name:
                    return family.type
        return None


@dataclass
class StreamerProcess:
    env: dict[str, str]
    log_path: Path
    port: int = 0  # 0: one from the port ledger at start (chosen again if it is taken before the bind)
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StreamerProcess:
        """Started and listening on its port (or exited: a test of a failing start sees why)."""

        def launch(port: int) -> tuple[int, Callable[[], str | None]]:
            self.port = port
            self.env["K2_METRICS_PORT"] = str(port)
            if self._log is not None:
                self._log.close()
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer"], cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=self._log
            )
            return self.proc.pid, self.exit_reason

        launch_on_port("streamer", launch, self.port)
        return self

    def exit_reason(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"exited with {self.proc.returncode}; log:\n{self.log_tail()}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        ctype_json = body[:1] in (b"{", b"[")
        return status, json.loads(body) if ctype_json else body.decode()

    def post(
        self, path: str, payload: dict[str, Any] | None = None, timeout_s: float = 60, token: str | None = None
    ) -> tuple[int, Any]:
        """POST with the instance's handover token (`token` to send another; "" to send none)."""
        token = self.env.get("K2_HANDOVER_TOKEN", "") if token is None else token
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(payload or {}).encode(),
            method="POST",
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> Metrics:
        _, text = self.get("/metrics")
        return Metrics({f.name: f for f in text_string_to_metric_families(text)})

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().value(name, **labels)

    def wait_ready(self, timeout_s: float = 60) -> dict[str, Any]:
        def ready() -> Any:
            self.assert_running()
            status, body = self.get("/readyz")
            return body if status == 200 else None

        return wait_for(ready, timeout_s, f"streamer ready on {self.base_url}; log:\n{self.log_tail()}")

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"streamer exited with {self.proc.returncode}; log:\n{self.log_tail()}")

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        if terminate(self.proc, timeout_s):
            raise AssertionError(f"streamer ignored SIGTERM for {timeout_s} s; log:\n{self.log_tail()}")
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def summary(self) -> dict[str, Any]:
        """The JSON summary the streamer logs when it stops."""
        summary = summary_from_log(self.log_text())
        if summary is not None:
            return summary
        raise AssertionError(f"no shutdown summary in the log:\n{self.log_tail()}")


@dataclass
class Record:
    key: bytes
    headers: dict[str, bytes]
    value: dict[str, Any]
    schema_id: int


def consume(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Record]], bool],
    timeout_s: float = 60,
    stream: str = "trade",
    idle_s: float = 1.0,
    client: dict[str, str] | None = None,
) -> list[Record]:
    """Read `topic` from the beginning until `until(records)` holds, then until it has been idle `idle_s`
    (so duplicates arriving after the expected ones are seen too). `client`: security settings (librdkafka)."""
    consumer = Consumer(
        {
            **(client or {}),
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    schema = parse_schema(load_schema(stream))
    records: list[Record] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        satisfied_at: float | None = None
        last_message = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if msg is not None and msg.error() is None:
                schema_id, body = split_wire(msg.value())
                records.append(
                    Record(msg.key(), dict(msg.headers() or []), schemaless_reader(io.BytesIO(body), schema), schema_id)
                )
                last_message = now
            if satisfied_at is None and until(records):
                satisfied_at = now
            if satisfied_at is not None and now - max(last_message, satisfied_at) >= idle_s:
                return records
        raise AssertionError(f"consuming {topic}: condition not met within {timeout_s} s ({len(records)} read)")
    finally:
        consumer.close()


def trade_ids(records: list[Record], symbol: str) -> list[int]:
    return [r.value["trade_id"] for r in records if r.value["symbol"] == symbol.upper()]


def compare_with_truth(kafka_ids: list[int], generated: list[int], start: int | None = None) -> dict[str, Any]:
    """Kafka's ids against the simulator's, from `start` (default: the first id the streamer delivered)."""
    if start is not None:
        generated = [g for g in generated if g >= start]
    if not kafka_ids:
        return {
            "expected": len(generated),
            "delivered": 0,
            "missing": len(generated),
            "duplicates": 0,
            "in_order": True,
            "missing_ids": generated[:20],
        }
    # With an explicit start (the first trade sent on the streamer's first connection) a loss before the first
    # delivered trade counts too; without one, the window opens at the first trade Kafka holds.
    expected = generated if start is not None else [g for g in generated if g >= kafka_ids[0]]
    unique = set(kafka_ids)
    missing = [g for g in expected if g not in unique]
    return {
        "expected": len(expected),
        "delivered": len(kafka_ids),
        "missing": len(missing),
        "duplicates": len(kafka_ids) - len(unique),
        "in_order": kafka_ids == sorted(kafka_ids),
        "unexpected": len(unique - set(expected)),
        "missing_ids": missing[:20],
    }


def settle_streams(streamer: StreamerProcess, sim: BackgroundSimulator, bootstrap: str, symbols: Sequence[str],
                   id_fields: Mapping[str, str], timeout_s: float = 60) -> dict[str, Any]:
    """Pause the market, wait until the streamer has the last id sent on every stream and nothing left to
    repair, stop it, and compare each kind's topic with the ground truth per symbol: result[kind][symbol] is
    `compare_with_truth` from the first id sent to the streamer's first connection; result[kind]["records"]
    the records read. `id_fields`: kind -> its id field ("trade" -> "trade_id")."""
    sim.pause_market()

    def caught_up() -> bool:
        _, positions = streamer.get("/positions")
        received = positions["received_last"]
        return all(received.get(stream_key(s, k)) == (sim.sent_ids(s, k)[-1:] or [None])[0]
                   for s in symbols for k in id_fields)

    wait_for(caught_up, timeout_s, "streamer caught up with the paused market")
    wait_for(lambda: streamer.metric("binance_gap_repair_pending_messages") == 0, timeout_s, "every repair finished")
    metrics = streamer.metrics()
    assert streamer.terminate() == 0
    summary = streamer.summary()
    prefix = streamer.env["K2_KAFKA_TOPIC_PREFIX"]
    first_connection = min(c.id for c in sim.connections())
    result: dict[str, Any] = {"metrics": metrics, "summary": summary}
    for kind, id_field in id_fields.items():
        records = consume(bootstrap, topic_for(prefix, kind), lambda rs: len(rs) >= 1, stream=kind, idle_s=2.0,
                          timeout_s=120)
        result[kind] = {"records": records}
        by_symbol: dict[str, list[int]] = {}
        for record in records:
            by_symbol.setdefault(record.value["symbol"].lower(), []).append(record.value[id_field])
        for symbol in symbols:
            sent = sim.sent_ids(symbol, kind)
            if not sent:
                continue
            truth = [i for i in sim.generated_ids(symbol, kind) if i <= sent[-1]]
            first_sent = sim.sent_ids(symbol, kind, connection_id=first_connection)
            start = first_sent[0] if first_sent else sent[0]
            result[kind][symbol] = compare_with_truth(by_symbol.get(symbol, []), truth, start)
    return result


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., BackgroundSimulator]]:
    started: list[BackgroundSimulator] = []

    def make(**overrides: Any) -> BackgroundSimulator:
        settings: dict[str, Any] = {"symbols": ("btcusdt", "ethusdt"), "rate_per_symbol": 50.0, "tls": True}
        settings.update(overrides)
        sim = BackgroundSimulator(SimulatorConfig(**settings)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


# What the deploy tooling would share with both colors; `StreamerProcess.post` sends it.
HANDOVER_TOKEN = "test-handover-token-0123456789"


@pytest.fixture
def make_streamer(tmp_path: Path) -> Iterator[Callable[..., StreamerProcess]]:
    """Start `python -m streamer` against a simulator and Kafka; every instance is SIGTERMed at the end."""
    started: list[StreamerProcess] = []

    def make(sim: BackgroundSimulator | None, bootstrap: str, start: bool = True, **env: Any) -> StreamerProcess:
        settings = {
            "K2_BINANCE_SYMBOLS": "btcusdt,ethusdt",
            "K2_BINANCE_STREAMS": "trade",
            "K2_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "K2_KAFKA_TOPIC_PREFIX": f"test.{uuid.uuid4().hex[:10]}",
            "K2_SCHEMA_REGISTRY_URL": f"mock://{uuid.uuid4().hex[:8]}",
            "K2_INSTANCE": "blue",
            "K2_PING_INTERVAL_SECONDS": "5",
            "K2_PING_TIMEOUT_SECONDS": "2",
            "K2_HEALTH_CHECK_TIMEOUT_SECONDS": "5",
            "K2_MEMORY_SAMPLE_INTERVAL_SECONDS": "1",
            "K2_BACKOFF_INITIAL_SECONDS": "0.2",
            "K2_BACKOFF_MAX_SECONDS": "2",
            "K2_SHUTDOWN_FLUSH_TIMEOUT_SECONDS": "30",
            "K2_HANDOVER_TOKEN": HANDOVER_TOKEN,
        }
        if sim is not None:
            settings["K2_BINANCE_WS_URL"] = sim.ws_base_url + "/stream"
            settings["K2_SSL_CA_FILE"] = str(sim.ca_file)
        settings.update({k: str(v) for k, v in env.items()})
        environ = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
        environ.update(settings)
        process = StreamerProcess(environ, tmp_path / f"streamer-{len(started)}.log")
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.terminate()
        if process._log is not None:
            process._log.close()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaService]:
    """A Kafka of this test alone, to stop and restart (data dir and port survive `stop()`/`start()`)."""
    service = KafkaService(tmp_path / "kafka-own", name="kafka-own")
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def fault_report(artifacts_dir: Path) -> Iterator[dict[str, Any]]:
    """What each fault cost in lost trades, written to test-artifacts/streamer_fault_costs.json."""
    report: dict[str, Any] = {}
    yield report
    if report:
        path = artifacts_dir / "streamer_fault_costs.json"
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(report)  # runs of a subset keep the other scenarios' last results
        path.write_text(json.dumps(merged, indent=2, sort_keys=True))
