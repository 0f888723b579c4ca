"""The data path after the sockets: integrity → (handover gate) → Avro → Kafka.

`deliver(event)` is called by the source for every market-data event of the connection that owns its stream.
Duplicates are dropped by the sequence tracker; accepted events are serialized and handed to the sink.

Handover (blue-green, issue 5): in *standby* an instance connects, tracks sequences and keeps the newest
events per stream in a bounded buffer without producing. `standby()` on a producing instance stops producing,
waits until Kafka has acknowledged everything and returns the last produced id per stream ("positions").
`release(after=positions)` on the standby instance drops buffered events up to those ids, produces the rest
and goes on producing: per stream, one instance stops after id N and the other starts at N + 1.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from streamer.integrity import SequenceTracker
from streamer.kinds import KINDS
from streamer.parse import Event
from streamer.serialize import RecordSerializer
from streamer.sink import KafkaSink

log = logging.getLogger(__name__)


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
        self._set_standby_gauge()

    def _set_standby_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.g(self.metrics.handover_standby).set(1 if self.standby else 0)

    def deliver(self, event: Event) -> None:
        if not self.tracker.accept(event):
            return  # duplicate
        if self.standby:
            self._buffer(event)
        else:
            self._produce(event)

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
        """Stop producing; wait until Kafka has it all; report the last produced id per stream."""
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
        }

    def release(self, after: dict[str, int] | None) -> dict[str, Any]:
        """Produce buffered events newer than `after` (per stream key) and go on producing."""
        after = after or {}
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
