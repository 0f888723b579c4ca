"""Duplicates and gaps in Kafka by (symbol, trade id): what consumers see across a deployment.

Trade ids are contiguous per symbol on Binance, so within the span a consumer saw, a missing id is a gap
and a repeated id is a duplicate. The streamer puts the symbol in the message key and the trade id in the
`trade_id` header, so no Avro decoding is needed.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from k2_ops.deploy.model import DeploymentError
from streamer.config import KafkaClientConfig, load_kafka_client_config
from streamer.sink import client_config

TRADE_ID_HEADER = "trade_id"


@dataclass
class SymbolAudit:
    symbol: str
    messages: int
    unique: int
    duplicates: int
    first_id: int
    last_id: int
    missing: int  # ids absent between first and last
    gaps: int  # runs of consecutive missing ids


@dataclass
class IdAudit:
    symbols: dict[str, SymbolAudit] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.symbols.values())

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.symbols.values())

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.symbols.values())

    @property
    def gaps(self) -> int:
        return sum(s.gaps for s in self.symbols.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "gaps": self.gaps,
            "symbols": {k: asdict(v) for k, v in sorted(self.symbols.items())},
        }


def audit_ids(pairs: Iterable[tuple[str, int]]) -> IdAudit:
    by_symbol: dict[str, list[int]] = {}
    for symbol, trade_id in pairs:
        by_symbol.setdefault(symbol, []).append(trade_id)
    audit = IdAudit()
    for symbol, ids in by_symbol.items():
        counts = Counter(ids)
        unique = sorted(counts)
        missing = 0
        gaps = 0
        for previous, current in itertools.pairwise(unique):
            if current - previous > 1:
                gaps += 1
                missing += current - previous - 1
        audit.symbols[symbol] = SymbolAudit(
            symbol=symbol,
            messages=len(ids),
            unique=len(unique),
            duplicates=len(ids) - len(unique),
            first_id=unique[0],
            last_id=unique[-1],
            missing=missing,
            gaps=gaps,
        )
    return audit


def read_trade_ids(
    bootstrap_servers: str,
    topic: str,
    since_ms: int | None = None,
    *,
    timeout_s: float = 60.0,
    header: str = TRADE_ID_HEADER,
    client: KafkaClientConfig | None = None,
) -> list[tuple[str, int]]:
    """(symbol, id) of every message in `topic` from `since_ms` (record timestamp) up to the current end.
    Security settings: `client`, else the K2_KAFKA_* environment (the streamer's own settings)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            **client_config(bootstrap_servers, client or load_kafka_client_config()),
            # A throw-away group: the audit never commits and never disturbs real consumers.
            "group.id": f"k2-deploy-audit-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(timeout_s, 10.0))
        except KafkaException as exc:
            raise DeploymentError(f"Kafka {bootstrap_servers} unreachable for the audit: {exc}") from exc
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise DeploymentError(f"topic {topic} not found on {bootstrap_servers}")
        partitions = sorted(info.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0)[1] for p in partitions}
        if since_ms is None:
            starts = {p: OFFSET_BEGINNING for p in partitions}
        else:
            found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout=10.0)
            # -1: no message at or after that time in this partition.
            starts = {tp.partition: tp.offset for tp in found}
        wanted = {
            p: ends[p]
            for p in partitions
            if starts[p] != -1 and ends[p] > 0 and (starts[p] == OFFSET_BEGINNING or starts[p] < ends[p])
        }
        if not wanted:
            return []
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in wanted])
        pairs: list[tuple[str, int]] = []
        remaining = dict(wanted)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise DeploymentError(f"audit of {topic}: did not reach the end offsets {wanted} in {timeout_s:g} s")
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is not None:
                    continue
                partition, offset = message.partition(), message.offset()
                # Only a message with an error lacks its position, and those are skipped above.
                if partition is None or offset is None:
                    continue
                if partition not in remaining or offset >= remaining[partition]:
                    continue
                pairs.append(_pair(message, header))
                if offset + 1 >= remaining[partition]:
                    del remaining[partition]
        return pairs
    finally:
        consumer.close()


def _pair(message: Any, header: str) -> tuple[str, int]:
    key = message.key()
    headers = dict(message.headers() or [])
    raw = headers.get(header)
    if key is None or raw is None:
        raise DeploymentError(
            f"message at {message.topic()}[{message.partition()}]@{message.offset()} has no "
            f"symbol key or {header} header"
        )
    # The key is the record's symbol as Binance spells it (BTCUSDT); ids are compared per lowercase symbol.
    return key.decode().lower(), int(raw)
