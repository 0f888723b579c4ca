"""Pre-built WebSocket frames, so one message is serialised once and the same bytes go to every client.

A server's frames are unmasked and we negotiate no extension, so a text frame is a fixed header plus the
payload (RFC 6455 section 5.2); tests check these bytes equal websockets' own `Frame.serialize`.
"""

from __future__ import annotations

import struct

_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame carrying `payload` (UTF-8 JSON)."""
    length = len(payload)
    if length < 126:
        return bytes((_TEXT_FIN, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", _TEXT_FIN, 126, length) + payload
    return struct.pack("!BBQ", _TEXT_FIN, 127, length) + payload


def combined_payload(stream: str, payload: bytes) -> bytes:
    """The combined-stream wrapping `{"stream":<name>,"data":<raw payload>}`."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
