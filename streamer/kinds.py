"""The one table of stream kinds: every fact about trade, aggTrade, bookTicker and depth lives here.

Per kind: its name (as configured in K2_BINANCE_STREAMS and labelled `stream` in metrics), the suffix of its
Binance stream name, the payload's event type, the payload parser, the Avro schema file, the Kafka topic suffix,
the record field carrying the id that sequences the stream (also the Kafka header consumers dedupe on), and
whether those ids are contiguous (trade `t`, aggTrade `a`, depth `U..u`: a jump is lost data) or only increase
(bookTicker `u` shares the order book's update-id space: never a gap), and where missed ids can be fetched again
(`history`: Binance's REST history for trades and aggTrades; a depth gap is healed by a new snapshot instead).

A *stream key* is the unit of subscription, routing and sequence tracking: `<symbol>@<suffix>`, e.g.
"btcusdt@trade" or "btcusdt@depth@100ms", exactly Binance's stream name. `stream_key` is the only place that
builds one; /positions, the handover, the logs and the metrics all use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamer import payload
from streamer.rest import Endpoint

PayloadParser = Callable[[dict[str, Any], int, str], payload.Parsed]
# One item of a REST history answer, the symbol asked for, the time it arrived, the instance -> a record.
HistoryParser = Callable[[dict[str, Any], str, int, str], payload.Parsed]


@dataclass(frozen=True)
class History:
    """Where a stream's missed ids are fetched again: a REST endpoint paged by `fromId`, and its item parser."""

    endpoint: Endpoint
    parse: HistoryParser


@dataclass(frozen=True, eq=False)  # compared by identity: one object per kind
class StreamKind:
    name: str  # "depth": config, metrics label, Avro/topic choice
    suffix: str  # "depth@100ms": the Binance stream name is "<symbol>@<suffix>"
    event_type: str  # the payload's "e" ("depthUpdate"); spot bookTicker payloads carry none
    parse: PayloadParser  # payload -> (first id, last id, Avro record, unknown field count)
    schema_file: str  # in streamer/schemas/
    topic_suffix: str  # topic "<K2_KAFKA_TOPIC_PREFIX>.<topic_suffix>"
    id_field: str  # the record field of the (last) id, also the name of the Kafka header that carries it
    contiguous: bool  # ids follow each other without holes (a jump is a gap) or only increase
    history: History | None = None  # gaps are repaired from here (streamer/repair.py)

    def key(self, symbol: str) -> str:
        return f"{symbol}@{self.suffix}"


KINDS: dict[str, StreamKind] = {
    kind.name: kind
    for kind in (
        StreamKind("trade", "trade", "trade", payload.trade, "trade.avsc", "trades", "trade_id", True,
                   History(Endpoint.HISTORICAL_TRADES, payload.rest_trade)),
        StreamKind("aggTrade", "aggTrade", "aggTrade", payload.agg_trade, "agg_trade.avsc", "aggtrades",
                   "agg_trade_id", True, History(Endpoint.AGG_TRADES, payload.rest_agg_trade)),
        StreamKind("bookTicker", "bookTicker", "bookTicker", payload.book_ticker, "book_ticker.avsc",
                   "bookticker", "update_id", False),
        StreamKind("depth", "depth@100ms", "depthUpdate", payload.depth, "depth.avsc", "depth",
                   "final_update_id", True),
    )
}
STREAM_KINDS = tuple(KINDS)  # the names K2_BINANCE_STREAMS accepts


@dataclass(frozen=True, eq=False)
class RecordKind:
    """A record the streamer writes that is not a stream's message: its schema, topic and id header."""

    name: str
    schema_file: str
    topic_suffix: str
    id_field: str


# Order-book snapshots of depth streams (streamer/books.py), beside the diffs.
DEPTH_SNAPSHOT = RecordKind("depthSnapshot", "depth_snapshot.avsc", "depth_snapshots", "last_update_id")
# Every record the streamer writes, by name: each stream kind's message, and the depth snapshot.
RECORDS: dict[str, StreamKind | RecordKind] = {**KINDS, DEPTH_SNAPSHOT.name: DEPTH_SNAPSHOT}
BY_EVENT_TYPE = {kind.event_type: kind for kind in KINDS.values()}


def stream_key(symbol: str, kind: str) -> str:
    """The stream key of a symbol's stream of this kind: "btcusdt@depth@100ms" for ("btcusdt", "depth")."""
    return KINDS[kind].key(symbol)


def stream_keys(symbols: Iterable[str], kinds: Iterable[str]) -> list[str]:
    """Stream keys (Binance stream names) to subscribe, symbol-major: ["btcusdt@trade", "ethusdt@trade"]."""
    kinds = tuple(kinds)
    return [stream_key(symbol, kind) for symbol in symbols for kind in kinds]
