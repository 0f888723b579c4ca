"""Binance WebSocket frames → events (pure: no I/O, no clock, never raises).

One frame of the combined-streams endpoint is `{"stream": "<symbol>@<stream>", "data": {...}}`; a raw stream
frame is the `data` object alone. Payloads as Binance documents them (Spot WebSocket Streams):

- trade       `{"e":"trade","E":ms,"s":"BTCUSDT","t":id,"p":"dec","q":"dec","T":ms,"m":bool,"M":bool}`
              (before 2024-06-18 also `b`/`a`, buyer/seller order ids: tolerated, counted as unknown fields)
- aggTrade    `{"e":"aggTrade","E":ms,"s":..,"a":id,"p":..,"q":..,"f":first trade id,"l":last trade id,"T":ms,
              "m":bool,"M":bool}`
- bookTicker  `{"u":update id,"s":..,"b":bid,"B":bid qty,"a":ask,"A":ask qty}` (no event time on spot)
- depth       `{"e":"depthUpdate","E":ms,"s":..,"U":first update id,"u":final update id,
              "b":[[p,q]..],"a":[[p,q]..]}`
- `{"e":"serverShutdown","E":ms}`: the server is about to close the connection (rotate now).

Prices and quantities stay the exact decimal strings Binance sends (validated, never turned into floats).
A frame that cannot be used becomes a `Notice` naming why (`error_type`); fields we do not know are
tolerated and counted in `Event.unknown_fields`; unknown event types become a `Notice("unknown_event")`.
"""

from __future__ import annotations

import json
import re
from typing import Any

EXCHANGE = "binance"

# Canonical stream kinds (config names) and the suffix of their stream names on Binance.
STREAM_SUFFIX = {"trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker", "depth": "depth@100ms"}

# Known payload keys per kind: anything else is tolerated and counted as an unknown field.
_TRADE_KEYS = frozenset(["e", "E", "s", "t", "p", "q", "T", "m", "M"])
_AGG_KEYS = frozenset(["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"])
_BOOK_KEYS = frozenset(["e", "E", "T", "u", "s", "b", "B", "a", "A"])
_DEPTH_KEYS = frozenset(["e", "E", "s", "U", "u", "b", "a"])

_LONG_MAX = 2**63 - 1  # Avro long (signed 64 bits)

# An exact non-negative decimal as Binance prints it ("61837.63000000"). 30+30 digits covers any magnitude.
_DECIMAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?\Z")
# Decimal strings already validated. Prices and quantities repeat (72 % of the 9.3 decimals per message in
# the real BTCUSDT recording were seen among the previous 8192 distinct ones): a set lookup costs ~0.03 µs,
# the regex ~0.2 µs. Bounded: emptied when full.
_VALID_DECIMALS: set[str] = set()
_VALID_DECIMALS_MAX = 8192


def _new_decimal(value: str) -> bool:
    """Validate a string not in _VALID_DECIMALS, and remember it when valid."""
    if _DECIMAL.match(value) is None:
        return False
    if len(_VALID_DECIMALS) >= _VALID_DECIMALS_MAX:
        _VALID_DECIMALS.clear()
    _VALID_DECIMALS.add(value)
    return True

# Error types counted in binance_message_errors_total{error_type}.
MALFORMED_JSON = "malformed_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
INVALID_VALUE = "invalid_value"
UNKNOWN_EVENT = "unknown_event"
OVERSIZED = "oversized"
UNEXPECTED_STREAM = "unexpected_stream"
# Not errors: frames that carry no market data.
SERVER_SHUTDOWN = "server_shutdown"
SUBSCRIPTION_RESPONSE = "subscription_response"
CONTROL_NOTICES = frozenset({SERVER_SHUTDOWN, SUBSCRIPTION_RESPONSE})
MESSAGE_ERROR_TYPES = (MALFORMED_JSON, NOT_OBJECT, MISSING_FIELD, INVALID_VALUE, UNKNOWN_EVENT, OVERSIZED,
                       UNEXPECTED_STREAM)


_scan_once = json.JSONDecoder().scan_once


def _loads(text: str) -> Any:
    """json.loads for one frame, calling the C scanner directly: json.loads adds two Python calls and two
    whitespace regex matches around it (about 1 µs of the 2 µs per frame). Anything but one JSON value
    filling the whole text (leading or trailing whitespace, extra data, invalid) goes through json.loads,
    so results and errors stay exactly json.loads'."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the proper JSONDecodeError (or handles leading whitespace)
    if end != len(text):
        return json.loads(text)
    return value


class Event:
    """One market-data message: routing key, sequence ids and the Avro record to produce."""

    __slots__ = ("first_id", "key", "last_id", "record", "stream", "symbol", "unknown_fields")

    def __init__(
        self, key: str, symbol: str, stream: str, first_id: int, last_id: int, record: dict[str, Any],
        unknown_fields: int,
    ) -> None:
        self.key = key  # "<symbol>@<stream suffix>", e.g. "btcusdt@trade": the unit of sequence tracking
        self.symbol = symbol  # lowercase, as configured
        self.stream = stream  # canonical kind: trade | aggTrade | bookTicker | depth
        self.first_id = first_id  # trade t, aggTrade a, depth U, bookTicker u
        self.last_id = last_id  # equal to first_id except depth (u)
        self.record = record
        self.unknown_fields = unknown_fields

    def __repr__(self) -> str:
        return f"Event({self.key} {self.first_id}..{self.last_id})"


class Notice:
    """A frame that is not a market-data event: an error (skipped, counted) or a control message."""

    __slots__ = ("detail", "kind")

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail

    @property
    def is_error(self) -> bool:
        return self.kind not in CONTROL_NOTICES

    def __repr__(self) -> str:
        return f"Notice({self.kind}: {self.detail})"


class _Invalid(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail


def _int(data: dict[str, Any], field: str) -> int:
    try:
        value = data[field]
    except KeyError:
        raise _Invalid(MISSING_FIELD, field) from None
    # bool is an int subclass in Python; JSON true/false is never a valid id or time. Ids and times are Avro
    # longs: a larger one could not be produced, and once recorded as a stream's last id it would make every
    # real id after it look like a duplicate.
    if type(value) is not int or not 0 <= value <= _LONG_MAX:
        raise _Invalid(INVALID_VALUE, field)
    return value


def _dec(data: dict[str, Any], field: str) -> str:
    try:
        value = data[field]
    except KeyError:
        raise _Invalid(MISSING_FIELD, field) from None
    if type(value) is not str or (value not in _VALID_DECIMALS and not _new_decimal(value)):
        raise _Invalid(INVALID_VALUE, field)
    return value


def _bool(data: dict[str, Any], field: str) -> bool:
    try:
        value = data[field]
    except KeyError:
        raise _Invalid(MISSING_FIELD, field) from None
    if type(value) is not bool:
        raise _Invalid(INVALID_VALUE, field)
    return value


def _opt_bool(data: dict[str, Any], field: str) -> bool | None:
    value = data.get(field)
    if value is not None and type(value) is not bool:
        raise _Invalid(INVALID_VALUE, field)
    return value


def _opt_int(data: dict[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is not None and (type(value) is not int or value < 0):
        raise _Invalid(INVALID_VALUE, field)
    return value


def _levels(data: dict[str, Any], field: str) -> list[dict[str, str]]:
    try:
        value = data[field]
    except KeyError:
        raise _Invalid(MISSING_FIELD, field) from None
    if type(value) is not list:
        raise _Invalid(INVALID_VALUE, field)
    levels = []
    for level in value:
        if type(level) is not list or len(level) < 2:
            raise _Invalid(INVALID_VALUE, field)
        price, quantity = level[0], level[1]
        if type(price) is not str or type(quantity) is not str:
            raise _Invalid(INVALID_VALUE, field)
        if (price not in _VALID_DECIMALS and not _new_decimal(price)) or (
            quantity not in _VALID_DECIMALS and not _new_decimal(quantity)
        ):
            raise _Invalid(INVALID_VALUE, field)
        levels.append({"price": price, "quantity": quantity})
    return levels


class FrameParser:
    """Parses frames for one streamer instance. `parse` is pure and never raises."""

    def __init__(self, instance: str, max_frame_bytes: int = 1_048_576) -> None:
        self.instance = instance
        self.max_frame_bytes = max_frame_bytes
        # Validated symbols (-> lowercase) and stream names (-> their symbol), bounded so hostile input
        # cannot grow them without limit: the common case is two dict hits per frame.
        self._lower: dict[str, str] = {}
        self._streams: dict[str, tuple[str, str]] = {}

    def parse(self, raw: str | bytes, received_ms: int) -> Event | Notice:
        try:
            return self._parse(raw, received_ms)
        except _Invalid as exc:
            return Notice(exc.kind, exc.detail)
        except Exception as exc:  # the contract: nothing a frame contains may crash the process
            return Notice(INVALID_VALUE, f"{type(exc).__name__}")

    def _symbol(self, data: dict[str, Any]) -> str:
        try:
            value = data["s"]
        except KeyError:
            raise _Invalid(MISSING_FIELD, "s") from None
        lower = self._lower.get(value) if type(value) is str else None
        if lower is None:
            if type(value) is not str or not (1 <= len(value) <= 30) or not value.isalnum():
                raise _Invalid(INVALID_VALUE, "s")
            lower = value.lower()
            if len(self._lower) < 4096:
                self._lower[value] = lower
        return lower

    def _parse(self, raw: str | bytes, received_ms: int) -> Event | Notice:
        if len(raw) > self.max_frame_bytes:
            return Notice(OVERSIZED, f"{len(raw)} bytes")
        try:
            if type(raw) is not str:
                # Binary frames: decoding UTF-8 here is cheaper than json's own encoding detection.
                raw = raw.decode()
            obj = _loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return Notice(MALFORMED_JSON, type(exc).__name__)
        if type(obj) is not dict:
            return Notice(NOT_OBJECT, type(obj).__name__)
        stream_name = obj.get("stream")
        if stream_name is not None:
            data = obj.get("data")
            if type(stream_name) is not str:
                return Notice(INVALID_VALUE, "stream")
        else:
            if "result" in obj and "id" in obj:
                return Notice(SUBSCRIPTION_RESPONSE, str(obj.get("id")))
            data = obj
        if type(data) is not dict:
            return Notice(NOT_OBJECT, "data")
        event_type = data.get("e")
        if event_type == "trade":
            return self._trade(data, stream_name, received_ms)
        if event_type == "depthUpdate":
            return self._depth(data, stream_name, received_ms)
        if event_type == "aggTrade":
            return self._agg_trade(data, stream_name, received_ms)
        if event_type == "bookTicker" or (
            event_type is None
            and (
                (stream_name or "").endswith("@bookTicker")
                or (stream_name is None and "u" in data and "b" in data and "A" in data)
            )
        ):
            return self._book_ticker(data, stream_name, received_ms)
        if event_type == "serverShutdown":
            return Notice(SERVER_SHUTDOWN, str(data.get("E", "")))
        return Notice(UNKNOWN_EVENT, str(event_type)[:64])

    def _key(self, stream_name: str | None, symbol: str, suffix: str) -> str:
        if stream_name is None:
            return f"{symbol}@{suffix}"
        if self._streams.get(stream_name) == (symbol, suffix):
            return stream_name
        # The stream name must describe the payload (its symbol and its kind: "btcusdt@depth@100ms" for a
        # depthUpdate, never "btcusdt@trade"); a mismatch would mix two sequences in one tracker.
        kind = suffix.split("@", 1)[0]
        rest = stream_name[len(symbol) + 1 :]
        if (
            not stream_name.startswith(symbol)
            or stream_name[len(symbol) : len(symbol) + 1] != "@"
            or not (rest == kind or rest.startswith(kind + "@"))
        ):
            raise _Invalid(UNEXPECTED_STREAM, stream_name[:64])
        if len(self._streams) < 4096:
            self._streams[stream_name] = (symbol, suffix)
        return stream_name

    @staticmethod
    def _unknown(data: dict[str, Any], known: frozenset[str]) -> int:
        return len(data.keys() - known)

    def _trade(self, data: dict[str, Any], stream_name: str | None, received_ms: int) -> Event:
        symbol = self._symbol(data)
        trade_id = _int(data, "t")
        record = {
            "exchange": EXCHANGE,
            "symbol": data["s"],
            "trade_id": trade_id,
            "price": _dec(data, "p"),
            "quantity": _dec(data, "q"),
            "event_time": _int(data, "E"),
            "trade_time": _int(data, "T"),
            "is_buyer_maker": _bool(data, "m"),
            "is_best_match": _opt_bool(data, "M"),
            "ingestion_time": received_ms,
            "instance": self.instance,
        }
        # 9 keys, all of which we just read: the common case needs no set arithmetic.
        unknown = 0 if len(data) == 9 and "M" in data else self._unknown(data, _TRADE_KEYS)
        key = self._key(stream_name, symbol, "trade")
        return Event(key, symbol, "trade", trade_id, trade_id, record, unknown)

    def _agg_trade(self, data: dict[str, Any], stream_name: str | None, received_ms: int) -> Event:
        symbol = self._symbol(data)
        agg_id = _int(data, "a")
        first_trade, last_trade = _int(data, "f"), _int(data, "l")
        if last_trade < first_trade:
            raise _Invalid(INVALID_VALUE, "l")
        record = {
            "exchange": EXCHANGE,
            "symbol": data["s"],
            "agg_trade_id": agg_id,
            "price": _dec(data, "p"),
            "quantity": _dec(data, "q"),
            "first_trade_id": first_trade,
            "last_trade_id": last_trade,
            "event_time": _int(data, "E"),
            "trade_time": _int(data, "T"),
            "is_buyer_maker": _bool(data, "m"),
            "is_best_match": _opt_bool(data, "M"),
            "ingestion_time": received_ms,
            "instance": self.instance,
        }
        unknown = 0 if len(data) == 11 and "M" in data else self._unknown(data, _AGG_KEYS)
        key = self._key(stream_name, symbol, "aggTrade")
        return Event(key, symbol, "aggTrade", agg_id, agg_id, record, unknown)

    def _book_ticker(self, data: dict[str, Any], stream_name: str | None, received_ms: int) -> Event:
        symbol = self._symbol(data)
        update_id = _int(data, "u")
        record = {
            "exchange": EXCHANGE,
            "symbol": data["s"],
            "update_id": update_id,
            "bid_price": _dec(data, "b"),
            "bid_quantity": _dec(data, "B"),
            "ask_price": _dec(data, "a"),
            "ask_quantity": _dec(data, "A"),
            "event_time": _opt_int(data, "E"),
            "ingestion_time": received_ms,
            "instance": self.instance,
        }
        unknown = 0 if len(data) == 6 else self._unknown(data, _BOOK_KEYS)
        key = self._key(stream_name, symbol, "bookTicker")
        return Event(key, symbol, "bookTicker", update_id, update_id, record, unknown)

    def _depth(self, data: dict[str, Any], stream_name: str | None, received_ms: int) -> Event:
        symbol = self._symbol(data)
        first_id, last_id = _int(data, "U"), _int(data, "u")
        if last_id < first_id:
            raise _Invalid(INVALID_VALUE, "u")
        record = {
            "exchange": EXCHANGE,
            "symbol": data["s"],
            "first_update_id": first_id,
            "final_update_id": last_id,
            "event_time": _int(data, "E"),
            "bids": _levels(data, "b"),
            "asks": _levels(data, "a"),
            "ingestion_time": received_ms,
            "instance": self.instance,
        }
        unknown = 0 if len(data) == 7 else self._unknown(data, _DEPTH_KEYS)
        key = self._key(stream_name, symbol, "depth@100ms")
        return Event(key, symbol, "depth", first_id, last_id, record, unknown)


def stream_names(symbols: tuple[str, ...], streams: tuple[str, ...]) -> list[str]:
    """Binance stream names to subscribe, e.g. ["btcusdt@trade", "btcusdt@depth@100ms"]."""
    return [f"{symbol}@{STREAM_SUFFIX[kind]}" for symbol in symbols for kind in streams]
