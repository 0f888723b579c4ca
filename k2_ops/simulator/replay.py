"""Replay of a recording in the format of ../shared/binance_samples/btcusdt_20240808.gz.

Each line: `<local receive time, ns since epoch> <raw JSON as received>` from a combined-stream
connection. Lines without the `{"stream":..,"data":..}` wrapper (the REST snapshot) and streams the
simulator does not serve are skipped. Each message's `data` is replayed byte for byte, paced by the
recorded receive times: 1x, Nx (speed N) or as fast as possible (speed 0).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from .market import Event
from .protocol import parse_stream

ID_FIELDS = {"trade": "t", "aggTrade": "a", "bookTicker": "u", "depth@100ms": "u"}


class RecordingError(ValueError):
    """A line of the recording cannot be understood."""


def parse_line(line: str, line_no: int = 0) -> tuple[int, Event] | None:
    """(receive time ns, event) for one recorded frame; None for lines that are not replayed."""
    line = line.strip()
    if not line:
        return None
    stamp, sep, raw = line.partition(" ")
    if not sep or not stamp.isdigit():
        raise RecordingError(f"line {line_no}: expected '<receive time ns> <json>', got {line[:80]!r}")
    recv_ns = int(stamp)
    try:
        frame = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"line {line_no}: invalid JSON ({exc})") from exc
    if not isinstance(frame, dict) or "stream" not in frame or "data" not in frame:
        return None  # e.g. the REST depth snapshot taken at the start
    parsed = parse_stream(frame["stream"])
    if parsed is None:
        return None
    symbol, kind = parsed
    data = frame["data"]
    prefix = '{"stream":"' + frame["stream"] + '","data":'
    # Keep the recorded bytes of `data` exactly; re-serialise only if the wrapper is not the usual one.
    if raw.startswith(prefix) and raw.endswith("}"):
        payload = raw[len(prefix) : -1].encode()
    else:
        payload = json.dumps(data, separators=(",", ":")).encode()
    ident = data.get(ID_FIELDS[kind])
    if not isinstance(ident, int):
        raise RecordingError(f"line {line_no}: {frame['stream']} message without integer {ID_FIELDS[kind]!r}")
    time_ms = data.get("E", recv_ns // 1_000_000)
    return recv_ns, Event(symbol, kind, ident, int(time_ms), payload)


def read_recording(path: Path) -> Iterator[tuple[int, Event]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            parsed = parse_line(line, line_no)
            if parsed is not None:
                yield parsed


class Replayer:
    """Hands out recorded events as they fall due; `speed` 0 means everything is due at once."""

    def __init__(self, path: Path, speed: float) -> None:
        self.path = path
        self.speed = speed
        self._events = read_recording(path)
        self._next = next(self._events, None)
        self._base_ns = self._next[0] if self._next else 0
        self._started_at: float | None = None
        self._paused_at: float | None = None
        self.replayed = 0

    @property
    def started(self) -> bool:
        return self._started_at is not None

    @property
    def finished(self) -> bool:
        return self._next is None

    def start(self, now_s: float) -> None:
        if self._started_at is None:
            self._started_at = now_s

    def pause(self, now_s: float) -> None:
        if self._paused_at is None:
            self._paused_at = now_s

    def resume(self, now_s: float) -> None:
        if self._paused_at is not None:
            if self._started_at is not None:
                self._started_at += now_s - self._paused_at
            self._paused_at = None

    def due(self, now_s: float, limit: int) -> list[Event]:
        """Events whose recorded offset (scaled by speed) has passed, at most `limit` of them."""
        if self._started_at is None or self._paused_at is not None:
            return []
        elapsed = now_s - self._started_at
        out: list[Event] = []
        while self._next is not None and len(out) < limit:
            recv_ns, event = self._next
            if self.speed > 0 and (recv_ns - self._base_ns) / 1e9 / self.speed > elapsed:
                break
            out.append(event)
            self._next = next(self._events, None)
        self.replayed += len(out)
        return out
