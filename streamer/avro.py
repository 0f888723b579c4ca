"""Avro binary encoding of the streamer's four record schemas, written out per schema (pure: no I/O).

fastavro's generic writer walks the parsed schema for every record (3.8 µs per trade record measured); the
encoders here know their schema's field order and types and join precomputed pieces (about 2.5 µs; see
docs/performance.md). They produce exactly fastavro's bytes: the tests compare both on every record of the real
recordings and on generated records.

`body_encoder(schema)` returns the encoder of a schema only when the schema's fields (names and types, logical
types aside: they do not change the encoding) are exactly the ones that encoder writes; any other schema gets
None and the caller falls back to fastavro. A schema change not made here therefore costs speed, never
correctness, and a test fails until the encoder follows.

Encoding (Avro 1.11 specification, binary encoding): a long is zig-zag then a base-128 varint, low group first;
a string is its UTF-8 length as a long, then the bytes; a boolean one byte; a union `["null", T]` the branch
index as a long (0: null; 1: T, then the value); an array one block (count as a long, the items) then 0, an
empty array only the 0.

Invariant: records come from streamer/payload.py, which bounds every id and time to a non-negative Avro long and
checks every boolean; a long outside the signed 64-bit range raises ValueError rather than being written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BodyEncoder = Callable[[bytes, dict[str, Any]], bytes]  # (header, record) -> header + Avro body

_SMALL = [bytes((n << 1,)) for n in range(64)]  # 0..63: zig-zag fits one byte
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # an Avro long: signed 64 bits


def long_bytes(n: int) -> bytes:
    """One Avro long: zig-zag, then 7 bits per byte, low group first, high bit set on all but the last."""
    if 0 <= n < 64:
        return _SMALL[n]
    if not LONG_MIN <= n <= LONG_MAX:
        raise ValueError(f"{n} does not fit an Avro long")
    z = n << 1 if n >= 0 else ((-n) << 1) - 1
    if z < 1 << 35:  # ids, counts: unrolled for the common lengths
        if z < 1 << 7:
            return bytes((z,))
        if z < 1 << 14:
            return bytes((z & 127 | 128, z >> 7))
        if z < 1 << 21:
            return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14))
        if z < 1 << 28:
            return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14 & 127 | 128, z >> 21))
        return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14 & 127 | 128, z >> 21 & 127 | 128, z >> 28))
    if z < 1 << 42:  # epoch milliseconds until the year 2109
        return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14 & 127 | 128, z >> 21 & 127 | 128,
                      z >> 28 & 127 | 128, z >> 35))
    groups = []
    while z > 127:
        groups.append(z & 127 | 128)
        z >>= 7
    groups.append(z)
    return bytes(groups)


class _Encodings(dict[Any, bytes]):
    """value -> its Avro encoding, computed on a miss (`__missing__`, so a hit is one C-level lookup); emptied
    when full, so hostile input cannot grow it."""

    __slots__ = ("_encode", "max_size")

    def __init__(self, encode: Callable[[Any], bytes], max_size: int) -> None:
        super().__init__()
        self._encode = encode
        self.max_size = max_size

    def __missing__(self, value: Any) -> bytes:
        encoded = self._encode(value)
        if len(self) >= self.max_size:
            self.clear()
        self[value] = encoded
        return encoded


def _string(text: str) -> bytes:
    utf8 = text.encode()
    return long_bytes(len(utf8)) + utf8


# Strings repeat: the exchange, the symbol and the instance always, prices and quantities 72 % of the time in the
# real BTCUSDT recording; the event, trade and receive times of a message are mostly the same few milliseconds.
STRINGS = _Encodings(_string, 8192)
TIMES = _Encodings(long_bytes, 1024)
_BOOLEAN = {False: b"\x00", True: b"\x01"}
_OPTIONAL_BOOLEAN = {None: b"\x00", False: b"\x02\x00", True: b"\x02\x01"}  # union ["null", "boolean"]


def _optional_time(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + TIMES[value]


def _levels(levels: list[dict[str, str]]) -> bytes:
    if not levels:
        return b"\x00"
    parts = [long_bytes(len(levels))]
    for level in levels:
        parts.append(STRINGS[level["price"]])
        parts.append(STRINGS[level["quantity"]])
    parts.append(b"\x00")
    return b"".join(parts)


def trade(header: bytes, r: dict[str, Any]) -> bytes:
    return b"".join((
        header, STRINGS[r["exchange"]], STRINGS[r["symbol"]], long_bytes(r["trade_id"]), STRINGS[r["price"]],
        STRINGS[r["quantity"]], TIMES[r["event_time"]], TIMES[r["trade_time"]], _BOOLEAN[r["is_buyer_maker"]],
        _OPTIONAL_BOOLEAN[r["is_best_match"]], TIMES[r["ingestion_time"]], STRINGS[r["instance"]],
    ))


def agg_trade(header: bytes, r: dict[str, Any]) -> bytes:
    return b"".join((
        header, STRINGS[r["exchange"]], STRINGS[r["symbol"]], long_bytes(r["agg_trade_id"]), STRINGS[r["price"]],
        STRINGS[r["quantity"]], long_bytes(r["first_trade_id"]), long_bytes(r["last_trade_id"]),
        TIMES[r["event_time"]], TIMES[r["trade_time"]], _BOOLEAN[r["is_buyer_maker"]],
        _OPTIONAL_BOOLEAN[r["is_best_match"]], TIMES[r["ingestion_time"]], STRINGS[r["instance"]],
    ))


def book_ticker(header: bytes, r: dict[str, Any]) -> bytes:
    return b"".join((
        header, STRINGS[r["exchange"]], STRINGS[r["symbol"]], long_bytes(r["update_id"]), STRINGS[r["bid_price"]],
        STRINGS[r["bid_quantity"]], STRINGS[r["ask_price"]], STRINGS[r["ask_quantity"]],
        _optional_time(r["event_time"]), TIMES[r["ingestion_time"]], STRINGS[r["instance"]],
    ))


def depth(header: bytes, r: dict[str, Any]) -> bytes:
    return b"".join((
        header, STRINGS[r["exchange"]], STRINGS[r["symbol"]], long_bytes(r["first_update_id"]),
        long_bytes(r["final_update_id"]), TIMES[r["event_time"]], _levels(r["bids"]), _levels(r["asks"]),
        TIMES[r["ingestion_time"]], STRINGS[r["instance"]],
    ))


_LEVEL = {"type": "record", "name": "PriceLevel", "fields": [{"name": "price", "type": "string"},
                                                               {"name": "quantity", "type": "string"}]}
# Per record name: the fields its encoder writes, in order, as (name, type without logical types), and the
# encoder. `body_encoder` compares these with the schema it is given.
ENCODERS: dict[str, tuple[tuple[tuple[str, Any], ...], BodyEncoder]] = {
    "Trade": ((("exchange", "string"), ("symbol", "string"), ("trade_id", "long"), ("price", "string"),
               ("quantity", "string"), ("event_time", "long"), ("trade_time", "long"),
               ("is_buyer_maker", "boolean"), ("is_best_match", ["null", "boolean"]), ("ingestion_time", "long"),
               ("instance", "string")), trade),
    "AggTrade": ((("exchange", "string"), ("symbol", "string"), ("agg_trade_id", "long"), ("price", "string"),
                  ("quantity", "string"), ("first_trade_id", "long"), ("last_trade_id", "long"),
                  ("event_time", "long"), ("trade_time", "long"), ("is_buyer_maker", "boolean"),
                  ("is_best_match", ["null", "boolean"]), ("ingestion_time", "long"), ("instance", "string")),
                 agg_trade),
    "BookTicker": ((("exchange", "string"), ("symbol", "string"), ("update_id", "long"), ("bid_price", "string"),
                    ("bid_quantity", "string"), ("ask_price", "string"), ("ask_quantity", "string"),
                    ("event_time", ["null", "long"]), ("ingestion_time", "long"), ("instance", "string")),
                   book_ticker),
    "DepthUpdate": ((("exchange", "string"), ("symbol", "string"), ("first_update_id", "long"),
                     ("final_update_id", "long"), ("event_time", "long"),
                     ("bids", {"type": "array", "items": _LEVEL}), ("asks", {"type": "array", "items": "PriceLevel"}),
                     ("ingestion_time", "long"), ("instance", "string")), depth),
}


def _shape(avro_type: Any) -> Any:
    """A field type reduced to what decides its encoding: no docs, defaults or namespaces."""
    if isinstance(avro_type, list):
        return [_shape(t) for t in avro_type]
    if not isinstance(avro_type, dict):
        return avro_type
    if avro_type.get("type") == "record":
        return {"type": "record", "name": avro_type["name"],
                "fields": [{"name": f["name"], "type": _shape(f["type"])} for f in avro_type["fields"]]}
    if avro_type.get("type") == "array":
        return {"type": "array", "items": _shape(avro_type["items"])}
    return avro_type


def body_encoder(schema: dict[str, Any]) -> BodyEncoder | None:
    """The encoder written for this schema (without logical types), or None when there is none or the schema's
    fields differ from the ones it writes."""
    known = ENCODERS.get(schema.get("name", ""))
    if known is None:
        return None
    fields, encoder = known
    if tuple((f["name"], _shape(f["type"])) for f in schema.get("fields", [])) != fields:
        return None
    return encoder
