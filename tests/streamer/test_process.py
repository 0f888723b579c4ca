"""The streamer process: bad frames, TLS refusals, SIGTERM, /metrics types, the real Schema Registry,
bad configuration, and the blue-green handover seam (standby → release with zero gap and zero duplicates)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from streamer.metrics import CONTRACT_METRICS
from streamer.serialize import load_schema
from tests.streamer.conftest import REPO_ROOT, compare_with_truth, consume, trade_ids, wait_for
from tests.streamer.test_rotation_and_faults import SYMBOLS, caught_up, settle_and_compare

pytestmark = pytest.mark.slow


def test_malformed_unknown_and_oversized_frames_are_counted_without_a_crash(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers)
    streamer.wait_ready()
    sim.send_malformed(count=3)
    sim.send_unknown_event(count=2)
    sim.send_oversized(size_bytes=2_000_000)

    def counted() -> bool:
        m = streamer.metrics()
        return (
            m.value("binance_message_errors_total", error_type="malformed_json") == 3
            and m.value("binance_message_errors_total", error_type="unknown_event") == 2
            and m.value("binance_message_errors_total", error_type="oversized") == 1
        )

    wait_for(counted, 15, "bad frames counted")
    received = streamer.metric("binance_messages_received_total")
    wait_for(lambda: streamer.metric("binance_messages_received_total") > received + 50, 15, "still streaming")
    assert len(sim.connections()) == 1  # the same connection carried on
    result = settle_and_compare(streamer, sim, kafka.bootstrap_servers)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0


def test_a_frame_too_big_to_read_is_counted_and_the_stream_recovers(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """Over 4 x K2_MAX_FRAME_BYTES websockets refuses the frame unread and closes with 1009: counted as
    oversized (not as the server closing), then a new connection."""
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_MAX_FRAME_BYTES="16384")
    streamer.wait_ready()
    sim.send_oversized(size_bytes=200_000)
    wait_for(lambda: streamer.metric("binance_message_errors_total", error_type="oversized") == 1, 15,
             "oversized frame counted")
    m = streamer.metrics()
    assert m.value("binance_reconnects_total", reason="error") == 1
    assert m.value("binance_reconnects_total", reason="server_close") == 0
    received = streamer.metric("binance_messages_received_total")
    wait_for(lambda: streamer.metric("binance_messages_received_total") > received + 50, 30, "streaming again")
    assert "counted as oversized" in streamer.log_text()


def test_not_ready_until_market_data_arrives(make_simulator: Any, make_streamer: Any, kafka: Any) -> None:
    """An open connection without data is not "fresh data": /readyz waits for the first message."""
    sim = make_simulator()
    sim.pause_market()
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_HEALTH_CHECK_TIMEOUT_SECONDS="30")
    wait_for(lambda: streamer.get("/readyz")[1]["checks"]["connected"]["ok"], 30, "connected to the simulator")
    status, body = streamer.get("/readyz")
    assert status == 503
    assert body["checks"]["data_fresh"] == {"ok": False, "reason": "no data yet"}
    sim.resume_market()
    streamer.wait_ready(30)
    assert streamer.get("/readyz")[1]["checks"]["data_fresh"]["ok"] is True


@pytest.mark.parametrize("cert_mode", ["unknown_ca", "wrong_host"])
def test_bad_certificates_are_refused_reported_and_retried(
    cert_mode: str, make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator(cert_mode=cert_mode)
    streamer = make_streamer(sim, kafka.bootstrap_servers)
    wait_for(
        lambda: streamer.metric("binance_connection_failures_total", reason="ssl_certificate") >= 2,
        30,
        "certificate failures counted",
    )
    status, body = streamer.get("/readyz")
    assert status == 503 and body["checks"]["connected"]["ok"] is False
    log = streamer.log_text()
    expected = "unable to get local issuer certificate" if cert_mode == "unknown_ca" else "Hostname mismatch"
    assert "TLS certificate of localhost refused" in log and expected in log
    m = streamer.metrics()
    assert m.value("binance_messages_received_total") == 0 and m.value("binance_ssl_verify_enabled") == 1
    assert m.value("streamer_log_errors_total", level="error") >= 2
    # Never silently downgraded: it keeps refusing until the server presents a valid certificate.
    sim.set_cert_mode("valid")
    streamer.wait_ready(60)


def test_verification_can_be_disabled_only_loudly(make_simulator: Any, make_streamer: Any, kafka: Any) -> None:
    sim = make_simulator(cert_mode="wrong_host")
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_SSL_VERIFY="false", K2_SSL_CA_FILE="")
    streamer.wait_ready()
    assert streamer.metric("binance_ssl_verify_enabled") == 0
    assert "TLS CERTIFICATE VERIFICATION IS DISABLED" in streamer.log_text()


def test_sigterm_while_streaming_delivers_everything_received(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator(rate_per_symbol=200.0)
    streamer = make_streamer(sim, kafka.bootstrap_servers)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 500, 30, "streaming")
    assert streamer.terminate() == 0  # the market keeps going while it stops
    summary = streamer.summary()
    assert summary["unacknowledged"] == 0 and summary["produce_errors"] == 0
    assert summary["delivered"] == summary["received"] == summary["produced"]
    topic = streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades"
    records = consume(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= summary["received"])
    assert len(records) == summary["received"]
    (conn,) = sim.connections()
    assert conn.close_code == 1000
    for symbol in SYMBOLS:
        ids = trade_ids(records, symbol)
        assert ids[-1] == summary["last_received"][f"{symbol}@trade"]
        # Everything the exchange sent on the socket before confirming our close is in Kafka, once.
        sent = sim.sent_ids(symbol, connection_id=conn.id)
        assert ids == sent


def test_metrics_endpoint_exposes_every_contract_metric_with_its_type(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_INSTANCE="green")
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") > 0, 30, "deliveries")
    m = streamer.metrics()
    for name, kind in CONTRACT_METRICS.items():
        assert m.type_of(name) == kind, f"{name}: {m.type_of(name)} instead of {kind}"
    # Every streamer metric carries instance=K2_INSTANCE; the process collector is there too.
    for family in m.families.values():
        for sample in family.samples:
            if sample.name.startswith(("binance_", "kafka_", "serializer_", "streamer_", "memory_")):
                assert sample.labels.get("instance") == "green", sample
    assert m.value("process_start_time_seconds") > 0 and m.value("process_memory_rss_bytes") > 0
    assert m.value("binance_messages_received_total", symbol="btcusdt", stream="trade") > 0
    assert m.value("binance_connection_status") == 1 and m.value("serializer_cache_size") == 1
    status, health = streamer.get("/healthz")
    assert status == 200 and health["status"] == "alive"


def test_records_use_the_real_schema_registry(
    make_simulator: Any, make_streamer: Any, kafka: Any, schema_registry: Any
) -> None:
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_SCHEMA_REGISTRY_URL=schema_registry.url)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 50, 30, "deliveries")
    assert streamer.terminate() == 0
    topic = streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades"
    records = consume(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= 50)
    client = SchemaRegistryClient({"url": schema_registry.url})
    registered = client.get_schema(records[0].schema_id)
    assert registered.schema_type == "AVRO"
    assert json.loads(registered.schema_str)["name"] == load_schema("trade")["name"]
    assert client.get_latest_version(f"{topic}-value").schema_id == records[0].schema_id


def test_bad_configuration_exits_2_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamer"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "K2_PING_INTERVAL_SECONDS": "-5"},
    )
    assert result.returncode == 2
    assert "K2_PING_INTERVAL_SECONDS" in result.stderr and "0.25 .. 3600 seconds" in result.stderr


def test_handover_from_blue_to_green_has_no_gap_and_no_duplicate(
    make_simulator: Any, make_streamer: Any, kafka: Any, schema_registry: Any, fault_report: dict[str, Any]
) -> None:
    sim = make_simulator()
    blue = make_streamer(sim, kafka.bootstrap_servers, K2_SCHEMA_REGISTRY_URL=schema_registry.url)
    shared = {"K2_KAFKA_TOPIC_PREFIX": blue.env["K2_KAFKA_TOPIC_PREFIX"], "K2_SCHEMA_REGISTRY_URL": schema_registry.url}
    green = make_streamer(sim, kafka.bootstrap_servers, K2_INSTANCE="green", K2_START_MODE="standby", **shared)
    blue.wait_ready()
    assert green.wait_ready()["mode"] == "standby"
    wait_for(lambda: green.metric("binance_messages_received_total") >= 200, 30, "green buffering")
    assert green.metric("kafka_messages_produced_total") == 0
    status, standby = blue.post("/handover/standby", {"flush_timeout_seconds": 20})
    assert status == 200 and standby["flushed"], standby
    positions = standby["positions"]
    assert set(positions) == {f"{s}@trade" for s in SYMBOLS}
    status, released = green.post("/handover/release", {"after": positions})
    assert status == 200 and released["mode"] == "active"
    for key, report in released["streams"].items():
        # Green goes on at blue's next id: from its buffer, or live when it had nothing newer buffered yet.
        assert report["gap"] == 0 and report["first_produced"] in (None, positions[key] + 1), report
    blue_produced = blue.metric("kafka_messages_produced_total")
    wait_for(lambda: green.metric("kafka_messages_produced_total") >= 200, 30, "green producing")
    assert blue.metric("kafka_messages_produced_total") == blue_produced  # blue stays quiet
    _, blue_positions = blue.get("/positions")
    assert blue_positions["mode"] == "standby" and blue_positions["produced_last"] == positions
    sim.pause_market()
    wait_for(lambda: caught_up(green, sim), 30, "green caught up")
    assert blue.terminate() == 0
    assert green.terminate() == 0
    topic = shared["K2_KAFKA_TOPIC_PREFIX"] + ".trades"
    total = blue.summary()["delivered"] + green.summary()["delivered"]
    records = consume(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= total)
    report = {}
    for symbol in SYMBOLS:
        ids = trade_ids(records, symbol)
        report[symbol] = compare_with_truth(ids, sim.generated_ids(symbol))
        instances = [r.value["instance"] for r in records if r.value["symbol"] == symbol.upper()]
        switch = instances.index("green")
        assert set(instances[:switch]) == {"blue"} and set(instances[switch:]) == {"green"}
        assert ids[switch] == positions[f"{symbol}@trade"] + 1
        assert report[symbol]["missing"] == 0 and report[symbol]["duplicates"] == 0, report[symbol]
    fault_report["handover_blue_to_green"] = report


def test_injected_leak_raises_the_score_and_reports_allocators(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator()
    streamer = make_streamer(
        sim,
        kafka.bootstrap_servers,
        K2_TEST_LEAK_BYTES_PER_SECOND=4_000_000,
        K2_MEMORY_SAMPLE_INTERVAL_SECONDS=0.25,
        K2_MEMORY_WINDOW_SECONDS=20,
        K2_MEMORY_WARMUP_SECONDS=1,
        K2_LEAK_REFERENCE_MB_PER_HOUR=2400,  # same compressed clock as below: 4 MB/s is 14,400 MB/h
    )
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("memory_leak_detection_score") > 0.8, 60, "leak score above 0.8")
    _, allocations = wait_for(
        lambda: (r := streamer.get("/debug/allocations"))[1]["top_allocators"] and r, 30, "top allocators"
    )
    assert any("streamer/memory.py" in line for line in allocations["top_allocators"]), allocations
    log = streamer.log_text()
    assert "tracemalloc started (leak score" in log and "memory leak suspected" in log
    assert streamer.metric("memory_rss_trend_mb_per_hour") > 1000


def test_steady_streamer_scores_no_leak(make_simulator: Any, make_streamer: Any, kafka: Any) -> None:
    sim = make_simulator()
    streamer = make_streamer(
        sim,
        kafka.bootstrap_servers,
        K2_MEMORY_SAMPLE_INTERVAL_SECONDS=0.25,
        K2_MEMORY_WINDOW_SECONDS=15,
        K2_MEMORY_WARMUP_SECONDS=10,
        # A 15 s window stands for an hour: the reference slope is scaled like the clock (x240).
        K2_LEAK_REFERENCE_MB_PER_HOUR=2400,
    )
    streamer.wait_ready()
    # A full window after the warm-up, while streaming.
    wait_for(lambda: streamer.get("/healthz")[1]["uptime_seconds"] >= 26, 60, "warm-up plus one window")
    assert streamer.metric("kafka_messages_produced_total") >= 1000
    m = streamer.metrics()
    assert m.value("memory_leak_detection_score") < 0.5
    assert "tracemalloc started" not in streamer.log_text()
