"""Order-book sync for depth streams: snapshots a consumer can rebuild exact books from (pure: time is a parameter).

Binance's documented local book procedure, per `<symbol>@depth@100ms`: buffer the diffs, fetch
`GET /api/v3/depth` (`lastUpdateId` L), fetch again if L is older than the first buffered diff (L < U - 1),
drop buffered diffs with u <= L; the first one applied has U <= L + 1 <= u, every next one U == previous u + 1;
on any break, start again from a new snapshot.

Here the diffs are never held back: every diff goes to `<prefix>.depth` as it arrives (the topic stays complete
and timely). A book buffers only while its snapshot request is under way; when the answer comes, the buffered
diffs newer than L are applied to it, and the *advanced* snapshot is produced to `<prefix>.depth_snapshots`:
its `last_update_id` is the last diff already produced, so the first diff produced after it is the first that
chains from it. A consumer reads a symbol's latest snapshot, then the depth topic from that snapshot's Kafka
timestamp, skips diffs with u <= last_update_id, and applies the rest (docs/consumers.md).

After a snapshot the book only checks the chain (no levels are kept); a break (a diff whose U is not the
previous u + 1) marks it out of sync and asks for a new snapshot. `BookSync` is the one owner of every book's
state; the snapshotter (streamer/snapshots.py) and the pipeline call its methods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from streamer.parse import Event
from streamer.payload import EXCHANGE

# Diffs buffered while one snapshot request is under way, at most (a REST round trip holds a few at 10/s).
BUFFER_MAX = 1_000


class BookState(Enum):
    UNSYNCED = "unsynced"  # no snapshot yet, or the chain broke: a snapshot is wanted
    REQUESTED = "requested"  # a snapshot request is under way: diffs are buffered
    SYNCED = "synced"  # a snapshot was produced and every diff since chains from it


@dataclass
class Book:
    key: str
    symbol: str
    state: BookState = BookState.UNSYNCED
    unsynced_since: float = 0.0  # monotonic: when it last went out of sync (the snapshotter serves oldest first)
    last_id: int | None = None  # SYNCED: the last update id the chain has reached
    first_after_snapshot: bool = False  # SYNCED: the next diff is the first after a snapshot (U <= last + 1 <= u)
    buffer: list[Event] = field(default_factory=list)  # REQUESTED: diffs since the request was made
    resyncs: int = 0  # times the chain broke after a sync


@dataclass(frozen=True)
class Snapshot:
    """A parsed GET /api/v3/depth answer: levels as exact (price, quantity) strings, best first."""

    last_update_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class SnapshotOutcome(Enum):
    PRODUCE = "produce"  # a record to produce (the advanced snapshot); the book is SYNCED
    TOO_OLD = "too_old"  # the snapshot is older than the first buffered diff: ask again
    BROKEN = "broken"  # the buffered diffs do not chain among themselves: ask again


def parse_snapshot(body: bytes) -> Snapshot | str:
    """A depth answer, or why it cannot be used. Never raises."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return f"not JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return "not an object"
    last = data.get("lastUpdateId")
    if type(last) is not int or last < 0:
        return "no integer lastUpdateId"
    sides = []
    for name in ("bids", "asks"):
        levels = data.get(name)
        if not isinstance(levels, list):
            return f"no {name} list"
        side = []
        for level in levels:
            if not (isinstance(level, list) and len(level) >= 2 and isinstance(level[0], str)
                    and isinstance(level[1], str) and _decimal(level[0]) is not None
                    and _decimal(level[1]) is not None):
                return f"a {name} level is not [price, quantity] of decimal strings"
            side.append((level[0], level[1]))
        sides.append(side)
    return Snapshot(last, sides[0], sides[1])


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


def apply_levels(side: dict[Decimal, tuple[str, str]], levels: list[dict[str, str]]) -> None:
    """Apply a diff's levels to one side of a book (price -> exact strings); quantity 0 removes the level."""
    for level in levels:
        price = Decimal(level["price"])
        if Decimal(level["quantity"]) == 0:
            side.pop(price, None)
        else:
            side[price] = (level["price"], level["quantity"])


def book_sides(snapshot: Snapshot) -> tuple[dict[Decimal, tuple[str, str]], dict[Decimal, tuple[str, str]]]:
    return ({Decimal(p): (p, q) for p, q in snapshot.bids}, {Decimal(p): (p, q) for p, q in snapshot.asks})


def sorted_levels(side: dict[Decimal, tuple[str, str]], bids: bool) -> list[dict[str, str]]:
    """Levels best first (bids: highest price first), as the depth record's PriceLevel dicts."""
    return [{"price": p, "quantity": q} for _, (p, q) in sorted(side.items(), reverse=bids)]


class BookSync:
    """The sync state of every depth book of this process (pure: the caller passes the time)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.books: dict[str, Book] = {}

    def book(self, key: str, symbol: str, now: float) -> Book:
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = Book(key, symbol, unsynced_since=now)
        return book

    def on_diff(self, event: Event, now: float) -> bool:
        """Follow one diff (already produced to the depth topic). True when the book needs a snapshot now
        (it just broke, or never had one): the caller tells the snapshotter."""
        book = self.book(event.key, event.symbol, now)
        if book.state is BookState.REQUESTED:
            if len(book.buffer) < BUFFER_MAX:
                book.buffer.append(event)
            return False
        if book.state is BookState.UNSYNCED:
            return True
        assert book.last_id is not None
        first, last = event.first_id, event.last_id
        if book.first_after_snapshot:
            if last <= book.last_id:  # already inside the snapshot
                return False
            chains = first <= book.last_id + 1
        else:
            chains = first == book.last_id + 1
        if chains:
            book.last_id = last
            book.first_after_snapshot = False
            return False
        book.state = BookState.UNSYNCED
        book.unsynced_since = now
        book.resyncs += 1
        return True

    def requesting(self, key: str) -> Book:
        """A snapshot request for `key` is about to be sent: buffer its diffs from now on."""
        book = self.books[key]
        book.state = BookState.REQUESTED
        book.buffer = []
        return book

    def request_failed(self, key: str) -> None:
        book = self.books[key]
        book.state = BookState.UNSYNCED
        book.buffer = []

    def on_snapshot(self, key: str, snapshot: Snapshot, fetched_ms: int) -> tuple[SnapshotOutcome, dict[str, Any]]:
        """The answer to `key`'s request: the record to produce (PRODUCE: the book is SYNCED), or ask again."""
        book = self.books[key]
        buffered, book.buffer = book.buffer, []
        newer = [event for event in buffered if event.last_id > snapshot.last_update_id]
        if buffered and snapshot.last_update_id < buffered[0].first_id - 1:
            book.state = BookState.UNSYNCED
            return SnapshotOutcome.TOO_OLD, {}
        bids, asks = book_sides(snapshot)
        last = snapshot.last_update_id
        for index, event in enumerate(newer):
            chains = event.first_id <= last + 1 if index == 0 else event.first_id == last + 1
            if not chains:
                book.state = BookState.UNSYNCED
                return SnapshotOutcome.BROKEN, {}
            apply_levels(bids, event.record["bids"])
            apply_levels(asks, event.record["asks"])
            last = event.last_id
        book.state = BookState.SYNCED
        book.last_id = last
        book.first_after_snapshot = True
        record = {
            "exchange": EXCHANGE,
            "symbol": book.symbol.upper(),
            "last_update_id": last,
            "bids": sorted_levels(bids, bids=True),
            "asks": sorted_levels(asks, bids=False),
            "fetched_time": fetched_ms,
            "instance": self.instance,
        }
        return SnapshotOutcome.PRODUCE, record

    def resyncs(self) -> int:
        return sum(book.resyncs for book in self.books.values())

    def in_sync(self) -> int:
        return sum(1 for book in self.books.values() if book.state is BookState.SYNCED)

    def out_of_sync(self) -> int:
        return sum(1 for book in self.books.values() if book.state is not BookState.SYNCED)

    def oldest_out_of_sync_s(self, now: float) -> float:
        """How long the book longest out of sync has been so (0 when all are in sync)."""
        return max((now - b.unsynced_since for b in self.books.values() if b.state is not BookState.SYNCED),
                   default=0.0)
