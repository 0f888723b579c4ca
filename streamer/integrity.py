"""Per-stream sequence tracking: gaps are counted, duplicates dropped (pure logic, no I/O).

Each stream key ("btcusdt@trade") carries ids that Binance makes contiguous: trade `t`, aggTrade `a`, depth
`U..u` (each event starts at the previous `u` + 1). bookTicker `u` shares the order book's update-id space, so
it only increases: there we drop what is not newer and never report gaps.

The tracker is what makes connection overlap exact: during a make-before-break rotation both connections
deliver the same messages for a while; everything at or below the last accepted id is a duplicate and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTIGUOUS_STREAMS = frozenset({"trade", "aggTrade", "depth"})

ACCEPT = 0
DUPLICATE = 1


@dataclass
class StreamState:
    """What one stream key has seen. Plain ints: the metrics collector reads them at scrape time."""

    symbol: str
    stream: str
    contiguous: bool
    last_id: int | None = None
    accepted: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0


class SequenceTracker:
    def __init__(self) -> None:
        self.states: dict[str, StreamState] = {}
        self.last_gap: tuple[str, int, int] | None = None  # key, first missing id, count (for logs)

    def state(self, key: str, symbol: str, stream: str) -> StreamState:
        state = self.states.get(key)
        if state is None:
            state = StreamState(symbol, stream, stream in CONTIGUOUS_STREAMS)
            self.states[key] = state
        return state

    def last_id(self, key: str) -> int | None:
        state = self.states.get(key)
        return None if state is None else state.last_id

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
            missing = first_id - previous - 1
            state.gaps += 1
            state.missing += missing
            self.last_gap = (f"{state.symbol}@{state.stream}", previous + 1, missing)
        state.last_id = last_id
        state.accepted += 1
        return ACCEPT

    def totals(self) -> dict[str, int]:
        return {
            "accepted": sum(s.accepted for s in self.states.values()),
            "duplicates": sum(s.duplicates for s in self.states.values()),
            "gaps": sum(s.gaps for s in self.states.values()),
            "missing": sum(s.missing for s in self.states.values()),
        }
