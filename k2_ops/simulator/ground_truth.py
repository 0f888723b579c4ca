"""What the simulated exchange generated and what it sent on each connection.

Cheap and bounded:
- per (symbol, stream) series, the generated ids and exchange times live in two `array('q')`
  (16 bytes per message). A series keeps at most `max_per_series` entries; beyond that the oldest tenth
  is dropped at once (`dropped` counts them), so memory is at most 16 B x max_per_series x series
  (2,000,000 by default: 32 MB per series; 8 series for two symbols);
- a connection's sent messages are recorded as ranges of positions in those series ([start, end) of
  the absolute generation index). A connection receives every message of a subscribed stream while it
  is subscribed and not stalled, so a range only breaks on (un)subscribe, stall or pause: a few ints per
  connection, whatever the rate. Closed connections are kept up to a bound set by the server.

"Sent" means handed to the connection's (TLS) transport, in order; frames still queued in the simulator
when a connection closes (a slow reader) are not counted. So after a close handshake, what a client
received is exactly `sent_ids` for its connection.

Ids: trade `t`, aggTrade `a`, bookTicker and depth `u`. Times: the event time `E` in ms (bookTicker has
no `E`; its time is when it was generated, or the recording's receive time in replay).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable

from .market import STREAM_KINDS

STREAM_ALIASES = {"depth": "depth@100ms"}


def normalise_stream(stream: str) -> str:
    stream = STREAM_ALIASES.get(stream, stream)
    if stream not in STREAM_KINDS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {STREAM_KINDS}")
    return stream


class Series:
    """Generated ids and times of one (symbol, stream), in generation order."""

    __slots__ = ("dropped", "ids", "last_time", "max_len", "monotonic", "times")

    def __init__(self, max_len: int) -> None:
        self.ids = array("q")
        self.times = array("q")
        self.dropped = 0  # absolute index of ids[0]
        self.max_len = max_len
        self.monotonic = True
        self.last_time = -(2**62)

    def append(self, ident: int, time_ms: int) -> int:
        """Record one message; returns its absolute generation index."""
        if time_ms < self.last_time:
            self.monotonic = False
        self.last_time = time_ms
        self.ids.append(ident)
        self.times.append(time_ms)
        if len(self.ids) > self.max_len:
            cut = len(self.ids) - self.max_len + self.max_len // 10
            del self.ids[:cut]
            del self.times[:cut]
            self.dropped += cut
        return self.dropped + len(self.ids) - 1

    @property
    def end(self) -> int:
        """Absolute index one past the last recorded message."""
        return self.dropped + len(self.ids)

    def between(self, since: int | None, until: int | None) -> list[int]:
        """Ids with since <= time < until (ms); either bound may be None."""
        if self.monotonic:
            lo = 0 if since is None else bisect.bisect_left(self.times, since)
            hi = len(self.times) if until is None else bisect.bisect_left(self.times, until)
            return self.ids[lo:hi].tolist()
        return [
            i
            for i, t in zip(self.ids, self.times, strict=True)
            if (since is None or t >= since) and (until is None or t < until)
        ]

    def ids_in(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Ids at the given absolute index ranges (parts already dropped are skipped)."""
        out: list[int] = []
        for start, end in ranges:
            lo = max(start - self.dropped, 0)
            hi = max(end - self.dropped, 0)
            out.extend(self.ids[lo:hi])
        return out


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


class SentLog:
    """Ranges of generation indices sent on one connection, per (symbol, stream)."""

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: dict[tuple[str, str], list[list[int]]] = {}

    def add(self, key: tuple[str, str], start: int, end: int) -> None:
        runs = self.ranges.get(key)
        if runs is None:
            self.ranges[key] = [[start, end]]
        elif runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end])

    def get(self, key: tuple[str, str]) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self.ranges.get(key, ())]


class GroundTruth:
    def __init__(self, max_per_series: int) -> None:
        self.max_per_series = max_per_series
        self.series: dict[tuple[str, str], Series] = {}
        self.sent: dict[int, SentLog] = {}

    def series_for(self, symbol: str, stream: str) -> Series:
        key = (symbol, stream)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(self.max_per_series)
        return series

    def sent_log(self, connection_id: int) -> SentLog:
        log = self.sent.get(connection_id)
        if log is None:
            log = self.sent[connection_id] = SentLog()
        return log

    def forget_connection(self, connection_id: int) -> None:
        self.sent.pop(connection_id, None)

    def generated_ids(
        self, symbol: str, stream: str = "trade", since: int | None = None, until: int | None = None
    ) -> list[int]:
        series = self.series.get((symbol.lower(), normalise_stream(stream)))
        return [] if series is None else series.between(since, until)

    def sent_ids(self, symbol: str, stream: str = "trade", connection_id: int | None = None) -> list[int]:
        """Ids sent on one connection, or (connection_id None) on any connection, in generation order."""
        key = (symbol.lower(), normalise_stream(stream))
        if connection_id is not None and connection_id not in self.sent:
            raise KeyError(f"no connection with id {connection_id} (or it was forgotten: too many closed)")
        series = self.series.get(key)
        if series is None:
            return []
        if connection_id is not None:
            return series.ids_in(self.sent[connection_id].get(key))
        ranges = [r for log in self.sent.values() for r in log.get(key)]
        return series.ids_in(merge_ranges(ranges))

    def counts(self) -> dict[str, int]:
        """Messages generated per 'symbol@stream' (including ones dropped from memory)."""
        return {f"{symbol}@{stream}": s.end for (symbol, stream), s in sorted(self.series.items())}
