"""Order books rebuilt from Kafka, as a consumer of the topics does it (docs/consumers.md), and `k2 book`.

Per symbol: the latest record of `<prefix>.depth_snapshots`, then the diffs of `<prefix>.depth` produced after
it (read from the snapshot's Kafka timestamp, less a margin for clock steps), skipping those with
final_update_id <= last_update_id; the first one applied must have first_update_id <= last_update_id + 1 <=
final_update_id, each next one first_update_id == previous final_update_id + 1. A diff that does not chain is a
break with no later snapshot to resync from: the symbol's chain is broken.

`rebuild_books` only reads Kafka (the streamer's Avro schemas decode the values); `k2 book` prints the result,
exit 1 when a chain is broken, 0 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader

from streamer.books import apply_levels, sorted_levels
from streamer.config import load_kafka_client_config
from streamer.kinds import DEPTH_SNAPSHOT
from streamer.serialize import load_schema, split_wire, topic_for
from streamer.sink import client_config

# Diffs are read from this long before a snapshot's Kafka timestamp: a wall-clock step on the streamer's host
# could stamp a diff produced after the snapshot a little earlier; those before it are skipped by their ids.
TIMESTAMP_MARGIN_MS = 5_000


@dataclass
class RebuiltBook:
    """One symbol's book from Kafka: the snapshot it starts from and how far the diffs took it."""

    symbol: str
    status: str  # "in_sync" | "broken" | "no_snapshot"
    snapshot_update_id: int | None = None
    last_update_id: int | None = None
    diffs_applied: int = 0
    break_at: str | None = None  # the diff that did not chain, in words
    bids: list[dict[str, str]] = field(default_factory=list)  # best first, exact strings
    asks: list[dict[str, str]] = field(default_factory=list)


def _read(consumer: Consumer, topic: str, starts: dict[int, int], schema: Any, timeout_s: float,
          ) -> list[tuple[int, dict[str, Any]]]:
    """(Kafka timestamp ms, record) of every message of `topic` from the given partition offsets to the ends."""
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in starts}
    remaining = {p: end for p, end in ends.items() if end > starts[p]}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in remaining])
    out: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {topic}: {len(remaining)} partition(s) not read to their end in {timeout_s} s")
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        value, offset, partition = message.value(), message.offset(), message.partition()
        if value is None or offset is None or partition is None:
            continue
        _, body = split_wire(value)
        record: dict[str, Any] = schemaless_reader(io.BytesIO(body), schema)  # type: ignore[assignment]
        out.append((message.timestamp()[1], record))
        if offset + 1 >= remaining.get(partition, 0):
            remaining.pop(partition, None)
    consumer.unassign()
    return out


def rebuild_books(kafka_conf: dict[str, Any], prefix: str, symbols: list[str] | None = None,
                  timeout_s: float = 60.0) -> dict[str, RebuiltBook]:
    """Every symbol's book (or those of `symbols`, as published: BTCUSDT) from the latest snapshot and the diffs
    after it. `kafka_conf`: librdkafka settings with bootstrap.servers."""
    consumer = Consumer({**kafka_conf, "group.id": f"k2-book-{uuid.uuid4().hex}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        snapshot_topic, depth_topic = topic_for(prefix, DEPTH_SNAPSHOT.name), topic_for(prefix, "depth")
        metadata = consumer.list_topics(timeout=timeout_s)
        if snapshot_topic not in metadata.topics or depth_topic not in metadata.topics:
            return {s: RebuiltBook(s, "no_snapshot") for s in symbols or []}
        wanted = set(symbols) if symbols else None
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        snapshot_partitions = metadata.topics[snapshot_topic].partitions
        for stamp, record in _read(consumer, snapshot_topic, dict.fromkeys(snapshot_partitions, 0),
                                   parse_schema(load_schema(DEPTH_SNAPSHOT.name)), timeout_s):
            if wanted is None or record["symbol"] in wanted:
                latest[record["symbol"]] = (stamp, record)  # in offset order: the last one read is the latest
        books = {s: RebuiltBook(s, "no_snapshot") for s in (wanted or set()) if s not in latest}
        if not latest:
            return books
        since = min(stamp for stamp, _ in latest.values()) - TIMESTAMP_MARGIN_MS
        starts = _offsets_at(consumer, depth_topic, list(metadata.topics[depth_topic].partitions), since, timeout_s)
        diffs = _read(consumer, depth_topic, starts, parse_schema(load_schema("depth")), timeout_s)
    finally:
        consumer.close()
    for symbol, (_, snapshot) in latest.items():
        books[symbol] = _apply(symbol, snapshot, [d for _, d in diffs if d["symbol"] == symbol])
    return books


def _apply(symbol: str, snapshot: dict[str, Any], diffs: list[dict[str, Any]]) -> RebuiltBook:
    bids = {Decimal(level["price"]): (level["price"], level["quantity"]) for level in snapshot["bids"]}
    asks = {Decimal(level["price"]): (level["price"], level["quantity"]) for level in snapshot["asks"]}
    book = RebuiltBook(symbol, "in_sync", snapshot["last_update_id"], snapshot["last_update_id"])
    last = snapshot["last_update_id"]
    for diff in diffs:
        first_id, final_id = diff["first_update_id"], diff["final_update_id"]
        if final_id <= last:
            continue
        chains = first_id <= last + 1 if book.diffs_applied == 0 else first_id == last + 1
        if not chains:
            book.status = "broken"
            book.break_at = f"diff {first_id}..{final_id} after {last}: ids {last + 1}..{first_id - 1} missing"
            break
        apply_levels(bids, diff["bids"])
        apply_levels(asks, diff["asks"])
        last = final_id
        book.diffs_applied += 1
    book.last_update_id = last
    book.bids, book.asks = sorted_levels(bids, bids=True), sorted_levels(asks, bids=False)
    return book


@dataclass
class ChainBreak:
    symbol: str
    at_ms: int  # Kafka timestamp of the diff that did not chain
    expected_first_id: int
    first_id: int
    resynced: bool  # a snapshot of the symbol followed it


@dataclass
class BookIntegrity:
    """Depth chains over a time window: every break, and whether a snapshot followed it."""

    symbols: int = 0
    diffs: int = 0
    snapshots: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)
    has_depth: bool = True  # False: no depth topic at all (nothing streams depth)

    @property
    def unresynced(self) -> list[ChainBreak]:
        return [b for b in self.breaks if not b.resynced]

    def summary(self) -> str:
        if not self.has_depth:
            return "no depth topic: the streamer streams no depth"
        text = (f"{self.symbols} symbol(s), {self.diffs} diffs, {self.snapshots} snapshots; "
                f"{len(self.breaks)} chain break(s), {len(self.unresynced)} without a snapshot after them")
        shown = ", ".join(f"{b.symbol} ids {b.expected_first_id}..{b.first_id - 1}" for b in self.unresynced[:5])
        return text + (f": {shown}" if shown else "")


def chain_integrity(kafka_conf: dict[str, Any], prefix: str, start_ms: int, end_ms: int,
                    timeout_s: float = 120.0) -> BookIntegrity:
    """Every depth diff produced in [start_ms, end_ms) (Kafka timestamps): where a symbol's chain broke (a diff
    whose first_update_id is not the previous final_update_id + 1), and whether a snapshot of that symbol was
    produced after the break (up to now: a resync may land just after the window)."""
    consumer = Consumer({**kafka_conf, "group.id": f"k2-book-{uuid.uuid4().hex}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        snapshot_topic, depth_topic = topic_for(prefix, DEPTH_SNAPSHOT.name), topic_for(prefix, "depth")
        metadata = consumer.list_topics(timeout=timeout_s)
        if depth_topic not in metadata.topics:
            return BookIntegrity(has_depth=False)
        starts = _offsets_at(consumer, depth_topic, list(metadata.topics[depth_topic].partitions), start_ms, timeout_s)
        diffs = [(stamp, record) for stamp, record in
                 _read(consumer, depth_topic, starts, parse_schema(load_schema("depth")), timeout_s)
                 if stamp < end_ms]
        snapshots: list[tuple[int, dict[str, Any]]] = []
        if snapshot_topic in metadata.topics:
            partitions = list(metadata.topics[snapshot_topic].partitions)
            snapshots = _read(consumer, snapshot_topic, _offsets_at(consumer, snapshot_topic, partitions, start_ms,
                                                                     timeout_s),
                              parse_schema(load_schema(DEPTH_SNAPSHOT.name)), timeout_s)
    finally:
        consumer.close()
    report = BookIntegrity(diffs=len(diffs), snapshots=sum(1 for stamp, _ in snapshots if stamp < end_ms))
    last: dict[str, int] = {}
    snapshot_times: dict[str, list[int]] = {}
    for stamp, snapshot in snapshots:
        snapshot_times.setdefault(snapshot["symbol"], []).append(stamp)
    for stamp, diff in diffs:
        symbol = diff["symbol"]
        previous = last.get(symbol)
        if previous is not None and diff["first_update_id"] != previous + 1 and diff["final_update_id"] > previous:
            resynced = any(t >= stamp for t in snapshot_times.get(symbol, []))
            report.breaks.append(ChainBreak(symbol, stamp, previous + 1, diff["first_update_id"], resynced))
        last[symbol] = max(previous or 0, diff["final_update_id"])
    report.symbols = len(last)
    return report


def _offsets_at(consumer: Consumer, topic: str, partitions: list[int], at_ms: int, timeout_s: float
                ) -> dict[int, int]:
    """Per partition, the first offset at or after `at_ms` (the end when none)."""
    found = consumer.offsets_for_times([TopicPartition(topic, p, at_ms) for p in partitions], timeout=timeout_s)
    return {tp.partition: tp.offset if tp.offset >= 0 else consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
            for tp in found}


# ---- k2 book ---------------------------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "book", help="rebuild order books from Kafka (latest snapshot + the diffs after it) and check their chains",
        description="Rebuild each symbol's order book from <prefix>.depth_snapshots and <prefix>.depth as a "
        "consumer does (docs/consumers.md) and say whether its diff chain is unbroken. Exit 0: every chain "
        "unbroken; 1: a chain broke without a later snapshot (or a symbol asked for has none). Kafka "
        "security settings come from the K2_KAFKA_* environment, as for the streamer.")
    parser.add_argument("--kafka", required=True, help="bootstrap servers, host:port[,host:port]")
    parser.add_argument("--topic-prefix", default="market.crypto.binance",
                        help="the streamer's K2_KAFKA_TOPIC_PREFIX (default: %(default)s)")
    parser.add_argument("--symbol", action="append", default=None,
                        help="a symbol as published (BTCUSDT); repeat for more (default: every symbol)")
    parser.add_argument("--levels", type=int, default=5, help="levels per side to print (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print every book in full as JSON")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topics (default: %(default)s)")
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    conf = client_config(args.kafka, load_kafka_client_config())
    try:
        books = rebuild_books(conf, args.topic_prefix, [s.upper() for s in args.symbol] if args.symbol else None,
                              args.timeout)
    except (TimeoutError, OSError) as exc:
        print(f"k2 book: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({s: asdict(b) for s, b in sorted(books.items())}, indent=2))
    else:
        for symbol, book in sorted(books.items()):
            detail = (f"snapshot {book.snapshot_update_id}, {book.diffs_applied} diffs to {book.last_update_id}"
                      if book.snapshot_update_id is not None else "no snapshot")
            print(f"{symbol}: {book.status} ({detail}){': ' + book.break_at if book.break_at else ''}")
            for bid, ask in zip(book.bids[:args.levels], book.asks[:args.levels], strict=False):
                print(f"  {bid['quantity']:>20} {bid['price']:>16} | {ask['price']:<16} {ask['quantity']}")
    broken = sorted(s for s, b in books.items() if b.status != "in_sync")
    if broken:
        print(f"k2 book: chain broken or no snapshot: {', '.join(broken)}", file=sys.stderr)
    return 1 if broken else 0
