"""Binance payloads → Avro records, one function per stream kind (pure: no I/O, no clock).

Each function takes the `data` object of one frame (its symbol already validated by the parser) and returns
`(first id, last id, Avro record, unknown field count)`, or raises `InvalidPayload` naming the error type and
the field. Prices and quantities stay the exact decimal strings Binance sends (validated, never turned into
floats); ids and times must fit an Avro long. The parser (streamer/parse.py) turns `InvalidPayload` into a
`Notice`, so nothing a frame contains can crash the process. Which function parses which kind is written in the
stream-kind table (streamer/kinds.py).
"""

from __future__ import annotations

import re
from typing import Any

from streamer.avro import LONG_MAX

EXCHANGE = "binance"

# Error types a payload can have (binance_message_errors_total{error_type}); the parser adds the others.
MISSING_FIELD = "missing_field"
INVALID_VALUE = "invalid_value"

# Known payload keys per kind: anything else is tolerated and counted as an unknown field.
_TRADE_KEYS = frozenset(["e", "E", "s", "t", "p", "q", "T", "m", "M"])
_AGG_KEYS = frozenset(["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"])
_BOOK_KEYS = frozenset(["e", "E", "T", "u", "s", "b", "B", "a", "A"])
_DEPTH_KEYS = frozenset(["e", "E", "s", "U", "u", "b", "a"])


# An exact non-negative decimal as Binance prints it ("61837.63000000"). 30+30 digits covers any magnitude.
_DECIMAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?\Z")
# Decimal strings already validated. Prices and quantities repeat (72 % of the 9.3 decimals per message in
# the real BTCUSDT recording were seen among the previous 8192 distinct ones): a set lookup costs ~0.03 µs,
# the regex ~0.2 µs. Bounded: emptied when full.
_VALID_DECIMALS: set[str] = set()
_VALID_DECIMALS_MAX = 8192

Parsed = tuple[int, int, dict[str, Any], int]


class InvalidPayload(Exception):
    """A payload field is missing or unusable: `kind` is the error type, `detail` the field."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


def _new_decimal(value: str) -> bool:
    """Validate a string not in _VALID_DECIMALS, and remember it when valid."""
    if _DECIMAL.match(value) is None:
        return False
    if len(_VALID_DECIMALS) >= _VALID_DECIMALS_MAX:
        _VALID_DECIMALS.clear()
    _VALID_DECIMALS.add(value)
    return True


def _int(data: dict[str, Any], field: str) -> int:
    try:
        value = data[field]
    except KeyError:
        raise InvalidPayload(MISSING_FIELD, field) from None
    # bool is an int subclass in Python; JSON true/false is never a valid id or time. Ids and times are Avro
    # longs: a larger one could not be produced, and once recorded as a stream's last id it would make every
    # real id after it look like a duplicate.
    if type(value) is not int or not 0 <= value <= LONG_MAX:
        raise InvalidPayload(INVALID_VALUE, field)
    return value


def _dec(data: dict[str, Any], field: str) -> str:
    try:
        value = data[field]
    except KeyError:
        raise InvalidPayload(MISSING_FIELD, field) from None
    if type(value) is not str or (value not in _VALID_DECIMALS and not _new_decimal(value)):
        raise InvalidPayload(INVALID_VALUE, field)
    return value


def _bool(data: dict[str, Any], field: str) -> bool:
    try:
        value = data[field]
    except KeyError:
        raise InvalidPayload(MISSING_FIELD, field) from None
    if type(value) is not bool:
        raise InvalidPayload(INVALID_VALUE, field)
    return value


def _opt_bool(data: dict[str, Any], field: str) -> bool | None:
    value = data.get(field)
    if value is not None and type(value) is not bool:
        raise InvalidPayload(INVALID_VALUE, field)
    return value


def _opt_int(data: dict[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is not None and (type(value) is not int or not 0 <= value <= LONG_MAX):
        raise InvalidPayload(INVALID_VALUE, field)
    return value


def _levels(data: dict[str, Any], field: str) -> list[dict[str, str]]:
    try:
        value = data[field]
    except KeyError:
        raise InvalidPayload(MISSING_FIELD, field) from None
    if type(value) is not list:
        raise InvalidPayload(INVALID_VALUE, field)
    levels = []
    for level in value:
        if type(level) is not list or len(level) < 2:
            raise InvalidPayload(INVALID_VALUE, field)
        price, quantity = level[0], level[1]
        if type(price) is not str or type(quantity) is not str:
            raise InvalidPayload(INVALID_VALUE, field)
        if (price not in _VALID_DECIMALS and not _new_decimal(price)) or (
            quantity not in _VALID_DECIMALS and not _new_decimal(quantity)
        ):
            raise InvalidPayload(INVALID_VALUE, field)
        levels.append({"price": price, "quantity": quantity})
    return levels


def _unknown(data: dict[str, Any], known: frozenset[str]) -> int:
    return len(data.keys() - known)


def trade(data: dict[str, Any], received_ms: int, instance: str) -> Parsed:
    """`{"e":"trade","E":ms,"s":..,"t":id,"p":dec,"q":dec,"T":ms,"m":bool,"M":bool}` (before 2024-06-18 also
    `b`/`a`, buyer/seller order ids: tolerated, counted as unknown fields). Ids: `t`..`t`."""
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
        "instance": instance,
    }
    # 9 keys, all of which we just read: the common case needs no set arithmetic.
    unknown = 0 if len(data) == 9 and "M" in data else _unknown(data, _TRADE_KEYS)
    return trade_id, trade_id, record, unknown


def agg_trade(data: dict[str, Any], received_ms: int, instance: str) -> Parsed:
    """`{"e":"aggTrade","E":ms,"s":..,"a":id,"p":..,"q":..,"f":first trade id,"l":last trade id,"T":ms,
    "m":bool,"M":bool}`. Ids: `a`..`a`."""
    agg_id = _int(data, "a")
    first_trade, last_trade = _int(data, "f"), _int(data, "l")
    if last_trade < first_trade:
        raise InvalidPayload(INVALID_VALUE, "l")
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
        "instance": instance,
    }
    unknown = 0 if len(data) == 11 and "M" in data else _unknown(data, _AGG_KEYS)
    return agg_id, agg_id, record, unknown


def book_ticker(data: dict[str, Any], received_ms: int, instance: str) -> Parsed:
    """`{"u":update id,"s":..,"b":bid,"B":bid qty,"a":ask,"A":ask qty}` (no event time on spot). Ids: `u`..`u`."""
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
        "instance": instance,
    }
    unknown = 0 if len(data) == 6 else _unknown(data, _BOOK_KEYS)
    return update_id, update_id, record, unknown


def depth(data: dict[str, Any], received_ms: int, instance: str) -> Parsed:
    """`{"e":"depthUpdate","E":ms,"s":..,"U":first update id,"u":final update id,"b":[[p,q]..],"a":[[p,q]..]}`.
    Ids: `U`..`u` (each diff starts at the previous `u` + 1)."""
    first_id, last_id = _int(data, "U"), _int(data, "u")
    if last_id < first_id:
        raise InvalidPayload(INVALID_VALUE, "u")
    record = {
        "exchange": EXCHANGE,
        "symbol": data["s"],
        "first_update_id": first_id,
        "final_update_id": last_id,
        "event_time": _int(data, "E"),
        "bids": _levels(data, "b"),
        "asks": _levels(data, "a"),
        "ingestion_time": received_ms,
        "instance": instance,
    }
    unknown = 0 if len(data) == 7 else _unknown(data, _DEPTH_KEYS)
    return first_id, last_id, record, unknown


# ---- REST history (GET /api/v3/historicalTrades, /api/v3/aggTrades): the records a gap repair produces --------
# An answer item carries no symbol and no event time: the symbol is the one asked for, and the event time is the
# trade time (the exchange's event time of the missed WebSocket message is not served by REST).
_REST_TRADE_KEYS = frozenset(["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"])
_REST_AGG_KEYS = frozenset(["a", "p", "q", "f", "l", "T", "m", "M"])


def rest_trade(item: dict[str, Any], symbol: str, received_ms: int, instance: str) -> Parsed:
    """`{"id":..,"price":dec,"qty":dec,"quoteQty":dec,"time":ms,"isBuyerMaker":bool,"isBestMatch":bool}` ->
    the Trade record the WebSocket message with that id would have given (event_time = trade time)."""
    trade_id = _int(item, "id")
    trade_time = _int(item, "time")
    record = {
        "exchange": EXCHANGE,
        "symbol": symbol,
        "trade_id": trade_id,
        "price": _dec(item, "price"),
        "quantity": _dec(item, "qty"),
        "event_time": trade_time,
        "trade_time": trade_time,
        "is_buyer_maker": _bool(item, "isBuyerMaker"),
        "is_best_match": _opt_bool(item, "isBestMatch"),
        "ingestion_time": received_ms,
        "instance": instance,
    }
    return trade_id, trade_id, record, _unknown(item, _REST_TRADE_KEYS)


def rest_agg_trade(item: dict[str, Any], symbol: str, received_ms: int, instance: str) -> Parsed:
    """`{"a":..,"p":dec,"q":dec,"f":..,"l":..,"T":ms,"m":bool,"M":bool}` -> the AggTrade record
    (event_time = trade time)."""
    agg_id = _int(item, "a")
    first_trade, last_trade = _int(item, "f"), _int(item, "l")
    if last_trade < first_trade:
        raise InvalidPayload(INVALID_VALUE, "l")
    trade_time = _int(item, "T")
    record = {
        "exchange": EXCHANGE,
        "symbol": symbol,
        "agg_trade_id": agg_id,
        "price": _dec(item, "p"),
        "quantity": _dec(item, "q"),
        "first_trade_id": first_trade,
        "last_trade_id": last_trade,
        "event_time": trade_time,
        "trade_time": trade_time,
        "is_buyer_maker": _bool(item, "m"),
        "is_best_match": _opt_bool(item, "M"),
        "ingestion_time": received_ms,
        "instance": instance,
    }
    return agg_id, agg_id, record, _unknown(item, _REST_AGG_KEYS)

