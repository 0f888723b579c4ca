"""RFC 6455 framing for a WebSocket client (pure: no I/O, no clock; never raises on what the server sends).

The reading side turns the bytes a server sends into whole messages and control frames; the writing side
encodes the client's frames, masked as RFC 6455 requires of a client. streamer/wsclient.py is the asyncio
layer around it; `FrameReader` is the hot path of every market-data message, so its common case (an
unfragmented text frame under 64 KiB) is a few comparisons and one UTF-8 decode.

Invariants:
- `FrameReader.feed` returns every message the bytes fed so far complete, in order, and keeps a partial frame
  for the next call: feeding a stream in any split gives the same messages.
- A frame that breaks the protocol stops the reader: `error` holds the close code RFC 6455 gives it (1002
  protocol error, 1007 text that is not UTF-8, 1009 message too big) and nothing after it is read; the
  messages completed before it are still returned.
- A message over `max_size` is refused from its frame header alone: its payload is never buffered.
- After the server's Close frame nothing more is read (RFC 6455 section 5.5.1); `close` holds it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    NO_STATUS = 1005  # a Close frame without a code (never sent)
    ABNORMAL = 1006  # no Close frame at all: the TCP connection ended (never sent)
    INVALID_DATA = 1007
    MESSAGE_TOO_BIG = 1009


# Codes a Close frame may carry (RFC 6455 section 7.4, the IANA registry): 1005, 1006 and 1015 only describe
# a closure locally, 1004 is reserved; 3000-4999 belong to libraries and applications.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

_TEXT_FINAL = 0x80 | Opcode.TEXT  # the common frame: final, no reserved bits, text
_CONTROL_MAX = 125  # RFC 6455 section 5.5: a control frame's payload


@dataclass(frozen=True)
class Close:
    """A Close frame's content, received or sent."""

    code: int
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.code} {self.reason}".rstrip()


@dataclass(frozen=True)
class Control:
    """A ping or a pong the server sent."""

    opcode: Opcode
    payload: bytes


class FrameReader:
    """Reads the frames a server sends to one client connection (see the module doc for the invariants)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size  # the largest message, in bytes (a fragmented message counts whole)
        self.error: Close | None = None  # the server broke the protocol: fail the connection with this code
        self.close: Close | None = None  # the server's Close frame
        self.controls: list[Control] = []  # pings and pongs read and not yet taken (`take_controls`)
        self._buffer = bytearray()
        self._fragments: list[bytes] = []  # the frames so far of a fragmented message
        self._fragmented: Opcode | None = None  # that message's opcode; None: no fragmented message open
        self._fragmented_size = 0

    @property
    def stopped(self) -> bool:
        """Nothing more will be read: a protocol error or the server's Close frame."""
        return self.error is not None or self.close is not None

    def take_controls(self) -> list[Control]:
        controls, self.controls = self.controls, []
        return controls

    def feed(self, data: bytes) -> list[str | bytes]:
        """The messages `data` completes (text as str, binary as bytes), in order."""
        if self.error is not None or self.close is not None:
            return []
        buffer = self._buffer
        buffer += data
        messages: list[str | bytes] = []
        end = len(buffer)
        pos = 0
        max_size = self.max_size
        while end - pos >= 2:
            first = buffer[pos]
            length = buffer[pos + 1]  # its high bit is the mask bit, which a server must not set
            if length < 126:
                start = pos + 2
            elif length == 126:
                if end - pos < 4:
                    break
                length = (buffer[pos + 2] << 8) | buffer[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            else:
                self._fail(CloseCode.PROTOCOL_ERROR, "masked frame from the server")
                break
            if first == _TEXT_FINAL and self._fragmented is None:
                if length > max_size:
                    self._fail(CloseCode.MESSAGE_TOO_BIG, f"message of {length} bytes over {max_size}")
                    break
                stop = start + length
                if stop > end:
                    break
                try:
                    messages.append(buffer[start:stop].decode())
                except UnicodeDecodeError:
                    self._fail(CloseCode.INVALID_DATA, "text message is not UTF-8")
                    break
                pos = stop
                continue
            stop = self._other_frame(first, length, start, end, messages)
            if stop < 0:
                break
            pos = stop
        if self.error is not None or self.close is not None:
            buffer.clear()
        elif pos:
            del buffer[:pos]
        return messages

    def _other_frame(self, first: int, length: int, start: int, end: int, messages: list[str | bytes]) -> int:
        """Any frame but an unfragmented text frame: where the next frame starts, or -1 (incomplete, or the
        reader stopped)."""
        if first & 0x70:
            self._fail(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            return -1
        final = bool(first & 0x80)
        try:
            opcode = Opcode(first & 0x0F)
        except ValueError:
            self._fail(CloseCode.PROTOCOL_ERROR, f"unknown opcode {first & 0x0F}")
            return -1
        if opcode >= Opcode.CLOSE:
            if not final or length > _CONTROL_MAX:
                self._fail(CloseCode.PROTOCOL_ERROR, "fragmented or oversized control frame")
                return -1
        elif length >> 63:
            self._fail(CloseCode.PROTOCOL_ERROR, "frame length over 2^63")
            return -1
        elif opcode is Opcode.CONTINUATION:
            if self._fragmented is None:
                self._fail(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
                return -1
            if self._fragmented_size + length > self.max_size:
                self._fail(CloseCode.MESSAGE_TOO_BIG,
                           f"message of {self._fragmented_size + length}+ bytes over {self.max_size}")
                return -1
        else:
            if self._fragmented is not None:
                self._fail(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
                return -1
            if length > self.max_size:
                self._fail(CloseCode.MESSAGE_TOO_BIG, f"message of {length} bytes over {self.max_size}")
                return -1
        stop = start + length
        if stop > end:
            return -1
        payload = bytes(self._buffer[start:stop])
        if opcode is Opcode.CLOSE:
            self.close = self._close_frame(payload)
            return -1
        if opcode is Opcode.PING or opcode is Opcode.PONG:
            self.controls.append(Control(opcode, payload))
            return stop
        if opcode is not Opcode.CONTINUATION:
            if final:
                return stop if self._message(opcode, payload, messages) else -1
            self._fragmented, self._fragments, self._fragmented_size = opcode, [payload], length
            return stop
        self._fragments.append(payload)
        self._fragmented_size += length
        if final:
            whole = b"".join(self._fragments)
            message_opcode = self._fragmented
            assert message_opcode is not None  # checked above: a continuation needs an open message
            self._fragmented, self._fragments, self._fragmented_size = None, [], 0
            return stop if self._message(message_opcode, whole, messages) else -1
        return stop

    def _message(self, opcode: Opcode, payload: bytes, messages: list[str | bytes]) -> bool:
        if opcode is Opcode.BINARY:
            messages.append(payload)
            return True
        try:
            messages.append(payload.decode())
        except UnicodeDecodeError:
            self._fail(CloseCode.INVALID_DATA, "text message is not UTF-8")
            return False
        return True

    def _close_frame(self, payload: bytes) -> Close | None:
        """The server's Close frame (None: a malformed one, and `error` says why)."""
        if not payload:
            return Close(CloseCode.NO_STATUS)
        code = int.from_bytes(payload[:2], "big")
        if len(payload) < 2 or not (code in _SENDABLE_CODES or 3000 <= code <= 4999):
            self._fail(CloseCode.PROTOCOL_ERROR, "invalid close code")
            return None
        try:
            return Close(code, payload[2:].decode())
        except UnicodeDecodeError:
            self._fail(CloseCode.INVALID_DATA, "close reason is not UTF-8")
            return None

    def _fail(self, code: CloseCode, reason: str) -> None:
        self.error = Close(code, reason)


def client_frame(opcode: Opcode, payload: bytes, mask: bytes) -> bytes:
    """One final client frame carrying `payload`, masked with the 4-byte `mask` (RFC 6455 section 5.3)."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return header + mask + masked


def close_payload(close: Close) -> bytes:
    """A Close frame's payload: the code and the reason, cut to fit a control frame (whole characters)."""
    reason = close.reason.encode()[: _CONTROL_MAX - 2].decode(errors="ignore").encode()
    return close.code.to_bytes(2, "big") + reason
