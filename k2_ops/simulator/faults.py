"""Fault payloads and the server-wide fault switches (pure; the server applies them to connections)."""

from __future__ import annotations

from dataclasses import dataclass

from .frames import combined_payload

SERVER_SHUTDOWN_STREAM = "!serverShutdown"
UNKNOWN_EVENT_TYPE = "k2UnknownEvent"
OVERSIZED_EVENT_TYPE = "k2Oversized"
# Codes a server may send in a close frame (RFC 6455 7.4.1; 1005/1006/1015 are never sent).
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
REFUSE_MODES = ("http_503", "http_429", "tcp_reset")


def check_close_code(code: int) -> None:
    if not isinstance(code, int) or not (code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999):
        raise ValueError(f"close code must be one a server can send (e.g. 1000, 1001, 1008, 1011), got {code!r}")


@dataclass
class FaultState:
    """Switches that outlive a single call. Times are event-loop seconds."""

    cert_mode: str = "valid"
    refuse_until: float = 0.0
    refuse_mode: str = "http_503"
    answer_pings_on_new: bool = True
    stall_new_until: float = 0.0  # stall connections opened before this time too


def wrap(payload: bytes, stream: str | None) -> bytes:
    """A payload as sent on a connection: raw, or wrapped for a combined connection (stream given)."""
    return payload if stream is None else combined_payload(stream, payload)


def malformed(now_ms: int, symbol: str, stream: str | None) -> bytes:
    """A message cut in the middle: valid start, invalid JSON."""
    whole = wrap(f'{{"e":"trade","E":{now_ms},"s":"{symbol.upper()}","t":1,"p":"1.00000000"}}'.encode(), stream)
    return whole[: len(whole) // 2]


def unknown_event(now_ms: int, symbol: str, stream: str | None) -> bytes:
    return wrap(f'{{"e":"{UNKNOWN_EVENT_TYPE}","E":{now_ms},"s":"{symbol.upper()}"}}'.encode(), stream)


def oversized(size_bytes: int, now_ms: int, stream: str | None) -> bytes:
    """Valid JSON of exactly `size_bytes` (or the smallest possible if that is smaller)."""
    head = f'{{"e":"{OVERSIZED_EVENT_TYPE}","E":{now_ms},"pad":"'.encode()
    tail = b'"}'
    bare = len(wrap(head + tail, stream))
    return wrap(head + b"x" * max(size_bytes - bare, 0) + tail, stream)


def server_shutdown(now_ms: int, combined: bool) -> bytes:
    payload = f'{{"e":"serverShutdown","E":{now_ms}}}'.encode()
    return wrap(payload, SERVER_SHUTDOWN_STREAM if combined else None)
