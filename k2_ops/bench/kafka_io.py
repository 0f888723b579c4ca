"""Kafka for the benchmark: topics created with LogAppendTime, and reading back what the streamer produced.

The streamer only creates topics that are missing, so creating them first with
`message.timestamp.type=LogAppendTime` makes every record's Kafka timestamp the broker's clock when the
record was appended to the log: for acks=all on this one-node cluster that is the moment the
acknowledgement is sent (the ack follows the append by the loopback round trip).
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastavro import parse_schema, schemaless_reader

from streamer.config import load_kafka_client_config
from streamer.kinds import KINDS
from streamer.pipeline import REST_SOURCE, SOURCE_HEADER
from streamer.serialize import load_schema, split_wire, topic_for, without_logical_types
from streamer.sink import client_config


@dataclass(frozen=True, slots=True)
class Rec:
    """One record as read back from Kafka (times in ms; event_time is None for bookTicker)."""

    stream: str
    symbol: str
    ident: int
    event_time: int | None
    ingestion_time: int
    instance: str
    append_time: int
    partition: int
    offset: int
    repaired: bool = False  # header k2-source: rest (fetched from REST history, not received live)


def create_topics(bootstrap: str, prefix: str, streams: tuple[str, ...], partitions: int = 3) -> list[str]:
    topics = [topic_for(prefix, s) for s in streams]
    # no INFO lines on stderr; security settings from the K2_KAFKA_* environment like every client
    admin = AdminClient({**client_config(bootstrap, load_kafka_client_config()), "log_level": 4})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1,
                  config={"message.timestamp.type": "LogAppendTime"}) for t in topics],
        operation_timeout=30, request_timeout=30,
    )
    for future in futures.values():
        future.result()
    return topics


def read_records(bootstrap: str, prefix: str, streams: tuple[str, ...], timeout_s: float = 120.0) -> list[Rec]:
    """Every record in the prefix's topics, up to the high watermarks at the time of the call."""
    consumer = Consumer({
        **client_config(bootstrap, load_kafka_client_config()),
        "group.id": f"k2-bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    out: list[Rec] = []
    try:
        topic_stream = {topic_for(prefix, s): s for s in streams}
        schemas = {s: parse_schema(without_logical_types(load_schema(s))) for s in streams}
        metadata = consumer.list_topics(timeout=10)
        wanted: dict[tuple[str, int], int] = {}
        assignments = []
        for topic in topic_stream:
            if topic not in metadata.topics:
                continue
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > low:
                    wanted[(topic, partition)] = high
                    assignments.append(TopicPartition(topic, partition, low))
        if not assignments:
            return out
        consumer.assign(assignments)
        remaining = dict(wanted)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise KafkaException(
                    f"reading {prefix}.*: {len(remaining)} partition(s) incomplete after {timeout_s} s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                msg_topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if msg_topic is None or partition is None or offset is None:
                    continue  # only a message with an error lacks its position, and those are skipped above
                end = remaining.get((msg_topic, partition))
                if end is None or offset >= end:
                    continue
                stream = topic_stream[msg_topic]
                raw = msg.value()
                if raw is None:  # the streamer writes no tombstones
                    raise KafkaException(f"{msg_topic}[{partition}]@{offset} has no value")
                _, body = split_wire(raw)
                # Every K2 schema is an Avro record: schemaless_reader reads it as a dict.
                value = cast(dict[str, Any], schemaless_reader(io.BytesIO(body), schemas[stream], None))
                kind, stamp = msg.timestamp()
                if kind != TIMESTAMP_LOG_APPEND_TIME:
                    raise KafkaException(f"{msg_topic} has no LogAppendTime timestamps (type {kind})")
                repaired = (SOURCE_HEADER, REST_SOURCE) in (msg.headers() or [])
                out.append(Rec(stream, value["symbol"].lower(), value[KINDS[stream].id_field], value.get("event_time"),
                               value["ingestion_time"], value["instance"], stamp, partition, offset, repaired))
                if offset + 1 >= end:
                    del remaining[(msg_topic, partition)]
    finally:
        consumer.close()
    return out
