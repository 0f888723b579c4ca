"""A record Kafka rejects is counted in kafka_produce_errors_total and logged with its topic and symbol key,
and the streamer keeps running."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from tests.streamer.conftest import wait_for


def test_rejected_records_are_counted_and_named_in_the_log(make_simulator: Any, make_streamer: Any, kafka: Any) -> None:
    prefix = f"test.rejects.{uuid.uuid4().hex[:8]}"
    # A topic whose size limit no trade record fits: the broker rejects every one (MSG_SIZE_TOO_LARGE).
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topic = NewTopic(f"{prefix}.trades", num_partitions=1, replication_factor=1, config={"max.message.bytes": "64"})
    admin.create_topics([topic])[topic.topic].result(timeout=30)

    sim = make_simulator(symbols=("btcusdt",), rate_per_symbol=20.0)
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_SYMBOLS="btcusdt", K2_KAFKA_TOPIC_PREFIX=prefix)
    wait_for(lambda: streamer.metric("kafka_produce_errors_total") >= 5, 60, "rejected records counted")
    streamer.assert_running()
    assert streamer.metric("kafka_messages_produced_total") == 0
    rejected = [line for line in streamer.log_text().splitlines() if "Kafka rejected a message" in line]
    assert rejected, streamer.log_tail()
    assert f"{prefix}.trades" in rejected[0] and "key BTCUSDT" in rejected[0]
    assert "MSG_SIZE_TOO_LARGE" in rejected[0]
