"""Pure market-data generation for one symbol: trades, aggTrades, bookTicker and depth@100ms.

A small order book moves by taker orders (each fills 1-3 trades, grouped into aggTrades by price, like
Binance) and passive updates. Every book change takes the next order-book update id, so per symbol:
trade `t` is contiguous, aggTrade `a` is contiguous with `f`/`l` covering the trade ids, bookTicker `u`
is increasing (it shares the update-id space, so not contiguous) and depth events chain `U == prev u + 1`.

Payloads are formatted once, straight to compact JSON bytes with the exact key order and JSON types of
Binance's spot streams (2026: trade without `b`/`a`; bookTicker without `e`/`E`); prices and quantities
are decimal strings with 8 decimals, as on the exchange. Nothing here does I/O or reads the clock.

For the REST API (rest.py, server.py) each market also keeps its recent trades and aggTrades (`History`: the
exact values of the stream payloads, in columns, bounded) and serves its live book (`book`), whose
`lastUpdateId` is the update id of the last change applied: every later depth diff has `u` >= it, and the
first with `u` > it has `U` <= it + 1 (Binance's snapshot rule; a diff with `u` == it is already in the book).
"""

from __future__ import annotations

import random
from array import array
from typing import Any, NamedTuple

STREAM_KINDS = ("trade", "aggTrade", "bookTicker", "depth@100ms")
DEPTH_INTERVAL_MS = 100
PRICE_SCALE = 100  # prices in ticks of 0.01
QTY_SCALE = 100_000_000  # quantities in units of 1e-8
LOT = 1_000  # quantities are multiples of 0.00001
BOOK_LEVELS = 20  # levels created per side, and how far from the best a passive update lands
PRUNE_DISTANCE = 60  # levels further than this (in ticks) from the best are removed (sent as qty 0)
PASSIVE_PER_TRADE = 2  # passive book updates per trade; about half of them touch the best level
BASE_PRICES = {"btcusdt": 60_000.00, "ethusdt": 3_000.00, "bnbusdt": 600.00, "solusdt": 150.00}
DEFAULT_BASE_PRICE = 100.00
# Quote assets exchangeInfo reports, longest first: a symbol's quote asset is the one it ends with.
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def quote_asset(symbol: str) -> str:
    """The quote asset of a symbol ("btcusdt" -> "USDT"); symbols ending in none of QUOTE_ASSETS: "USDT"."""
    upper = symbol.upper()
    return next((q for q in QUOTE_ASSETS if upper.endswith(q) and len(upper) > len(q)), "USDT")


class Event(NamedTuple):
    """One generated message. `ident` is the stream's id (t, a or u); `time_ms` its exchange time."""

    symbol: str
    kind: str
    ident: int
    time_ms: int
    payload: bytes


def fmt_price(ticks: int) -> str:
    return f"{ticks // PRICE_SCALE}.{ticks % PRICE_SCALE:02d}000000"


def fmt_qty(units: int) -> str:
    return f"{units // QTY_SCALE}.{units % QTY_SCALE:08d}"


def fmt_quote(ticks: int, units: int) -> str:
    """price x qty exactly: 8 decimals as Binance prints them, 10 only if the product needs them (never
    here: quantities are whole lots, so the product of a 0.01 price and a 0.00001 lot has 7 decimals)."""
    value = ticks * units  # in units of 1e-10
    whole, frac = divmod(value, PRICE_SCALE * QTY_SCALE)
    digits = f"{frac:010d}"
    return f"{whole}.{digits[:8] if digits.endswith('00') else digits}"


class TradeRow(NamedTuple):
    """One kept trade: exactly the values of its `trade` payload (t, p, q, T, m), prices and qty as integers."""

    id: int
    price: int  # ticks of 0.01
    qty: int  # units of 1e-8
    time: int  # trade time T, ms
    is_buyer_maker: bool


class AggRow(NamedTuple):
    """One kept aggTrade: exactly the values of its `aggTrade` payload (a, p, q, f, l, T, m)."""

    id: int
    price: int
    qty: int
    first: int
    last: int
    time: int
    is_buyer_maker: bool


class History:
    """The last `keep` rows of one id series (trade ids or aggTrade ids), in columns of `array('q')`.

    Invariants: ids are appended contiguous and ascending (the market's own counters), so the row of id i is
    at position i - first_id and needs no id column; what is served is exactly the newest `keep` rows (the
    columns hold at most keep + keep // 10 + 1 and drop the oldest tenth at once, so trimming is amortised);
    `keep` 0 keeps nothing. Memory: 8 bytes per column per row (4 columns for trades, 6 for aggTrades).
    """

    __slots__ = ("columns", "first_id", "keep", "slack")

    def __init__(self, keep: int, columns: int) -> None:
        self.keep = keep
        self.slack = keep // 10 + 1
        self.first_id = 0
        self.columns = tuple(array("q") for _ in range(columns))

    def __len__(self) -> int:
        return min(len(self.columns[0]), self.keep)

    def append(self, ident: int, values: tuple[int, ...]) -> None:
        if not self.keep:
            return
        columns = self.columns
        if not columns[0]:
            self.first_id = ident
        elif ident != self.first_id + len(columns[0]):
            raise ValueError(f"history ids must be contiguous: got {ident} after {self.first_id + len(columns[0]) - 1}")
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        excess = len(columns[0]) - self.keep
        if excess >= self.slack:
            for column in columns:
                del column[:excess]
            self.first_id += excess

    def oldest_id(self) -> int | None:
        """The oldest id served, None when empty."""
        n = len(self.columns[0])
        return None if not n or not self.keep else self.first_id + max(n - self.keep, 0)

    def rows(self, from_id: int | None, limit: int) -> list[tuple[int, ...]]:
        """Rows (id first) with id >= from_id, ascending, at most `limit`; from_id None: the newest `limit`.

        A from_id older than the oldest served answers from the oldest served (the answer then does not start
        at from_id: that is how ids no longer kept show); a from_id beyond the newest answers [].
        """
        n = len(self.columns[0])
        start = max(n - self.keep, 0)
        lo = max(start, n - limit) if from_id is None else min(max(from_id - self.first_id, start), n)
        hi = min(lo + limit, n)
        if lo >= hi:
            return []
        cols = [c[lo:hi] for c in self.columns]
        return [(self.first_id + lo + i, *(c[i] for c in cols)) for i in range(hi - lo)]


def trades_due(carry: float, rate_per_s: float, dt_s: float) -> tuple[int, float]:
    """Whole trades due after `dt_s` at `rate_per_s`, keeping the fraction for the next tick."""
    total = carry + rate_per_s * dt_s
    whole = int(total)
    return whole, total - whole


def rate_multiplier(elapsed_s: float, multiplier: float, every_s: float | None, duration_s: float) -> float:
    """Scheduled bursts: `multiplier` x the rate for `duration_s` at the start of every `every_s` period."""
    if every_s is None or multiplier == 1.0:
        return 1.0
    return multiplier if (elapsed_s % every_s) < duration_s else 1.0


class SymbolMarket:
    """The live market of one symbol. Deterministic for a given seed and sequence of calls."""

    def __init__(self, symbol: str, seed: int = 0, history: int = 10_000) -> None:
        self.symbol = symbol
        self.upper = symbol.upper()
        self.rng = random.Random(f"{seed}:{symbol}")
        rng = self.rng
        # Large starting ids (beyond 2**31) so 32-bit assumptions fail in tests, as on the real exchange.
        self.next_trade_id = 3_700_000_000 + rng.randrange(10_000_000)
        self.next_agg_id = 3_000_000_000 + rng.randrange(10_000_000)
        self.update_id = 50_000_000_000 + rng.randrange(10_000_000)
        base = round(BASE_PRICES.get(symbol, DEFAULT_BASE_PRICE) * PRICE_SCALE)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for level in range(BOOK_LEVELS):
            self.bids[base - level] = self._random_qty()
            self.asks[base + 1 + level] = self._random_qty()
        self.best_bid = base
        self.best_ask = base + 1
        # Book changes since the last depth event: price -> qty per side, and the first update id.
        self.pending_bids: dict[int, int] = {}
        self.pending_asks: dict[int, int] = {}
        self.pending_first_id: int | None = None
        self.next_depth_ms: int | None = None
        # The last `history` trades (price, qty, T, m) and aggTrades (price, qty, f, l, T, m), for REST.
        self.trade_history = History(history, 4)
        self.agg_history = History(history, 6)

    # ---- public API -------------------------------------------------------------------------------

    def generate(self, now_ms: int, trades: int) -> list[Event]:
        """Generate `trades` trades (as taker orders) plus the passive book updates that go with them."""
        out: list[Event] = []
        rng = self.rng
        while trades > 0:
            n = min(trades, rng.choice((1, 1, 2, 3)))
            self._taker_order(n, now_ms, out)
            for _ in range(n * PASSIVE_PER_TRADE):
                self._passive_update(now_ms, out)
            trades -= n
        return out

    def depth_due(self, now_ms: int) -> Event | None:
        """The depth@100ms diff if a 100 ms boundary has passed and the book changed since the last one."""
        if self.next_depth_ms is None:
            self.next_depth_ms = now_ms - now_ms % DEPTH_INTERVAL_MS + DEPTH_INTERVAL_MS
            return None
        if now_ms < self.next_depth_ms:
            return None
        self.next_depth_ms = now_ms - now_ms % DEPTH_INTERVAL_MS + DEPTH_INTERVAL_MS
        if self.pending_first_id is None:
            return None  # Binance sends no diff for an interval without book changes
        bids = ",".join(
            f'["{fmt_price(p)}","{fmt_qty(q)}"]' for p, q in sorted(self.pending_bids.items(), reverse=True)
        )
        asks = ",".join(f'["{fmt_price(p)}","{fmt_qty(q)}"]' for p, q in sorted(self.pending_asks.items()))
        first, last = self.pending_first_id, self.update_id
        payload = (
            f'{{"e":"depthUpdate","E":{now_ms},"s":"{self.upper}","U":{first},"u":{last},"b":[{bids}],"a":[{asks}]}}'
        ).encode()
        self.pending_bids = {}
        self.pending_asks = {}
        self.pending_first_id = None
        return Event(self.symbol, "depth@100ms", last, now_ms, payload)

    def trades(self, from_id: int | None, limit: int) -> list[TradeRow]:
        """Kept trades with id >= from_id (None: the newest), ascending, at most `limit` (History.rows)."""
        return [TradeRow(i, p, q, t, bool(m)) for i, p, q, t, m in self.trade_history.rows(from_id, limit)]

    def agg_trades(self, from_id: int | None, limit: int) -> list[AggRow]:
        """Kept aggTrades with a >= from_id (None: the newest), ascending, at most `limit` (History.rows)."""
        return [AggRow(i, p, q, f, la, t, bool(m)) for i, p, q, f, la, t, m in self.agg_history.rows(from_id, limit)]

    def book(self, limit: int | None = None) -> dict[str, Any]:
        """The live book as Binance's depth snapshot: `lastUpdateId` (the update id of the last change applied),
        bids best (highest) first and asks best (lowest) first, at most `limit` levels per side (None: all),
        each level [price, qty] as the exact decimal strings the depth stream carries."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return {
            "lastUpdateId": self.update_id,
            "bids": [[fmt_price(p), fmt_qty(q)] for p, q in bids],
            "asks": [[fmt_price(p), fmt_qty(q)] for p, q in asks],
        }

    # ---- book mechanics ---------------------------------------------------------------------------

    def _random_qty(self) -> int:
        return LOT * self.rng.randint(10, 5_000)

    def _book_change(self, is_bid: bool, price: int, qty: int) -> int:
        """Apply one book change; it takes the next update id and joins the pending depth diff."""
        self.update_id += 1
        if self.pending_first_id is None:
            self.pending_first_id = self.update_id
        if is_bid:
            if qty:
                self.bids[price] = qty
            else:
                self.bids.pop(price, None)
            self.pending_bids[price] = qty
        else:
            if qty:
                self.asks[price] = qty
            else:
                self.asks.pop(price, None)
            self.pending_asks[price] = qty
        return self.update_id

    def _book_ticker(self, update_id: int, now_ms: int, out: list[Event]) -> None:
        bid, ask = self.best_bid, self.best_ask
        payload = (
            f'{{"u":{update_id},"s":"{self.upper}","b":"{fmt_price(bid)}","B":"{fmt_qty(self.bids[bid])}",'
            f'"a":"{fmt_price(ask)}","A":"{fmt_qty(self.asks[ask])}"}}'
        ).encode()
        out.append(Event(self.symbol, "bookTicker", update_id, now_ms, payload))

    def _refill(self, is_bid: bool) -> None:
        """After the best level emptied: find the new best, keep the book deep and near the best."""
        book = self.bids if is_bid else self.asks
        if not book:
            price = (self.best_bid - 1) if is_bid else (self.best_ask + 1)
            self._book_change(is_bid, price, self._random_qty())
        if is_bid:
            self.best_bid = max(self.bids)
            far = [p for p in self.bids if self.best_bid - p > PRUNE_DISTANCE]
        else:
            self.best_ask = min(self.asks)
            far = [p for p in self.asks if p - self.best_ask > PRUNE_DISTANCE]
        for price in far:
            self._book_change(is_bid, price, 0)

    def _taker_order(self, n: int, now_ms: int, out: list[Event]) -> None:
        rng = self.rng
        taker_buys = rng.random() < 0.5  # a taker buy lifts the ask: the buyer is not the maker
        maker_flag = "false" if taker_buys else "true"
        trade_time = now_ms - 1 if now_ms > 0 else 0
        symbol, upper = self.symbol, self.upper
        agg_first = self.next_trade_id
        agg_qty = 0
        agg_price = self.best_ask if taker_buys else self.best_bid
        for _ in range(n):
            price = self.best_ask if taker_buys else self.best_bid
            if price != agg_price:
                last = self.next_trade_id - 1
                self._agg_trade(agg_price, agg_qty, agg_first, last, maker_flag, now_ms, out)
                agg_first, agg_qty, agg_price = self.next_trade_id, 0, price
            level_qty = (self.asks if taker_buys else self.bids)[price]
            # Some trades sweep the whole level, so the price walks (and an order may span two prices).
            sweep = rng.random() < 0.1
            qty = level_qty if sweep else min(level_qty, LOT * rng.randint(1, 400))
            trade_id = self.next_trade_id
            self.next_trade_id += 1
            self.trade_history.append(trade_id, (price, qty, trade_time, not taker_buys))
            agg_qty += qty
            p = fmt_price(price)
            out.append(
                Event(
                    symbol,
                    "trade",
                    trade_id,
                    now_ms,
                    (
                        f'{{"e":"trade","E":{now_ms},"s":"{upper}","t":{trade_id},"p":"{p}",'
                        f'"q":"{fmt_qty(qty)}","T":{trade_time},"m":{maker_flag},"M":true}}'
                    ).encode(),
                )
            )
            remaining = level_qty - qty
            update_id = self._book_change(not taker_buys, price, remaining)
            if remaining == 0:
                self._refill(not taker_buys)
            self._book_ticker(update_id if remaining else self.update_id, now_ms, out)
        self._agg_trade(agg_price, agg_qty, agg_first, self.next_trade_id - 1, maker_flag, now_ms, out)

    def _agg_trade(
        self, price: int, qty: int, first: int, last: int, maker_flag: str, now_ms: int, out: list[Event]
    ) -> None:
        agg_id = self.next_agg_id
        self.next_agg_id += 1
        trade_time = now_ms - 1 if now_ms > 0 else 0
        self.agg_history.append(agg_id, (price, qty, first, last, trade_time, maker_flag == "true"))
        payload = (
            f'{{"e":"aggTrade","E":{now_ms},"s":"{self.upper}","a":{agg_id},"p":"{fmt_price(price)}",'
            f'"q":"{fmt_qty(qty)}","f":{first},"l":{last},"T":{trade_time},"m":{maker_flag},"M":true}}'
        ).encode()
        out.append(Event(self.symbol, "aggTrade", agg_id, now_ms, payload))

    def _passive_update(self, now_ms: int, out: list[Event]) -> None:
        rng = self.rng
        is_bid = rng.random() < 0.5
        best = self.best_bid if is_bid else self.best_ask
        roll = rng.random()
        if roll < 0.05 and self.best_ask - self.best_bid > 1:
            # A new order inside the spread becomes the best level.
            price = best + 1 if is_bid else best - 1
            update_id = self._book_change(is_bid, price, self._random_qty())
            if is_bid:
                self.best_bid = price
            else:
                self.best_ask = price
            self._book_ticker(update_id, now_ms, out)
            return
        if roll < 0.5:
            update_id = self._book_change(is_bid, best, self._random_qty())
            self._book_ticker(update_id, now_ms, out)
            return
        offset = rng.randint(1, BOOK_LEVELS)
        price = best - offset if is_bid else best + offset
        qty = 0 if rng.random() < 0.3 else self._random_qty()
        self._book_change(is_bid, price, qty)
