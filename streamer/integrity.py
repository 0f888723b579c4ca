"""Per-stream sequence tracking: gaps are counted, duplicates dropped (pure logic, no I/O).

Each stream key ("btcusdt@trade", kinds.stream_key) carries ids that Binance makes contiguous: trade `t`,
aggTrade `a`, depth `U..u` (each event starts at the previous `u` + 1). bookTicker `u` shares the order book's
update-id space, so it only increases: there we drop what is not newer and never report gaps (the `contiguous`
column of the stream-kind table, streamer/kinds.py).

The tracker is what makes connection overlap exact: during a make-before-break rotation both connections
deliver the same messages for a while; everything at or below the last accepted id is a duplicate and dropped.

The tracker owns all gap accounting: the pipeline, the connection routing and the blue-green handover call
its methods (`accept`, `handover_gap`, `skip_to`) and read its answers; nothing else writes a StreamState.
Whoever repairs gaps (streamer/repair.py) is told of each one as it is counted (`on_gap`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamer.kinds import KINDS, stream_key
from streamer.parse import Event

ACCEPT = 0
DUPLICATE = 1


@dataclass
class StreamState:
    """What one stream key has seen. Plain ints: the metrics collector reads them at scrape time."""

    key: str
    symbol: str
    stream: str
    contiguous: bool
    last_id: int | None = None
    accepted: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0


# Told of every gap as it is counted: the stream's state, the first missing id and how many are missing.
GapListener = Callable[[StreamState, int, int], None]


class SequenceTracker:
    def __init__(self) -> None:
        self.states: dict[str, StreamState] = {}
        self.last_gap: tuple[str, int, int] | None = None  # stream key, first missing id, count (for logs)
        self.on_gap: GapListener | None = None

    def state(self, key: str, symbol: str, stream: str) -> StreamState:
        state = self.states.get(key)
        if state is None:
            state = StreamState(key, symbol, stream, KINDS[stream].contiguous)
            self.states[key] = state
        return state

    def track(self, symbol: str, stream: str) -> StreamState:
        """The state of a configured stream, created before its first event (so its metrics start at 0)."""
        return self.state(stream_key(symbol, stream), symbol, stream)

    def last_id(self, key: str) -> int | None:
        state = self.states.get(key)
        return None if state is None else state.last_id

    def received_last(self) -> dict[str, int]:
        """The last accepted id per stream key (streams without an event yet are left out)."""
        return {key: s.last_id for key, s in self.states.items() if s.last_id is not None}

    def accept(self, event: Event) -> bool:
        """True for an event to pass on; False for a duplicate (dropped). Gaps are counted on the way."""
        state = self.states.get(event.key)
        if state is None:
            state = self.state(event.key, event.symbol, event.stream)
        return self.check(state, event.first_id, event.last_id) == ACCEPT

    def check(self, state: StreamState, first_id: int, last_id: int) -> int:
        """ACCEPT (and advance) or DUPLICATE (drop). A jump past last + 1 is accepted and counted as a gap."""
        previous = state.last_id
        if previous is None:
            state.last_id = last_id
            state.accepted += 1
            return ACCEPT
        if last_id <= previous:
            state.duplicates += 1
            return DUPLICATE
        if state.contiguous and first_id > previous + 1:
            self._count_gap(state, previous + 1, first_id - previous - 1)
        state.last_id = last_id
        state.accepted += 1
        return ACCEPT

    def handover_gap(self, key: str, after: int, first_id: int) -> int:
        """A blue-green handover: the other instance produced up to `after`, this one resumes at `first_id`.
        Returns the ids missing in between (0 when none, or when the stream's ids are not contiguous), counted
        as a gap of this stream."""
        state = self.states.get(key)
        if state is None or not state.contiguous or first_id <= after + 1:
            return 0
        missing = first_id - after - 1
        self._count_gap(state, after + 1, missing)
        return missing

    def skip_to(self, key: str, last_id: int) -> None:
        """Treat everything up to `last_id` as already seen (the other instance of a handover produced it):
        events at or below it that arrive later are duplicates."""
        state = self.states.get(key)
        if state is not None and (state.last_id is None or state.last_id < last_id):
            state.last_id = last_id

    def _count_gap(self, state: StreamState, first_missing: int, missing: int) -> None:
        state.gaps += 1
        state.missing += missing
        self.last_gap = (state.key, first_missing, missing)
        if self.on_gap is not None:
            self.on_gap(state, first_missing, missing)

    def totals(self) -> dict[str, int]:
        return {
            "accepted": sum(s.accepted for s in self.states.values()),
            "duplicates": sum(s.duplicates for s in self.states.values()),
            "gaps": sum(s.gaps for s in self.states.values()),
            "missing": sum(s.missing for s in self.states.values()),
        }
