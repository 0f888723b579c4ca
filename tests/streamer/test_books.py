"""Order-book sync (streamer/books.py), pure: the procedure's rules one by one, then a differential test against
the simulator's market (k2_ops/simulator/market.py), which keeps the real book its depth diffs describe: a
consumer that takes an advanced snapshot and the diffs after it holds the exchange's book, level for level."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

from k2_ops.simulator.market import SymbolMarket
from streamer.books import (
    BookState,
    BookSync,
    Snapshot,
    SnapshotOutcome,
    apply_levels,
    parse_snapshot,
    sorted_levels,
)
from streamer.parse import Event
from streamer.payload import depth

KEY = "btcusdt@depth@100ms"


def _diff(first: int, last: int, bids: list[tuple[str, str]] = (), asks: list[tuple[str, str]] = ()) -> Event:
    record = {"symbol": "BTCUSDT", "bids": [{"price": p, "quantity": q} for p, q in bids],
              "asks": [{"price": p, "quantity": q} for p, q in asks]}
    return Event(KEY, "btcusdt", "depth", first, last, record, 0)


def test_a_book_wants_a_snapshot_buffers_while_it_is_fetched_and_is_advanced_by_the_buffer() -> None:
    books = BookSync("blue")
    assert books.on_diff(_diff(10, 12), now=0.0)  # never synced: wants a snapshot
    books.requesting(KEY)
    assert not books.on_diff(_diff(13, 15, bids=[("100.00", "2.0")]), now=0.1)
    assert not books.on_diff(_diff(16, 16, asks=[("101.00", "0.00000000")]), now=0.2)
    snapshot = Snapshot(14, bids=[("100.00", "1.0"), ("99.00", "3.0")], asks=[("101.00", "5.0"), ("102.00", "1")])
    outcome, record = books.on_snapshot(KEY, snapshot, fetched_ms=7)
    assert outcome is SnapshotOutcome.PRODUCE
    # Both buffered diffs are newer than 14: applied (13..15 chains: 13 <= 15 <= 15), the snapshot is at 16.
    assert record["last_update_id"] == 16 and record["fetched_time"] == 7 and record["symbol"] == "BTCUSDT"
    assert record["bids"] == [{"price": "100.00", "quantity": "2.0"}, {"price": "99.00", "quantity": "3.0"}]
    assert record["asks"] == [{"price": "102.00", "quantity": "1"}]
    assert books.books[KEY].state is BookState.SYNCED
    # The first diff after it chains from 16; diffs already inside it are ignored; then U == previous u + 1.
    assert not books.on_diff(_diff(15, 16), now=1.0)
    assert not books.on_diff(_diff(17, 20), now=1.0)
    assert not books.on_diff(_diff(21, 21), now=1.0)
    assert books.on_diff(_diff(23, 25), now=2.0)  # 22 missed: the chain broke
    assert books.books[KEY].state is BookState.UNSYNCED and books.resyncs() == 1
    assert books.out_of_sync() == 1 and books.oldest_out_of_sync_s(now=5.0) == 3.0


def test_a_snapshot_older_than_the_buffer_or_a_broken_buffer_is_asked_again() -> None:
    books = BookSync("blue")
    books.on_diff(_diff(10, 12), now=0.0)
    books.requesting(KEY)
    books.on_diff(_diff(20, 25), now=0.1)
    assert books.on_snapshot(KEY, Snapshot(18, [], []), 1) == (SnapshotOutcome.TOO_OLD, {})
    books.requesting(KEY)
    books.on_diff(_diff(26, 27), now=0.2)
    books.on_diff(_diff(30, 31), now=0.3)  # 28..29 missing inside the buffer
    assert books.on_snapshot(KEY, Snapshot(26, [], []), 1)[0] is SnapshotOutcome.BROKEN
    assert books.books[KEY].state is BookState.UNSYNCED


def test_snapshot_answers_are_checked() -> None:
    good = parse_snapshot(b'{"lastUpdateId": 5, "bids": [["1.5", "2"]], "asks": []}')
    assert good == Snapshot(5, [("1.5", "2")], [])
    for bad in (b"{", b"[]", b'{"bids": [], "asks": []}', b'{"lastUpdateId": 1, "bids": [["x", "1"]], "asks": []}',
                b'{"lastUpdateId": 1, "bids": [[1.5, "1"]], "asks": []}', b'{"lastUpdateId": true, "bids": [], '
                b'"asks": []}'):
        assert isinstance(parse_snapshot(bad), str), bad


def _rebuild(record: dict[str, Any], diffs: list[Event]) -> dict[str, list[dict[str, str]]]:
    """What a consumer does (docs/consumers.md): the snapshot, then the diffs newer than it, chained."""
    bids = {Decimal(level["price"]): (level["price"], level["quantity"]) for level in record["bids"]}
    asks = {Decimal(level["price"]): (level["price"], level["quantity"]) for level in record["asks"]}
    last = record["last_update_id"]
    first = True
    for diff in diffs:
        if diff.last_id <= last:
            continue
        assert diff.first_id <= last + 1 if first else diff.first_id == last + 1, "the chain broke"
        apply_levels(bids, diff.record["bids"])
        apply_levels(asks, diff.record["asks"])
        last, first = diff.last_id, False
    return {"bids": sorted_levels(bids, bids=True), "asks": sorted_levels(asks, bids=False)}


def test_differential_a_rebuilt_book_equals_the_exchanges_book() -> None:
    """The simulator's market generates trades and book changes; its depth diffs go through the book sync
    exactly as a connection would deliver them; snapshots are taken from its live book at random moments
    while diffs are buffered. After each snapshot, snapshot + later diffs equals the market's own book."""
    rng = random.Random(3)
    advanced = compared = 0
    for round_ in range(60):
        market = SymbolMarket("btcusdt", seed=round_)
        books = BookSync("blue")
        now_ms = 1_000_000
        produced: list[Event] = []
        record: dict[str, Any] | None = None
        after: list[Event] = []
        wanted = False
        taken: dict[str, Any] | None = None
        for _tick in range(rng.randint(30, 80)):
            now_ms += rng.choice((20, 50, 100, 150))
            market.generate(now_ms, rng.randint(0, 6))
            due = market.depth_due(now_ms)
            if due is not None:
                first, last, parsed, _ = depth(json.loads(due.payload), now_ms, "blue")
                event = Event(KEY, "btcusdt", "depth", first, last, parsed, 0)
                produced.append(event)
                if record is not None:
                    after.append(event)
                wanted = books.on_diff(event, now=now_ms / 1000) or wanted
            book = books.books.get(KEY)
            if book is None:  # no diff yet
                continue
            if wanted and book.state is BookState.UNSYNCED and rng.random() < 0.3:
                books.requesting(KEY)
                taken = None
            if book.state is BookState.REQUESTED:
                # The exchange takes the snapshot some time after the request, and its answer arrives later
                # still, after more diffs were buffered: the snapshot is older than those.
                if taken is None and rng.random() < 0.5:
                    taken = market.book()
                elif taken is not None and rng.random() < 0.4:
                    answer = parse_snapshot(json.dumps(taken).encode())
                    assert not isinstance(answer, str)
                    outcome, produced_record = books.on_snapshot(KEY, answer, now_ms)
                    advanced += produced_record.get("last_update_id", 0) > answer.last_update_id
                    if outcome is SnapshotOutcome.PRODUCE:
                        record, after, wanted = produced_record, [], False
        if record is None:
            continue
        # The market's book includes changes its next diff will carry: publish it, then compare.
        final = market.depth_due(now_ms + 200)
        if final is not None:
            first, last, parsed, _ = depth(json.loads(final.payload), now_ms, "blue")
            after.append(Event(KEY, "btcusdt", "depth", first, last, parsed, 0))
        truth = market.book()
        rebuilt = _rebuild(record, after)
        assert rebuilt["bids"] == [{"price": p, "quantity": q} for p, q in truth["bids"]], round_
        assert rebuilt["asks"] == [{"price": p, "quantity": q} for p, q in truth["asks"]], round_
        compared += 1
    assert compared >= 30 and advanced >= 10, (compared, advanced)  # the rounds did exercise the procedure
