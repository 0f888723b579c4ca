"""Gap repair: what a trade or aggTrade stream missed, fetched from Binance's REST history and produced once.

Flow: the sequence tracker counts a gap (a jump in `t` or `a`, or a handover that resumed too late) and the
pipeline opens it here (`Repairer.open`). Workers page through the kind's history endpoint (`history` in
streamer/kinds.py) from the lowest missing id, `page_limit` ids a request, under the shared REST weight budget
(streamer/rest.py), and hand every missing id they get to the pipeline, which produces it with the Kafka
header `k2-source: rest` (same topic, key, schema and id header as a live record).

Exactly once: a gap's ids lie below its stream's last accepted id, so the live path drops them as duplicates
whatever connection brings them later; the repair path produces an id only when `RepairLedger.take` removes it
from the missing set. Every id has one owner, whichever path brings it: never twice.

Unrepaired: ids the history no longer serves (two answers in a row start above them: one alone could be a short
answer) and ids still missing at the deadline (`deadline_s` after the gap was seen: REST down, an IP ban, no
budget) are given up, logged with their ranges at ERROR and counted (binance_gap_unrepaired_messages_total). A
bad answer (not JSON, items that are not the asked ids, another market's history, an HTTP error) is logged,
counted and retried after `retry_s` (doubling, at most `RETRY_MAX_S`), within the deadline. Nothing here
blocks the live stream: ordering is the pipeline's hold.

`RepairLedger` and `check_page` are pure (time is a parameter); `Repairer` is the asyncio edge.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from streamer.integrity import StreamState
from streamer.kinds import KINDS
from streamer.parse import Event
from streamer.payload import InvalidPayload
from streamer.rest import RestClient, RestError

log = logging.getLogger(__name__)

Range = tuple[int, int]  # first and last id, both included
RETRY_MAX_S = 30.0
# Repairs under way at once (of different streams): the REST client sends one request at a time, so a second
# worker only has its request ready while the first one's answer is produced.
WORKERS = 2


@dataclass
class OpenGap:
    """The ids one stream key still misses."""

    key: str
    symbol: str
    stream: str
    missing: list[list[int]]  # ascending, disjoint [first, last]
    seen_at: float  # monotonic: when its oldest range was seen
    deadline: float  # monotonic: given up after this
    retry_at: float = 0.0  # monotonic: no request before this (after a failed one)
    retry_s: float = 0.0  # the next back-off (0: none yet)
    busy: bool = False  # a worker has a request in flight for it
    repaired: int = 0  # ids produced from REST
    given_up: int = 0  # ids reported unrepaired
    acks_pending: int = 0  # repaired ids produced, not yet acknowledged by Kafka
    unserved_once: bool = False  # an answer said its lowest ids are no longer served: confirmed by a second one
    closed: bool = False  # nothing left to repair (the ledger forgot it)

    @property
    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)

    @property
    def lowest(self) -> int:
        return self.missing[0][0]

    def ranges(self) -> list[Range]:
        return [(first, last) for first, last in self.missing]


class RepairLedger:
    """The missing ids of every stream key under repair (pure; the only writer of `gaps`)."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.gaps: dict[str, OpenGap] = {}

    def open(self, key: str, symbol: str, stream: str, first: int, count: int, now: float) -> OpenGap:
        """Ids first .. first + count - 1 are missing on `key` (merged with what it already misses)."""
        gap = self.gaps.get(key)
        if gap is None:
            gap = self.gaps[key] = OpenGap(key, symbol, stream, [], now, now + self.deadline_s)
        else:
            gap.deadline = max(gap.deadline, now + self.deadline_s)
        _add_range(gap.missing, first, first + count - 1)
        return gap

    def take(self, key: str, ident: int) -> bool:
        """True, once, for an id `key` misses (removed from the missing set); False for any other id."""
        gap = self.gaps.get(key)
        return gap is not None and _remove_id(gap.missing, ident)

    def give_up_below(self, key: str, ident: int) -> list[Range]:
        """Give up every missing id below `ident` (the history no longer serves them); returns their ranges."""
        gap = self.gaps.get(key)
        if gap is None:
            return []
        given_up = []
        while gap.missing and gap.missing[0][0] < ident:
            first, last = gap.missing[0]
            if last < ident:
                given_up.append((first, last))
                gap.missing.pop(0)
            else:
                given_up.append((first, ident - 1))
                gap.missing[0][0] = ident
        return given_up

    def give_up(self, key: str) -> list[Range]:
        gap = self.gaps.get(key)
        return gap.ranges() if gap is not None else []

    def close(self, key: str) -> OpenGap | None:
        """Forget `key` (repaired, or given up): its missing ids, if any, are the caller's to report."""
        return self.gaps.pop(key, None)

    def due(self, now: float) -> OpenGap | None:
        """The gap to work on next: not busy, past its retry time, seen first (the longest waiting)."""
        ready = [g for g in self.gaps.values() if not g.busy and g.missing and g.retry_at <= now]
        return min(ready, key=lambda g: g.seen_at, default=None)

    def expired(self, now: float) -> list[OpenGap]:
        return [g for g in self.gaps.values() if not g.busy and now >= g.deadline]

    def next_time(self) -> float | None:
        """The earliest monotonic time something becomes due (a retry or a deadline), if any waits."""
        times = [t for g in self.gaps.values() if not g.busy for t in (g.retry_at, g.deadline)]
        return min(times, default=None)

    def missing_total(self) -> int:
        return sum(g.count for g in self.gaps.values())


def _add_range(ranges: list[list[int]], first: int, last: int) -> None:
    """Insert [first, last] into ascending disjoint ranges, merging what touches or overlaps it."""
    index = bisect.bisect_left(ranges, [first, first])
    if index > 0 and ranges[index - 1][1] >= first - 1:
        index -= 1
        first = min(first, ranges[index][0])
    end = index
    while end < len(ranges) and ranges[end][0] <= last + 1:
        last = max(last, ranges[end][1])
        end += 1
    ranges[index:end] = [[first, last]]


def _remove_id(ranges: list[list[int]], ident: int) -> bool:
    index = bisect.bisect_right(ranges, [ident, 2**63]) - 1
    if index < 0 or not ranges[index][0] <= ident <= ranges[index][1]:
        return False
    first, last = ranges[index]
    pieces = [[first, ident - 1]] * (first < ident) + [[ident + 1, last]] * (ident < last)
    ranges[index:index + 1] = pieces
    return True


class Verdict(Enum):
    """What one history page says about the ids asked for."""

    GOOD = "good"  # starts at the asked id, consecutive ids
    NOT_SERVED = "not_served"  # starts above the asked id: the ids in between are no longer served
    BAD = "bad"  # not usable: not JSON, not a list, unparsable items, ids below the asked one or not consecutive


@dataclass
class Page:
    verdict: Verdict
    events: list[Event] = field(default_factory=list)
    first_id: int | None = None  # the first id the answer holds
    reason: str = ""  # why it is BAD


def check_page(body: bytes, asked_from: int, key: str, symbol: str, stream: str, received_ms: int,
               instance: str, last_seen: int | None = None) -> Page:
    """One history answer -> the events it holds and what it says about `asked_from`. Never raises.

    `last_seen`: the newest id the stream received live. An answer that starts above it cannot be this
    stream's history (the exchange served that id to us): it is BAD, not a sign that the asked ids are no
    longer served. History items carry no symbol, so this is how another market's answer is told apart."""
    history = KINDS[stream].history
    assert history is not None
    try:
        items = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return Page(Verdict.BAD, reason=f"not JSON ({type(exc).__name__})")
    if not isinstance(items, list):
        return Page(Verdict.BAD, reason="not a list")
    events = []
    upper = symbol.upper()
    for item in items:
        if not isinstance(item, dict):
            return Page(Verdict.BAD, reason="an item is not an object")
        try:
            first_id, last_id, record, _unknown = history.parse(item, upper, received_ms, instance)
        except InvalidPayload as exc:
            return Page(Verdict.BAD, reason=f"an item has {exc.kind} {exc.detail!r}")
        events.append(Event(key, symbol, stream, first_id, last_id, record, 0))
    if not events:
        return Page(Verdict.BAD, reason="no items at or after the asked id")
    ids = [event.first_id for event in events]
    if any(b != a + 1 for a, b in itertools.pairwise(ids)):
        return Page(Verdict.BAD, reason=f"ids not consecutive ({ids[0]} .. {ids[-1]}, {len(ids)} items)")
    if ids[0] < asked_from:
        return Page(Verdict.BAD, reason=f"starts at {ids[0]}, below the asked {asked_from}")
    if ids[0] > asked_from and last_seen is not None and ids[0] > last_seen:
        return Page(Verdict.BAD, reason=f"starts at {ids[0]}, above {last_seen}, the newest id this stream "
                                        "received: not its history")
    verdict = Verdict.GOOD if ids[0] == asked_from else Verdict.NOT_SERVED
    return Page(verdict, events, ids[0])


def parse_handed_over(value: Any) -> dict[str, dict[str, Any]]:
    """The `repairs` of a standby report (Repairer.hand_over), checked: {stream key: {"symbol": str, "stream":
    a repairable kind, "ranges": [[first, last], ...]}}. Raises ValueError naming what is wrong."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('"repairs" must map stream keys to {"symbol", "stream", "ranges"}')
    checked = {}
    for key, item in value.items():
        if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
            raise ValueError(f'"repairs"[{key!r}] must hold "symbol", "stream" and "ranges"')
        stream = item.get("stream")
        if stream not in KINDS or KINDS[stream].history is None or KINDS[stream].key(item["symbol"]) != key:
            raise ValueError(f'"repairs"[{key!r}]: {stream!r} is not the repairable stream of that key')
        ranges = item.get("ranges")
        if not isinstance(ranges, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(type(i) is int for i in r) and 0 <= r[0] <= r[1]
                for r in ranges):
            raise ValueError(f'"repairs"[{key!r}]["ranges"] must be [[first, last], ...] of ids')
        checked[key] = {"symbol": item["symbol"], "stream": stream, "ranges": ranges}
    return checked


def format_ranges(ranges: list[Range], limit: int = 10) -> str:
    shown = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges[:limit])
    return shown + (f" (+{len(ranges) - limit} more ranges)" if len(ranges) > limit else "")


@dataclass
class Repairer:
    """Repairs the gaps the pipeline opens. `produce(event, on_acked)` hands a repaired event to the pipeline;
    `closed(key)` tells it a key has nothing left to repair (its held events may go); `last_seen(key)` is the
    newest id the stream received live. `metrics` may be None."""

    rest: RestClient
    produce: Callable[[Event, Callable[[bool], None]], None]
    closed: Callable[[str], None]
    last_seen: Callable[[str], int | None]  # the newest id a stream key received live (the tracker's)
    instance: str
    deadline_s: float
    retry_s: float = 1.0
    page_limit: int = 1000
    metrics: Any = None
    ledger: RepairLedger = field(init=False)
    paused: bool = False  # a standby instance hands its gaps over instead of repairing them
    repaired: int = 0  # ids produced from REST, over the process's life
    unrepaired: int = 0  # ids given up
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ledger = RepairLedger(self.deadline_s)

    # ---- the pipeline's side (event loop) --------------------------------------------------------------
    def can_repair(self, stream: str) -> bool:
        return KINDS[stream].history is not None

    def open(self, state: StreamState, first: int, count: int) -> None:
        self.ledger.open(state.key, state.symbol, state.stream, first, count, time.monotonic())
        log.warning("repairing %s: %d id(s) from %d, from Binance's REST history", state.key, count, first)
        self._wake.set()

    def adopt(self, key: str, symbol: str, stream: str, ranges: list[Range]) -> None:
        """Gaps another instance handed over (blue-green handover): repaired here from now on."""
        now = time.monotonic()
        for first, last in ranges:
            self.ledger.open(key, symbol, stream, first, last - first + 1, now)
        self._wake.set()

    def hand_over(self) -> dict[str, dict[str, Any]]:
        """Stop repairing; every open gap as {key: {symbol, stream, ranges}} for the instance taking over."""
        self.paused = True
        handed = {key: {"symbol": g.symbol, "stream": g.stream, "ranges": [list(r) for r in g.ranges()]}
                  for key, g in self.ledger.gaps.items() if g.missing}
        for gap in list(self.ledger.gaps.values()):
            self._close(gap)
        return handed

    def forget_through(self, key: str, ident: int) -> None:
        """Ids up to `ident` are not missing after all (the other instance of a handover produced them)."""
        self.ledger.give_up_below(key, ident + 1)
        gap = self.ledger.gaps.get(key)
        if gap is not None and not gap.missing:
            self._close(gap)

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    def pending(self) -> int:
        return self.ledger.missing_total()

    def give_up_all(self, why: str) -> None:
        """Report every id still missing as unrepaired (the process stops)."""
        for gap in list(self.ledger.gaps.values()):
            self._give_up(gap, gap.ranges(), why)
            self._close(gap)

    # ---- workers -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker(), name=f"gap-repair-{i}") for i in range(WORKERS)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()

    async def _worker(self) -> None:
        while True:
            now = time.monotonic()
            for expired in self.ledger.expired(now):
                self._give_up(expired, expired.ranges(), f"not repaired by the deadline ({self.deadline_s:g} s "
                              "after it was seen)")
                self._close(expired)
            gap = None if self.paused else self.ledger.due(now)
            if gap is None:
                self._wake.clear()
                wake_at = self.ledger.next_time()
                timeout = None if wake_at is None else max(0.01, wake_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            gap.busy = True
            try:
                await self._one_page(gap)
            finally:
                gap.busy = False
            if not gap.missing and not gap.closed:
                self._close(gap)

    async def _one_page(self, gap: OpenGap) -> None:
        history = KINDS[gap.stream].history
        assert history is not None
        asked = gap.lowest
        params = {"symbol": gap.symbol.upper(), "fromId": asked, "limit": self.page_limit}
        try:
            body = await self.rest.get(history.endpoint, params)
        except RestError as exc:
            self._failed(gap, f"REST {exc.reason}")
            return
        page = check_page(body, asked, gap.key, gap.symbol, gap.stream, int(time.time() * 1000), self.instance,
                          self.last_seen(gap.key))
        if page.verdict is Verdict.BAD:
            if self.metrics is not None:
                self.metrics.on_rest_bad_answer(history.endpoint.label)
            self._failed(gap, f"bad answer from {history.endpoint.label}: {page.reason}")
            return
        if page.verdict is Verdict.NOT_SERVED and page.first_id is not None:
            if not gap.unserved_once:
                # A short answer looks the same as ids the history dropped: only a second one gives them up.
                gap.unserved_once = True
                if self.metrics is not None:
                    self.metrics.on_rest_bad_answer(history.endpoint.label)
                self._failed(gap, f"{history.endpoint.label} answered from {page.first_id}, above the asked {asked}; "
                             "asking again before reporting those ids lost")
                return
            self._give_up(gap, self.ledger.give_up_below(gap.key, page.first_id),
                          f"no longer served by {history.endpoint.label} (its answer starts at {page.first_id})")
        gap.retry_s = 0.0
        gap.unserved_once = False
        acked = self._acked_callback(gap)
        for event in page.events:
            if self.ledger.take(gap.key, event.first_id):
                gap.repaired += 1
                self.repaired += 1
                gap.acks_pending += 1
                self.produce(event, acked)
                if self.metrics is not None:
                    self.metrics.on_gap_repaired(gap.stream, 1)

    def _failed(self, gap: OpenGap, reason: str) -> None:
        gap.retry_s = min(RETRY_MAX_S, gap.retry_s * 2 if gap.retry_s else self.retry_s)
        gap.retry_at = time.monotonic() + gap.retry_s
        log.warning("repairing %s (%d id(s) missing from %d): %s; retrying in %.1f s", gap.key, gap.count,
                    gap.lowest, reason, gap.retry_s)

    def _give_up(self, gap: OpenGap, ranges: list[Range], why: str) -> None:
        if not ranges:
            return
        count = sum(last - first + 1 for first, last in ranges)
        gap.given_up += count
        self.unrepaired += count
        log.error("gap on %s NOT repaired: %d id(s) lost (%s): %s", gap.key, count, format_ranges(ranges), why)
        if self.metrics is not None:
            self.metrics.on_gap_unrepaired(gap.stream, count)

    def _close(self, gap: OpenGap) -> None:
        """Nothing left to repair on `gap.key`: the ledger forgets it and its held events may go."""
        self.ledger.close(gap.key)
        gap.closed = True
        self.closed(gap.key)
        self._observe_latency(gap)

    def _observe_latency(self, gap: OpenGap) -> None:
        """Gap seen -> its last repaired id acknowledged by Kafka, for gaps repaired whole."""
        if gap.closed and gap.acks_pending == 0 and gap.repaired and not gap.given_up and self.metrics is not None:
            self.metrics.on_gap_repair_seconds(time.monotonic() - gap.seen_at)

    def _acked_callback(self, gap: OpenGap) -> Callable[[bool], None]:
        loop = asyncio.get_running_loop()

        def acked(ok: bool) -> None:  # runs in the Kafka poll thread
            loop.call_soon_threadsafe(self._on_acked, gap, ok)

        return acked

    def _on_acked(self, gap: OpenGap, ok: bool) -> None:
        gap.acks_pending -= 1
        if not ok:  # Kafka refused it (the sink logs and counts that): it is not repaired after all
            gap.given_up += 1
        self._observe_latency(gap)
