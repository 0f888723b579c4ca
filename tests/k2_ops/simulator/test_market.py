"""The pure generators: id rules, consistent books, exact rates and bursts."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from k2_ops.simulator.market import SymbolMarket, fmt_price, fmt_qty, rate_multiplier, trades_due


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
