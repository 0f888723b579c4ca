"""Books rebuilt from real Kafka (k2_ops/books.py) and the daily `book_integrity` check, on topics written here
with the streamer's own Avro schemas: a chain that broke and was resynced by a later snapshot, and one that
broke with no snapshot after it."""

from __future__ import annotations

import io
import uuid
from typing import Any

from confluent_kafka import Producer
from fastavro import parse_schema, schemaless_writer

from dagster_project.assets.validation import _book_integrity
from dagster_project.resources import DeploymentResource
from k2_ops.books import chain_integrity, rebuild_books
from k2_ops.stack import KafkaService
from streamer.serialize import load_schema, topic_for, wire_header
from streamer.sink import ensure_topics

T0 = 1_790_000_000_000  # Kafka timestamps (ms) the records are written with


def _value(record_name: str, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(wire_header(1))
    schemaless_writer(out, parse_schema(load_schema(record_name)), record)
    return out.getvalue()


def _diff(symbol: str, first: int, last: int, bids: list[tuple[str, str]] = ()) -> dict[str, Any]:
    return {"exchange": "binance", "symbol": symbol, "first_update_id": first, "final_update_id": last,
            "event_time": T0, "bids": [{"price": p, "quantity": q} for p, q in bids], "asks": [],
            "ingestion_time": T0, "instance": "blue"}


def _snapshot(symbol: str, last: int, bids: list[tuple[str, str]]) -> dict[str, Any]:
    return {"exchange": "binance", "symbol": symbol, "last_update_id": last,
            "bids": [{"price": p, "quantity": q} for p, q in bids], "asks": [], "fetched_time": T0,
            "instance": "blue"}


def _write(kafka: KafkaService, prefix: str) -> None:
    """AAAUSDT: snapshot at 10, diffs 11..12, 13..14, then 17..18 (15..16 lost), then a snapshot at 18 and 19..20.
    BBBUSDT: snapshot at 100, diff 101..101, then 105..106 (102..104 lost) and no snapshot after it."""
    depth, snapshots = topic_for(prefix, "depth"), topic_for(prefix, "depthSnapshot")
    ensure_topics(kafka.bootstrap_servers, [depth, snapshots], 1, 1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    records = [
        (snapshots, "depthSnapshot", _snapshot("AAAUSDT", 10, [("1.00", "5")])),
        (depth, "depth", _diff("AAAUSDT", 11, 12, [("1.00", "6")])),
        (depth, "depth", _diff("AAAUSDT", 13, 14, [("0.90", "1")])),
        (snapshots, "depthSnapshot", _snapshot("BBBUSDT", 100, [("2.00", "1")])),
        (depth, "depth", _diff("BBBUSDT", 101, 101, [("2.00", "2")])),
        (depth, "depth", _diff("AAAUSDT", 17, 18, [("1.00", "0.00000000")])),
        (snapshots, "depthSnapshot", _snapshot("AAAUSDT", 18, [("0.90", "1")])),
        (depth, "depth", _diff("AAAUSDT", 19, 20, [("0.80", "3")])),
        (depth, "depth", _diff("BBBUSDT", 105, 106, [("1.90", "4")])),
    ]
    for index, (topic, name, record) in enumerate(records):
        producer.produce(topic, _value(name, record), key=record["symbol"].encode(), timestamp=T0 + index * 1000)
    assert producer.flush(30) == 0


def test_books_are_rebuilt_from_the_latest_snapshot_and_breaks_without_a_resync_are_found(
    kafka: KafkaService, tmp_path: Any
) -> None:
    prefix = f"books.{uuid.uuid4().hex[:8]}"
    _write(kafka, prefix)
    conf = {"bootstrap.servers": kafka.bootstrap_servers}

    books = rebuild_books(conf, prefix, timeout_s=30)
    assert books["AAAUSDT"].status == "in_sync" and books["AAAUSDT"].last_update_id == 20
    assert books["AAAUSDT"].bids == [{"price": "0.90", "quantity": "1"}, {"price": "0.80", "quantity": "3"}]
    assert books["BBBUSDT"].status == "broken" and books["BBBUSDT"].last_update_id == 101
    assert books["BBBUSDT"].break_at == "diff 105..106 after 101: ids 102..104 missing"
    assert rebuild_books(conf, prefix, ["CCCUSDT"], timeout_s=30)["CCCUSDT"].status == "no_snapshot"

    integrity = chain_integrity(conf, prefix, T0, T0 + 60_000, timeout_s=30)
    assert (integrity.symbols, integrity.diffs, integrity.snapshots) == (2, 6, 3)
    assert [(b.symbol, b.expected_first_id, b.first_id, b.resynced) for b in integrity.breaks] == [
        ("AAAUSDT", 15, 17, True), ("BBBUSDT", 102, 105, False)]
    # Only what was produced inside the window counts: before BBBUSDT's break, nothing is wrong.
    assert not chain_integrity(conf, prefix, T0, T0 + 8_000, timeout_s=30).unresynced

    deployment = DeploymentResource(state_dir=str(tmp_path / "deploy"), run_dir=str(tmp_path / "run"),
                                    kafka_bootstrap_servers=kafka.bootstrap_servers, topic_prefix=prefix)
    check = _book_integrity(deployment, T0 / 1000, T0 / 1000 + 60)
    assert not check.passed and "BBBUSDT ids 102..104" in (check.description or "")
    assert check.metadata["unresynced_breaks"].value == 1
    nothing = DeploymentResource(state_dir=str(tmp_path / "deploy"), run_dir=str(tmp_path / "run"),
                                 kafka_bootstrap_servers=kafka.bootstrap_servers, topic_prefix="no.such.prefix")
    passed = _book_integrity(nothing, T0 / 1000, T0 / 1000 + 60)
    assert passed.passed and "streams no depth" in (passed.description or "")
