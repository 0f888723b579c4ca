"""The asyncio side of order-book sync (streamer/books.py): depth snapshots fetched under the shared REST budget.

Books that want a snapshot (never synced, or their chain broke) wait in one queue; the book out of sync longest
goes first, so a whole market's first snapshots are taken one after the other at the pace the weight budget
allows (GET /api/v3/depth costs 5 at the default limit of 100 levels: 600 snapshots a minute on half of
Binance's 6,000). The book buffers its diffs from the moment the request is sent (`on_send`), and the answer
becomes an advanced snapshot record (BookSync.on_snapshot) that `produce` writes to `<prefix>.depth_snapshots`.
A failed request, a bad answer or a snapshot older than the buffered diffs is retried after `retry_s`
(doubling, at most RETRY_MAX_S); nothing here holds a diff back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamer.books import BookSync, SnapshotOutcome, parse_snapshot
from streamer.rest import Endpoint, RestClient, RestError

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0


@dataclass
class Snapshotter:
    """Takes the snapshots `books` wants. `produce(record)` writes one snapshot record; `metrics` may be None."""

    books: BookSync
    rest: RestClient
    produce: Callable[[dict[str, Any]], None]
    limit: int = 100
    retry_s: float = 1.0
    metrics: Any = None
    _wanted: dict[str, float] = field(default_factory=dict, init=False, repr=False)  # key -> not before (monotonic)
    _retry: dict[str, float] = field(default_factory=dict, init=False, repr=False)  # key -> next back-off
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def want(self, key: str) -> None:
        """`key`'s book needs a snapshot (called by the pipeline; a key already waiting keeps its place)."""
        if key not in self._wanted:
            self._wanted[key] = 0.0
            self._wake.set()

    def waiting(self) -> int:
        return len(self._wanted)

    def _next(self, now: float) -> str | None:
        ready = [key for key, not_before in self._wanted.items() if not_before <= now]
        return min(ready, key=lambda key: self.books.books[key].unsynced_since, default=None)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            key = self._next(now)
            if key is None:
                self._wake.clear()
                later = min(self._wanted.values(), default=None)
                timeout = None if later is None else max(0.01, later - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            await self._take(key)

    async def _take(self, key: str) -> None:
        book = self.books.books[key]
        params = {"symbol": book.symbol.upper(), "limit": self.limit}
        try:
            body = await self.rest.get(Endpoint.DEPTH, params, on_send=lambda: self.books.requesting(key))
        except RestError as exc:
            self.books.request_failed(key)
            self._again(key, f"REST {exc.reason}", "error")
            return
        snapshot = parse_snapshot(body)
        if isinstance(snapshot, str):
            self.books.request_failed(key)
            if self.metrics is not None:
                self.metrics.on_rest_bad_answer(Endpoint.DEPTH.label)
            self._again(key, f"bad answer from depth: {snapshot}", "bad_answer")
            return
        outcome, record = self.books.on_snapshot(key, snapshot, int(time.time() * 1000))
        if outcome is not SnapshotOutcome.PRODUCE:
            why = ("older than the diffs buffered meanwhile" if outcome is SnapshotOutcome.TOO_OLD
                   else "the diffs buffered meanwhile do not chain")
            self._again(key, f"snapshot {snapshot.last_update_id} {why}", outcome.value)
            return
        self.produce(record)
        self._wanted.pop(key, None)
        self._retry.pop(key, None)
        if self.metrics is not None:
            self.metrics.on_depth_snapshot("produced")
        log.info("%s in sync from snapshot %d (advanced to %d by the diffs received while it was fetched)", key,
                 snapshot.last_update_id, record["last_update_id"])

    def _again(self, key: str, reason: str, outcome: str) -> None:
        wait = self._retry[key] = min(RETRY_MAX_S, self._retry.get(key, 0.0) * 2 or self.retry_s)
        self._wanted[key] = time.monotonic() + wait
        if self.metrics is not None:
            self.metrics.on_depth_snapshot(outcome)
        log.warning("depth snapshot of %s: %s; asking again in %.1f s", key, reason, wait)
