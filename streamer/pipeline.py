"""The data path after the sockets: integrity → (handover gate) → Avro → Kafka.

`deliver(event)` is called by the source for every market-data event of the connection that owns its stream.
Duplicates are dropped by the sequence tracker; accepted events are serialized and handed to the sink.

Gap repair (streamer/repair.py): the tracker tells the pipeline of every gap; a trade or aggTrade gap is
opened in the repairer, which hands the missed ids back (`produce_repaired`: header `k2-source: rest`).
Ordering: while a stream has a gap under repair, its newer live events are held (at most `hold_s` seconds and
HOLD_MAX_EVENTS events), so the repaired ids reach Kafka before them and ids stay in order per key; a repair
slower than that releases them, and the repaired ids land later, out of order.

Handover (blue-green, issue 5): in *standby* an instance connects, tracks sequences and keeps the newest
events per stream in a bounded buffer without producing. `standby()` on a producing instance stops producing,
waits until Kafka has acknowledged everything and returns the last produced id per stream ("positions").
`release(after=positions)` on the standby instance drops buffered events up to those ids, produces the rest
and goes on producing: per stream, one instance stops after id N and the other starts at N + 1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamer.books import BookSync
from streamer.integrity import SequenceTracker, StreamState
from streamer.kinds import DEPTH_SNAPSHOT, KINDS
from streamer.parse import Event
from streamer.repair import Repairer
from streamer.serialize import RecordSerializer
from streamer.sink import KafkaSink
from streamer.snapshots import Snapshotter

log = logging.getLogger(__name__)

# The Kafka header (and its value) a record repaired from Binance's REST history carries; live ones carry none.
SOURCE_HEADER = "k2-source"
REST_SOURCE = b"rest"
# At most this many live events of one stream wait for its repair; more release them at once.
HOLD_MAX_EVENTS = 10_000


class Pipeline:
    def __init__(
        self,
        tracker: SequenceTracker,
        serializer: RecordSerializer,
        sink: KafkaSink,
        standby: bool = False,
        standby_buffer_max: int = 200_000,
        expected_keys: int = 1,
        metrics: Any = None,
        hold_s: float = 0.0,
    ) -> None:
        self.tracker = tracker
        self.serializer = serializer
        self.sink = sink
        self.metrics = metrics
        self.standby = standby
        # When the current standby began (monotonic), None while producing: /readyz flags a forgotten standby.
        self.standby_since: float | None = time.monotonic() if standby else None
        self.produced_last: dict[str, int] = {}
        self.produced = 0
        self._per_key_buffer = max(100, standby_buffer_max // max(1, expected_keys))
        self._standby_buffers: dict[str, deque[Event]] = {}
        self._keys: dict[str, bytes] = {}
        self.repairer: Repairer | None = None  # set by attach_repairer
        self.hold_s = hold_s
        self._held: dict[str, deque[Event]] = {}  # stream key -> live events waiting for its repair
        self._books: BookSync | None = None  # set by attach_books
        self._snapshots: Snapshotter | None = None  # takes the snapshots the books want
        tracker.on_gap = self._gap_opened
        self._set_standby_gauge()

    def attach_books(self, books: BookSync, snapshotter: Snapshotter) -> None:
        """Follow every produced depth diff's chain from now on; books that want a snapshot get one."""
        self._books = books
        self._snapshots = snapshotter

    def produce_snapshot(self, record: dict[str, Any]) -> None:
        """An order-book snapshot (streamer/books.py), keyed by symbol like the diffs it precedes."""
        self.sink.produce(
            self.serializer.topics[DEPTH_SNAPSHOT.name],
            self.serializer.encode(DEPTH_SNAPSHOT.name, record),
            self._key(record["symbol"]),
            [(DEPTH_SNAPSHOT.id_field, str(record["last_update_id"]).encode())],
        )
        self.produced += 1

    def attach_repairer(self, repairer: Repairer) -> None:
        """Repair trade and aggTrade gaps from now on (the tracker reports each gap to `_gap_opened`)."""
        self.repairer = repairer

    def _set_standby_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.g(self.metrics.handover_standby).set(1 if self.standby else 0)

    def deliver(self, event: Event) -> None:
        if not self.tracker.accept(event):
            return  # duplicate
        if self.standby:
            self._buffer(event)
        elif self._held and event.key in self._held:
            self._hold(event)
        else:
            self._produce(event)
            books = self._books
            if books is not None and event.stream == "depth" and books.on_diff(event, time.monotonic()):
                assert self._snapshots is not None
                self._snapshots.want(event.key)  # never synced, or its chain just broke

    # ---- gap repair -------------------------------------------------------------------------------------
    def _gap_opened(self, state: StreamState, first: int, count: int) -> None:
        repairer = self.repairer
        if KINDS[state.stream].history is None:
            return  # not repairable from REST (a depth book resyncs from a new snapshot instead)
        if repairer is None:  # K2_GAP_REPAIR=false: a gap's ids are lost at once
            if self.metrics is not None:
                self.metrics.on_gap_unrepaired(state.stream, count)
            return
        repairer.open(state, first, count)
        if self.hold_s > 0 and not self.standby and state.key not in self._held:
            held: deque[Event] = deque()
            self._held[state.key] = held
            asyncio.get_running_loop().call_later(self.hold_s, self._hold_expired, state.key, held)

    def _hold(self, event: Event) -> None:
        held = self._held[event.key]
        held.append(event)
        if len(held) >= HOLD_MAX_EVENTS:
            log.warning("%s: %d live events waited for its repair; releasing them (repaired ids will follow out "
                        "of order)", event.key, len(held))
            self.release_held(event.key)

    def _hold_expired(self, key: str, held: deque[Event]) -> None:
        if self._held.get(key) is held:
            log.warning("%s: its repair took longer than the hold (%.1f s); releasing %d live events (repaired ids "
                        "will follow out of order)", key, self.hold_s, len(held))
            self.release_held(key)

    def release_held(self, key: str) -> None:
        """Produce the live events of `key` that waited for its repair (the repaired ids went first)."""
        held = self._held.pop(key, None)
        while held:
            self._produce(held.popleft())

    def produce_repaired(self, event: Event, on_acked: Callable[[bool], None]) -> None:
        """A missed id fetched from REST: same topic, key, schema and id header, plus `k2-source: rest`."""
        stream = event.stream
        self.sink.produce(
            self.serializer.topics[stream],
            self.serializer.encode(stream, event.record),
            self._key(event.record["symbol"]),
            [(KINDS[stream].id_field, str(event.last_id).encode()), (SOURCE_HEADER, REST_SOURCE)],
            on_acked=on_acked,
        )
        self.produced += 1

    def _key(self, symbol: str) -> bytes:
        key = self._keys.get(symbol)
        if key is None:
            key = self._keys[symbol] = symbol.encode()
        return key

    def _buffer(self, event: Event) -> None:
        buffer = self._standby_buffers.get(event.key)
        if buffer is None:
            buffer = self._standby_buffers[event.key] = deque(maxlen=self._per_key_buffer)
        buffer.append(event)

    def _produce(self, event: Event) -> None:
        stream = event.stream
        record = event.record
        key = self._keys.get(record["symbol"])
        if key is None:
            key = self._keys[record["symbol"]] = record["symbol"].encode()
        self.sink.produce(
            self.serializer.topics[stream],
            self.serializer.encode(stream, record),
            key,
            # The event's id (trade id for trades) in a header, so consumers can dedupe without decoding Avro.
            [(KINDS[stream].id_field, str(event.last_id).encode())],
            stream, record["event_time"], record["ingestion_time"],
        )
        self.produced_last[event.key] = event.last_id
        self.produced += 1

    # ---- handover -----------------------------------------------------------------------------------
    async def enter_standby(self, flush_timeout_s: float) -> dict[str, Any]:
        """Stop producing; wait until Kafka has it all; report the last produced id per stream, and the gaps
        still under repair (`repairs`), which the instance taking over repairs instead of this one."""
        # Held live events go out now (this instance produced up to them); open repairs are handed over.
        repairs = self.repairer.hand_over() if self.repairer is not None else {}
        was_standby = self.standby
        self.standby = True
        if not was_standby:
            self.standby_since = time.monotonic()
        self._set_standby_gauge()
        flushed = await self.sink.wait_delivered(flush_timeout_s)
        if not flushed:
            log.error("handover: Kafka did not acknowledge %d messages within %.1f s", self.sink.buffered(),
                      flush_timeout_s)
        else:
            log.info("handover: standby (was %s); positions %s", "standby" if was_standby else "active",
                     self.produced_last)
        return {
            "mode": "standby",
            "flushed": flushed,
            "unacknowledged": self.sink.buffered(),
            "produce_errors": self.sink.errors,
            "positions": dict(self.produced_last),
            "repairs": repairs,
        }

    def release(self, after: dict[str, int] | None, repairs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Produce buffered events newer than `after` (per stream key) and go on producing; repair the gaps the
        other instance handed over (`repairs`, as its standby report gives them)."""
        after = after or {}
        if self.repairer is not None:
            for key, last in after.items():  # the other instance produced these: not missing here
                self.repairer.forget_through(key, last)
            for key, item in (repairs or {}).items():
                self.repairer.adopt(key, item["symbol"], item["stream"], [(a, b) for a, b in item["ranges"]])
            self.repairer.resume()
        report: dict[str, Any] = {}
        for key, buffer in self._standby_buffers.items():
            start_after = after.get(key)
            dropped = 0
            if start_after is not None:
                while buffer and buffer[0].last_id <= start_after:
                    buffer.popleft()
                    dropped += 1
            gap = 0
            if start_after is not None and buffer:
                gap = self.tracker.handover_gap(key, start_after, buffer[0].first_id)
                if gap:
                    log.error("handover: %s has a gap of %d ids after %d (buffer starts at %d)", key, gap,
                              start_after, buffer[0].first_id)
            first = buffer[0].first_id if buffer else None
            produced = len(buffer)
            while buffer:
                self._produce(buffer.popleft())
            report[key] = {"after": start_after, "dropped": dropped, "first_produced": first,
                           "produced": produced, "gap": gap}
        # Events at or below a handed-over position that arrive later (this instance lagging) are duplicates.
        for key, start_after in after.items():
            self.tracker.skip_to(key, start_after)
        self._standby_buffers.clear()
        self.standby = False
        self.standby_since = None
        self._set_standby_gauge()
        log.info("handover: released, producing; %s", report)
        return {"mode": "active", "streams": report}

    def standby_seconds(self) -> float | None:
        """How long this instance has been in standby, or None while it produces."""
        return None if self.standby_since is None else time.monotonic() - self.standby_since

    def positions(self) -> dict[str, Any]:
        return {
            "mode": "standby" if self.standby else "active",
            "produced_last": dict(self.produced_last),
            "received_last": self.tracker.received_last(),
            "buffered": {k: len(b) for k, b in self._standby_buffers.items()},
            "unacknowledged": self.sink.buffered(),
        }
