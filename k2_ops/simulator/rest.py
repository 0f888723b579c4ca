"""Binance's spot REST market-data API, as pure logic: routes, parameter rules, request weights, the 1-minute
weight budget with 429 / 418 answers, REST faults, and the exact JSON of each answer.

Nothing here does I/O or reads the clock: every decision takes an explicit `now`, in seconds of the exchange's
clock (this host's Unix time plus `clock_offset_s`), so the rules are tested with chosen times. server.py
feeds requests in and writes the answers out.

Routes (GET, on the WebSocket's TLS port) and weights, as Binance documents them (rest-api.md, 2026):

    /api/v3/exchangeInfo                              20
    /api/v3/historicalTrades?symbol=&fromId=&limit=   25
    /api/v3/aggTrades?symbol=&fromId=&limit=          4   (2 until Binance raised it on 2025-03-10)
    /api/v3/depth?symbol=&limit=                      5 / 25 / 50 / 250 for limit 1-100 / -500 / -1000 / -5000

Weight budget (`WeightLimiter`), per client (one simulator = one IP, as Binance counts per IP):
- windows are [k * window_s, (k + 1) * window_s) of the exchange clock, so the default 60 s window is the
  wall-clock minute, as on Binance; a request's weight is charged when it is admitted (also when its
  parameters are then refused with 400), and every answer carries the window's used weight
  (`X-MBX-USED-WEIGHT-1M`, and the legacy `X-MBX-USED-WEIGHT`);
- a request whose weight would take the window over the limit is refused: 429, code -1003, `Retry-After` =
  whole seconds to the window's end (rounded up, at least 1); nothing is charged;
- a request sent before an earlier 429's Retry-After has passed is a violation and is refused with 429 (the
  remaining Retry-After); the `violations_before_ban`-th violation (counted since start or since the last ban
  ended) is answered 418 and bans the client for `ban_s`: every request is then 418 with `Retry-After` = the
  whole seconds left of the ban (rounded up, at least 1), whatever its route. A ban does not grow while it runs.

Faults (`RestApi.fault`, `RestApi.corrupt`) come before the budget: a faulted answer charges nothing and starts
no Retry-After of the budget's own.
"""

from __future__ import annotations

import http
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from .market import AggRow, SymbolMarket, TradeRow, fmt_price, fmt_qty, fmt_quote

EXCHANGE_INFO = "/api/v3/exchangeInfo"
HISTORICAL_TRADES = "/api/v3/historicalTrades"
AGG_TRADES = "/api/v3/aggTrades"
DEPTH = "/api/v3/depth"
ROUTE_WEIGHTS = {EXCHANGE_INFO: 20, HISTORICAL_TRADES: 25, AGG_TRADES: 4}
ROUTE_PARAMS: dict[str, tuple[str, ...]] = {
    HISTORICAL_TRADES: ("symbol", "limit", "fromId"),
    AGG_TRADES: ("symbol", "fromId", "limit"),
    DEPTH: ("symbol", "limit"),
}
TRADES_LIMIT_DEFAULT, TRADES_LIMIT_MAX = 500, 1000
DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX = 100, 5000
DEPTH_WEIGHTS = ((100, 5), (500, 25), (1000, 50))  # (up to limit, weight); above 1000: 250
DEPTH_WEIGHT_MAX = 250
WEIGHT_HEADERS = ("X-MBX-USED-WEIGHT-1M", "X-MBX-USED-WEIGHT")
JSON_TYPE = "application/json;charset=UTF-8"
TEXT_TYPE = "text/plain; charset=utf-8"

FAULT_STATUSES = (429, 418, 500, 502, 503, 504)
CORRUPT_MODES = ("truncated", "wrong_symbol", "short")
CORRUPTIBLE = (HISTORICAL_TRADES, AGG_TRADES, DEPTH)

NUMBER_RANGE = "^[0-9]{1,20}$"
SYMBOL_RANGE = "^[A-Z0-9-_.]{1,20}$"
_NUMBER_RE = re.compile(r"[0-9]{1,20}")
_SYMBOL_CHARS = frozenset("-_.")


class RestError(Exception):
    """A refused request: HTTP `status` with Binance's error JSON {"code": code, "msg": msg}."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg


def error_body(code: int, msg: str) -> str:
    return json.dumps({"code": code, "msg": msg}, separators=(",", ":"))


def depth_weight(limit: int) -> int:
    """Binance's weight of GET /api/v3/depth for a given limit (limits over 5000 are served as 5000)."""
    return next((weight for upto, weight in DEPTH_WEIGHTS if limit <= upto), DEPTH_WEIGHT_MAX)


def request_weight(route: str, params: dict[str, str]) -> int:
    """The weight charged for a request; a depth limit that is not a number weighs as the default limit.
    Paths Binance does not serve weigh 0."""
    if route == DEPTH:
        raw = params.get("limit", "")
        return depth_weight(int(raw) if _NUMBER_RE.fullmatch(raw) else DEPTH_LIMIT_DEFAULT)
    return ROUTE_WEIGHTS.get(route, 0)


def parse_query(query: str) -> tuple[dict[str, str], list[str]]:
    """(parameters, names sent more than once); a parameter's value is its last one."""
    pairs = parse_qsl(query, keep_blank_values=True)
    params: dict[str, str] = {}
    duplicates: list[str] = []
    for name, value in pairs:
        if name in params and name not in duplicates:
            duplicates.append(name)
        params[name] = value
    return params, duplicates


class MarketQuery(NamedTuple):
    """A valid market-data request."""

    route: str
    symbol: str  # as sent (uppercase)
    market: SymbolMarket
    from_id: int | None
    limit: int


def _number(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw == "":
        raise RestError(400, -1105, f"Parameter '{name}' was empty.")
    if not _NUMBER_RE.fullmatch(raw):
        raise RestError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{NUMBER_RANGE}'.")
    return int(raw)


def _limit_range(maximum: int) -> RestError:
    return RestError(400, -1100, f"Illegal characters found in parameter 'limit'; legal range is '{maximum}'.")


def validate(
    route: str, params: dict[str, str], duplicates: Sequence[str], lookup: Callable[[str], SymbolMarket | None]
) -> MarketQuery:
    """The request's meaning, or RestError (400) with Binance's code: -1101 a parameter sent twice, -1102 no
    symbol, -1100 illegal characters (a lowercase symbol, a limit or fromId that is not a number, a limit out of
    range), -1105 an empty parameter, -1104 a parameter the endpoint does not read, -1121 an unknown symbol.
    `lookup` maps an uppercase REST symbol to its market (None: not listed)."""
    if duplicates:
        raise RestError(400, -1101, "Duplicate values for a parameter detected.")
    symbol = params.get("symbol", "")
    if not symbol:
        raise RestError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    if len(symbol) > 30 or any(c.islower() or not (c.isalnum() or c in _SYMBOL_CHARS) for c in symbol):
        raise RestError(400, -1100, f"Illegal characters found in parameter 'symbol'; legal range is '{SYMBOL_RANGE}'.")
    from_id = _number(params, "fromId") if route != DEPTH else None
    limit = _number(params, "limit")
    if route == DEPTH:
        if limit is None:
            limit = DEPTH_LIMIT_DEFAULT
        elif limit < 1:
            raise _limit_range(DEPTH_LIMIT_MAX)
        limit = min(limit, DEPTH_LIMIT_MAX)  # Binance: "If limit > 5000, only 5000 entries will be returned."
    elif limit is None:
        limit = TRADES_LIMIT_DEFAULT
    elif not 1 <= limit <= TRADES_LIMIT_MAX:
        raise _limit_range(TRADES_LIMIT_MAX)
    known = ROUTE_PARAMS[route]
    read = sum(1 for name in params if name in known)
    if read != len(params):
        raise RestError(400, -1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was sent "
                                    f"'{len(params)}'.")
    market = lookup(symbol)
    if market is None:
        raise RestError(400, -1121, "Invalid symbol.")
    return MarketQuery(route, symbol, market, from_id, limit)


# ---- answers' JSON --------------------------------------------------------------------------------------------


def trade_item(row: TradeRow) -> dict[str, Any]:
    """One historicalTrades item, exactly as Binance formats it (same strings as the trade stream's p / q)."""
    return {"id": row.id, "price": fmt_price(row.price), "qty": fmt_qty(row.qty),
            "quoteQty": fmt_quote(row.price, row.qty), "time": row.time, "isBuyerMaker": row.is_buyer_maker,
            "isBestMatch": True}


def agg_item(row: AggRow) -> dict[str, Any]:
    """One aggTrades item, exactly as Binance formats it (the aggTrade stream's a, p, q, f, l, T, m, M)."""
    return {"a": row.id, "p": fmt_price(row.price), "q": fmt_qty(row.qty), "f": row.first, "l": row.last,
            "T": row.time, "m": row.is_buyer_maker, "M": True}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def market_answer(query: MarketQuery, market: SymbolMarket | None = None) -> Any:
    """The JSON value answering a valid request, from `market` (default: the query's own)."""
    source = market or query.market
    if query.route == HISTORICAL_TRADES:
        return [trade_item(r) for r in source.trades(query.from_id, query.limit)]
    if query.route == AGG_TRADES:
        return [agg_item(r) for r in source.agg_trades(query.from_id, query.limit)]
    return source.book(query.limit)


def drop_first_half(value: Any) -> Any:
    """The `short` corruption: the first half of the items (rounded up) dropped; for a book, of each side."""
    if isinstance(value, list):
        return value[(len(value) + 1) // 2 :]
    return {**value, "bids": drop_first_half(value["bids"]), "asks": drop_first_half(value["asks"])}


def interval_text(window_s: float) -> str:
    """The interval in -1003 messages: '1 MINUTE' for the default window."""
    if window_s % 60 == 0:
        return f"{int(window_s // 60)} MINUTE"
    return f"{window_s:g} SECOND"


def too_much_weight(limit: int, window_s: float) -> str:
    return error_body(-1003, f"Too much request weight used; current limit is {limit} request weight per "
                             f"{interval_text(window_s)}. Please use WebSocket Streams for live updates to avoid "
                             "polling the API.")


def banned_until(until_s: float) -> str:
    return error_body(-1003, f"Way too much request weight used; IP banned until {math.ceil(until_s * 1000)}. "
                             "Please use WebSocket Streams for live updates to avoid bans.")


def seconds_left(until: float, now: float) -> int:
    """A Retry-After: whole seconds until `until`, rounded up, at least 1."""
    return max(1, math.ceil(until - now))


# ---- the weight budget ----------------------------------------------------------------------------------------


class Admission(NamedTuple):
    status: int  # 200 admitted (weight charged), 429 or 418 refused (nothing charged)
    retry_after: int | None
    used: int  # the window's used weight after this request


class WeightLimiter:
    """Binance's REQUEST_WEIGHT budget for one client, with its 429 / 418 rules (module docstring).

    `limit` None: no budget (never 429; bans need 429s, so none either); `violations_before_ban` None: 429s
    but never a ban. Times are exchange-clock seconds; a clock going backwards just starts a new window.
    """

    def __init__(self, limit: int | None, window_s: float, violations_before_ban: int | None, ban_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.violations_before_ban = violations_before_ban
        self.ban_s = ban_s
        self.window = -1  # index k of the current window [k * window_s, (k + 1) * window_s)
        self.used_weight = 0
        self.retry_until = -math.inf  # a request before this, after a 429, is a violation
        self.violations = 0
        self.ban_until = -math.inf

    def _roll(self, now: float) -> None:
        window = math.floor(now / self.window_s)
        if window != self.window:
            self.window = window
            self.used_weight = 0

    def used(self, now: float) -> int:
        """The used weight of the window `now` is in (what X-MBX-USED-WEIGHT-1M reports)."""
        self._roll(now)
        return self.used_weight

    def window_end(self, now: float) -> float:
        return (math.floor(now / self.window_s) + 1) * self.window_s

    def admit(self, weight: int, now: float) -> Admission:
        self._roll(now)
        if now < self.ban_until:
            return Admission(418, seconds_left(self.ban_until, now), self.used_weight)
        if self.ban_until > -math.inf:  # a ban ended: the client starts afresh
            self.ban_until = self.retry_until = -math.inf
            self.violations = 0
        if now < self.retry_until:
            self.violations += 1
            if self.violations_before_ban is not None and self.violations >= self.violations_before_ban:
                self.ban_until = now + self.ban_s
                return Admission(418, seconds_left(self.ban_until, now), self.used_weight)
            return Admission(429, seconds_left(self.retry_until, now), self.used_weight)
        if self.limit is not None and self.used_weight + weight > self.limit:
            retry_after = seconds_left(self.window_end(now), now)
            self.retry_until = now + retry_after
            return Admission(429, retry_after, self.used_weight)
        self.used_weight += weight
        return Admission(200, None, self.used_weight)


# ---- the API --------------------------------------------------------------------------------------------------


@dataclass
class RestAnswer:
    status: int
    body: str
    content_type: str = JSON_TYPE
    retry_after: int | None = None
    used: int = 0  # the window's used weight after the request
    weight: int = 0  # charged for this request (0 when refused by the budget or a fault)


@dataclass(frozen=True)
class RestRequest:
    """One REST request as the simulator answered it (`GET /rest_requests`, `BackgroundSimulator.rest_requests`).

    `time` is the simulator's event-loop (monotonic) clock in seconds, `wall_time` the exchange's clock in Unix
    seconds (the one the weight window is aligned on); `weight` is what was charged (0 when refused by the budget
    or answered by a fault); `used_weight` the window's used weight after it (the X-MBX-USED-WEIGHT-1M header).
    """

    time: float
    wall_time: float
    path: str
    params: dict[str, str]
    weight: int
    status: int
    retry_after: int | None
    used_weight: int


def early_requests(requests: Iterable[RestRequest]) -> list[RestRequest]:
    """The requests sent before an earlier 429 or 418's Retry-After had passed (inside a ban, or ignoring a
    429), by the monotonic `time`: empty for a client that backs off as Binance asks.

        assert early_requests(sim.rest_requests()) == []
    """
    early: list[RestRequest] = []
    not_before = -math.inf
    for request in sorted(requests, key=lambda r: r.time):
        if request.time < not_before:
            early.append(request)
        if request.retry_after is not None:
            not_before = max(not_before, request.time + request.retry_after)
    return early


@dataclass
class RestApi:
    """The REST API's state and decisions: budget, faults, corruption. `handle` answers one request.

    `lookup` maps an uppercase REST symbol to its market (None: unknown); `other` gives another symbol's market
    (for the wrong_symbol corruption; None if there is none); `exchange_info` builds the exchangeInfo answer.
    """

    limiter: WeightLimiter
    lookup: Callable[[str], SymbolMarket | None]
    other: Callable[[SymbolMarket], SymbolMarket | None]
    exchange_info: Callable[[], dict[str, Any]]
    fault_status: int = 0
    fault_until: float = -math.inf
    corrupt_mode: str = ""
    corrupt_left: int = 0
    answered: dict[int, int] = field(default_factory=dict)  # HTTP status -> count

    def set_fault(self, status: int, seconds: float, now: float) -> None:
        if status not in FAULT_STATUSES:
            raise ValueError(f"REST fault status must be one of {FAULT_STATUSES}, got {status!r}")
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"REST fault seconds must be a finite number > 0, got {seconds!r}")
        self.fault_status, self.fault_until = status, now + seconds

    def set_corrupt(self, mode: str, count: int) -> None:
        if mode not in CORRUPT_MODES:
            raise ValueError(f"REST corruption mode must be one of {CORRUPT_MODES}, got {mode!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"REST corruption count must be an integer >= 1, got {count!r}")
        self.corrupt_mode, self.corrupt_left = mode, count

    def handle(self, route: str, query: str, now: float) -> RestAnswer:
        answer = self._answer(route, query, now)
        self.answered[answer.status] = self.answered.get(answer.status, 0) + 1
        return answer

    def _answer(self, route: str, query: str, now: float) -> RestAnswer:
        limiter = self.limiter
        if now < self.fault_until:
            return self._fault(now)
        params, duplicates = parse_query(query)
        weight = request_weight(route, params)
        admission = limiter.admit(weight, now)
        if admission.status == 429:
            return RestAnswer(429, too_much_weight(limiter.limit or 0, limiter.window_s),
                              retry_after=admission.retry_after, used=admission.used)
        if admission.status == 418:
            return RestAnswer(418, banned_until(limiter.ban_until), retry_after=admission.retry_after,
                              used=admission.used)
        used = admission.used
        if route == EXCHANGE_INFO:
            return RestAnswer(200, dumps(self.exchange_info()), used=used, weight=weight)
        if route not in ROUTE_PARAMS:
            return RestAnswer(404, error_body(-1, "Not found"), used=used, weight=weight)
        try:
            request = validate(route, params, duplicates, self.lookup)
        except RestError as exc:
            return RestAnswer(exc.status, error_body(exc.code, exc.msg), used=used, weight=weight)
        value: Any
        mode = self.corrupt_mode if self.corrupt_left > 0 else ""
        if mode:
            self.corrupt_left -= 1
        value = market_answer(request, self.other(request.market) if mode == "wrong_symbol" else None)
        if mode == "short":
            value = drop_first_half(value)
        body = dumps(value)
        if mode == "truncated":
            body = body[: len(body) // 2]
        return RestAnswer(200, body, used=used, weight=weight)

    def _fault(self, now: float) -> RestAnswer:
        status = self.fault_status
        used = self.limiter.used(now)
        if status in (429, 418):
            retry_after = seconds_left(self.fault_until, now)
            body = (too_much_weight(self.limiter.limit or 0, self.limiter.window_s) if status == 429
                    else banned_until(self.fault_until))
            return RestAnswer(status, body, retry_after=retry_after, used=used)
        phrase = http.HTTPStatus(status).phrase.capitalize()
        return RestAnswer(status, f"{phrase} (fault)\n", content_type=TEXT_TYPE, used=used)
