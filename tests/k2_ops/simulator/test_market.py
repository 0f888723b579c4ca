"""The pure generators: id rules, consistent books, exact rates and bursts; the kept history and the book snapshot
the REST API serves."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2_ops.simulator.market import (
    History,
    SymbolMarket,
    fmt_price,
    fmt_qty,
    fmt_quote,
    rate_multiplier,
    trades_due,
)


def run_market(seed: int, batches: list[int], symbol: str = "btcusdt") -> list[tuple[str, dict]]:
    market = SymbolMarket(symbol, seed)
    out = []
    now_ms = 1_700_000_000_000
    for trades in batches:
        now_ms += 37
        for event in market.generate(now_ms, trades):
            out.append((event.kind, json.loads(event.payload)))
        depth = market.depth_due(now_ms)
        if depth is not None:
            out.append((depth.kind, json.loads(depth.payload)))
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), batches=st.lists(st.integers(0, 60), min_size=1, max_size=30))
def test_id_rules_hold_for_any_sequence(seed: int, batches: list[int]) -> None:
    events = run_market(seed, batches)
    trades = [p for k, p in events if k == "trade"]
    aggs = [p for k, p in events if k == "aggTrade"]
    depth = [p for k, p in events if k == "depth@100ms"]
    tickers = [p for k, p in events if k == "bookTicker"]
    assert len(trades) == sum(batches)
    assert [t["t"] for t in trades] == list(range(trades[0]["t"], trades[0]["t"] + len(trades))) if trades else True
    assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs))) if aggs else True
    covered = [t for a in aggs for t in range(a["f"], a["l"] + 1)]
    assert covered == [t["t"] for t in trades]
    by_id = {t["t"]: t for t in trades}
    for agg in aggs:
        group = [by_id[i] for i in range(agg["f"], agg["l"] + 1)]
        assert {g["p"] for g in group} == {agg["p"]}
        assert sum(Decimal(g["q"]) for g in group) == Decimal(agg["q"])
    for previous, current in itertools.pairwise(depth):
        assert current["U"] == previous["u"] + 1
    assert all(b["u"] > a["u"] for a, b in itertools.pairwise(tickers))
    for ticker in tickers:
        assert Decimal(ticker["b"]) < Decimal(ticker["a"])
        assert Decimal(ticker["B"]) > 0 and Decimal(ticker["A"]) > 0


def test_same_seed_same_market() -> None:
    assert run_market(7, [5, 3, 9]) == run_market(7, [5, 3, 9])
    assert run_market(7, [5, 3, 9]) != run_market(8, [5, 3, 9])


def test_depth_comes_once_per_100ms_boundary_and_only_with_changes() -> None:
    market = SymbolMarket("ethusdt", 1)
    assert market.depth_due(1_000) is None  # arms the timer
    market.generate(1_010, 3)
    assert market.depth_due(1_050) is None  # same 100 ms interval
    first = market.depth_due(1_100)
    assert first is not None and first.time_ms == 1_100
    assert market.depth_due(1_250) is None  # nothing changed since
    market.generate(1_260, 1)
    second = market.depth_due(1_300)
    assert second is not None
    assert json.loads(second.payload)["U"] == json.loads(first.payload)["u"] + 1


def test_trades_due_keeps_fractions() -> None:
    carry, total = 0.0, 0
    for _ in range(1000):
        n, carry = trades_due(carry, 33.3, 0.01)
        total += n
    assert total in (332, 333)  # floating-point carry: never more than one trade off


def test_scheduled_bursts() -> None:
    assert rate_multiplier(0.5, 10.0, 5.0, 1.0) == 10.0
    assert rate_multiplier(1.5, 10.0, 5.0, 1.0) == 1.0
    assert rate_multiplier(5.2, 10.0, 5.0, 1.0) == 10.0
    assert rate_multiplier(0.5, 10.0, None, 1.0) == 1.0


def test_decimal_strings() -> None:
    assert fmt_price(6_183_763) == "61837.63000000"
    assert fmt_price(5) == "0.05000000"
    assert fmt_qty(2_000_000) == "0.02000000"
    assert fmt_qty(154_698_000) == "1.54698000"


# ---- what the REST API serves from a market: history and book ---------------------------------------------------


def test_history_holds_exactly_the_values_of_the_stream_payloads() -> None:
    market = SymbolMarket("btcusdt", 3, history=10_000)
    trades, aggs = [], []
    for step in range(40):
        for event in market.generate(1_700_000_000_000 + step * 13, 9):
            if event.kind == "trade":
                trades.append(json.loads(event.payload))
            elif event.kind == "aggTrade":
                aggs.append(json.loads(event.payload))
    rows = market.trades(None, 1000)
    assert [(r.id, fmt_price(r.price), fmt_qty(r.qty), r.time, r.is_buyer_maker) for r in rows] == [
        (t["t"], t["p"], t["q"], t["T"], t["m"]) for t in trades
    ]
    agg_rows = [(r.id, fmt_price(r.price), fmt_qty(r.qty), r.first, r.last, r.time, r.is_buyer_maker)
                for r in market.agg_trades(None, 1000)]
    assert agg_rows == [(a["a"], a["p"], a["q"], a["f"], a["l"], a["T"], a["m"]) for a in aggs]
    for row in rows:
        assert Decimal(fmt_quote(row.price, row.qty)) == Decimal(fmt_price(row.price)) * Decimal(fmt_qty(row.qty))


def test_history_keeps_the_newest_n_and_pages_like_binance() -> None:
    market = SymbolMarket("ethusdt", 0, history=50)
    market.generate(1_000, 437)
    newest = market.next_trade_id - 1
    kept = [r.id for r in market.trades(None, 1000)]
    assert kept == list(range(newest - 49, newest + 1))  # exactly the newest 50, whatever the trimming slack
    assert [r.id for r in market.trades(None, 3)] == kept[-3:]
    assert [r.id for r in market.trades(newest - 437, 5)] == kept[:5]  # too old: from the oldest kept
    assert [r.id for r in market.trades(kept[10], 4)] == kept[10:14]
    assert market.trades(newest + 1, 10) == []
    assert [r.id for r in market.trades(newest - 1, 10)] == [newest - 1, newest]
    aggs = [r.id for r in market.agg_trades(None, 1000)]
    assert len(aggs) == 50 and aggs == list(range(aggs[0], aggs[0] + 50)) and aggs[-1] == market.next_agg_id - 1
    nothing = SymbolMarket("ethusdt", 0, history=0)
    nothing.generate(1_000, 20)
    assert nothing.trades(None, 10) == [] and nothing.agg_trades(0, 10) == []


def test_history_refuses_ids_that_are_not_contiguous() -> None:
    history = History(10, 1)
    history.append(5, (1,))
    with pytest.raises(ValueError, match="contiguous"):
        history.append(7, (1,))


def apply_diff(book: dict[str, dict[str, str]], diff: dict[str, Any]) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for price, qty in diff[key]:
            if Decimal(qty) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty


def as_levels(book: dict[str, dict[str, str]]) -> dict[str, list[list[str]]]:
    return {"bids": [[p, q] for p, q in sorted(book["bids"].items(), key=lambda x: -Decimal(x[0]))],
            "asks": [[p, q] for p, q in sorted(book["asks"].items(), key=lambda x: Decimal(x[0]))]}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), before=st.lists(st.integers(0, 40), max_size=8),
       after=st.lists(st.integers(0, 40), min_size=1, max_size=12))
def test_a_snapshot_plus_later_diffs_is_the_book(seed: int, before: list[int], after: list[int]) -> None:
    """Binance's rule: drop diffs with u <= lastUpdateId; the first kept has U <= lastUpdateId + 1; the rest
    chain; the result is the live book, level for level, exact strings."""
    market = SymbolMarket("btcusdt", seed)
    now_ms = 1_000
    market.depth_due(now_ms)
    for trades in before:
        now_ms += 60
        market.generate(now_ms, trades)
        market.depth_due(now_ms)
    snapshot = market.book()
    assert snapshot["bids"] == market.book(5000)["bids"] and len(market.book(3)["asks"]) == 3
    diffs = []
    for trades in after:
        now_ms += 60
        market.generate(now_ms, trades)
        depth = market.depth_due(now_ms)
        if depth is not None:
            diffs.append(json.loads(depth.payload))
    now_ms += 200
    last = market.depth_due(now_ms)  # flush what is pending
    if last is not None:
        diffs.append(json.loads(last.payload))
    last_id = snapshot["lastUpdateId"]
    assert all(d["u"] >= last_id for d in diffs)
    later = [d for d in diffs if d["u"] > last_id]
    book = {side: dict(map(tuple, snapshot[side])) for side in ("bids", "asks")}
    if later:
        assert later[0]["U"] <= last_id + 1
        for previous, current in itertools.pairwise(later):
            assert current["U"] == previous["u"] + 1
        for diff in later:
            apply_diff(book, diff)
    final = market.book()
    assert final["lastUpdateId"] == (later[-1]["u"] if later else last_id)
    assert as_levels(book) == {"bids": final["bids"], "asks": final["asks"]}


def test_quote_quantity_is_exact() -> None:
    assert fmt_quote(6_000_003, 102_000) == "61.20003060"
    assert fmt_quote(1, 1) == "0.0000000001"  # not in whole lots: the two extra decimals it needs
    assert fmt_quote(10_000, 100_000_000) == "100.00000000"
