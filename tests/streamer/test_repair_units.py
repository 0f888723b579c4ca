"""Gap repair's pure parts (streamer/repair.py): the ledger of missing ids (each taken at most once), the
check of a history page, and the hand-over format; and the REST item parsers (streamer/payload.py)."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.payload import InvalidPayload, rest_agg_trade, rest_trade
from streamer.repair import RepairLedger, Verdict, check_page, format_ranges, parse_handed_over

KEY = "btcusdt@trade"


def _ledger(*gaps: tuple[int, int]) -> RepairLedger:
    ledger = RepairLedger(deadline_s=60.0)
    for first, count in gaps:
        ledger.open(KEY, "btcusdt", "trade", first, count, now=0.0)
    return ledger


def test_each_missing_id_is_taken_once_and_nothing_else_is_taken() -> None:
    ledger = _ledger((100, 5))
    assert [ledger.take(KEY, i) for i in (99, 100, 100, 102, 104, 105)] == [False, True, False, True, True, False]
    assert ledger.gaps[KEY].ranges() == [(101, 101), (103, 103)]
    assert not ledger.take("ethusdt@trade", 101)


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)), min_size=1, max_size=8),
       st.lists(st.integers(-5, 230), max_size=300))
def test_the_ledger_is_the_set_of_opened_ids_minus_those_taken(gaps: list[tuple[int, int]], takes: list[int]) -> None:
    """Differential: the ranges always equal a plain set's contents, and take() answers as set removal."""
    ledger = _ledger(*gaps)
    expected = {i for first, count in gaps for i in range(first, first + count)}
    for ident in takes:
        assert ledger.take(KEY, ident) == (ident in expected)
        expected.discard(ident)
        ranges = ledger.gaps[KEY].ranges()
        assert {i for a, b in ranges for i in range(a, b + 1)} == expected
        assert all(a <= b for a, b in ranges) and all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(ranges))


def test_ids_no_longer_served_are_given_up_below_the_first_one_served() -> None:
    ledger = _ledger((100, 5), (200, 3))
    assert ledger.give_up_below(KEY, 103) == [(100, 102)]
    assert ledger.give_up_below(KEY, 201) == [(103, 104), (200, 200)]
    assert ledger.gaps[KEY].ranges() == [(201, 202)]


def test_the_gap_seen_first_is_worked_on_first_and_a_failed_one_waits_its_retry() -> None:
    ledger = RepairLedger(deadline_s=60.0)
    ledger.open("b@trade", "b", "trade", 10, 1, now=5.0)
    ledger.open("a@trade", "a", "trade", 10, 1, now=1.0)
    due = ledger.due(now=6.0)
    assert due is not None and due.key == "a@trade"
    due.retry_at = 9.0
    other = ledger.due(now=6.0)
    assert other is not None and other.key == "b@trade"
    other.retry_at = 12.0
    assert ledger.due(now=6.0) is None and ledger.next_time() == 9.0  # the worker sleeps until then
    assert ledger.due(now=9.0) is due
    assert [g.key for g in ledger.expired(now=61.0)] == ["a@trade"]


def test_a_second_gap_on_a_key_extends_its_deadline() -> None:
    ledger = RepairLedger(deadline_s=60.0)
    ledger.open(KEY, "btcusdt", "trade", 10, 1, now=0.0)
    ledger.open(KEY, "btcusdt", "trade", 20, 1, now=30.0)
    assert ledger.gaps[KEY].deadline == 90.0 and ledger.gaps[KEY].ranges() == [(10, 10), (20, 20)]


def _trades(ids: range, symbol_price: str = "100.00000000") -> bytes:
    return json.dumps([{"id": i, "price": symbol_price, "qty": "0.50000000", "quoteQty": "50.00000000",
                        "time": 1_700_000_000_000 + i, "isBuyerMaker": i % 2 == 0, "isBestMatch": True}
                       for i in ids]).encode()


def _page(body: bytes, asked: int) -> object:
    return check_page(body, asked, KEY, "btcusdt", "trade", 1, "blue")


def test_a_good_page_gives_the_trade_records_a_live_message_would_have() -> None:
    page = check_page(_trades(range(100, 103)), 100, KEY, "btcusdt", "trade", 42, "blue")
    assert page.verdict is Verdict.GOOD and [e.first_id for e in page.events] == [100, 101, 102]
    assert page.events[0].record == {
        "exchange": "binance", "symbol": "BTCUSDT", "trade_id": 100, "price": "100.00000000",
        "quantity": "0.50000000", "event_time": 1_700_000_000_100, "trade_time": 1_700_000_000_100,
        "is_buyer_maker": True, "is_best_match": True, "ingestion_time": 42, "instance": "blue"}
    assert page.events[0].key == KEY and page.events[0].stream == "trade"


@pytest.mark.parametrize(("body", "asked", "verdict", "reason"), [
    (b'[{"id": 1', 1, Verdict.BAD, "not JSON"),
    (b'{"code": -1121, "msg": "Invalid symbol."}', 1, Verdict.BAD, "not a list"),
    (b"[]", 1, Verdict.BAD, "no items"),
    (b"[1, 2]", 1, Verdict.BAD, "not an object"),
    (_trades(range(5, 8)), 6, Verdict.BAD, "below the asked"),
    (json.dumps([{"id": 5, "price": "1.0", "qty": "1.0", "time": 1, "isBuyerMaker": True},
                 {"id": 7, "price": "1.0", "qty": "1.0", "time": 1, "isBuyerMaker": True}]).encode(), 5,
     Verdict.BAD, "not consecutive"),
    (json.dumps([{"id": 5, "price": 1.5, "qty": "1.0", "time": 1, "isBuyerMaker": True}]).encode(), 5,
     Verdict.BAD, "invalid_value 'price'"),
    (json.dumps([{"id": 5, "qty": "1.0", "time": 1, "isBuyerMaker": True}]).encode(), 5, Verdict.BAD,
     "missing_field 'price'"),
    (_trades(range(10, 13)), 6, Verdict.NOT_SERVED, ""),
    # Another market's history: it starts above everything this stream received, so it is not "no longer served".
    (_trades(range(900, 903)), 6, Verdict.BAD, "above 20, the newest id this stream received"),
])
def test_unusable_and_partial_pages_are_named(body: bytes, asked: int, verdict: Verdict, reason: str) -> None:
    page = check_page(body, asked, KEY, "btcusdt", "trade", 1, "blue", last_seen=20)
    assert page.verdict is verdict and reason in page.reason


def test_check_page_never_raises_on_mutated_pages() -> None:
    rng = random.Random(7)
    body = _trades(range(100, 110))
    for _ in range(2_000):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        page = check_page(bytes(mutated), 100, KEY, "btcusdt", "trade", 1, "blue")
        assert page.verdict in Verdict


def test_rest_agg_trade_item_becomes_the_agg_trade_record() -> None:
    item = {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27782, "T": 1498793709153,
            "m": True, "M": True}
    first, last, record, unknown = rest_agg_trade(item, "BNBBTC", 5, "green")
    assert (first, last, unknown) == (26129, 26129, 0)
    assert record["first_trade_id"] == 27781 and record["event_time"] == record["trade_time"] == 1498793709153
    with pytest.raises(InvalidPayload):
        rest_agg_trade({**item, "l": 27780}, "BNBBTC", 5, "green")
    with pytest.raises(InvalidPayload):
        rest_trade({"id": True, "price": "1", "qty": "1", "time": 1, "isBuyerMaker": True}, "X", 1, "blue")


def test_handed_over_repairs_are_checked() -> None:
    good = {KEY: {"symbol": "btcusdt", "stream": "trade", "ranges": [[5, 9], [12, 12]]}}
    assert parse_handed_over(good) == good and parse_handed_over(None) == {}
    for bad in ({KEY: {"symbol": "btcusdt", "stream": "depth", "ranges": []}},
                {KEY: {"symbol": "ethusdt", "stream": "trade", "ranges": []}},
                {KEY: {"symbol": "btcusdt", "stream": "trade", "ranges": [[9, 5]]}},
                {KEY: {"symbol": "btcusdt", "stream": "trade", "ranges": [[1.5, 2]]}},
                [1]):
        with pytest.raises(ValueError):
            parse_handed_over(bad)


def test_ranges_are_shown_short() -> None:
    assert format_ranges([(1, 1), (3, 9)]) == "1, 3..9"
    assert format_ranges([(i, i) for i in range(12)], limit=2) == "0, 1 (+10 more ranges)"
