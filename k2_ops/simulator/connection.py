"""One client connection: websockets' server connection plus what the simulator tracks and enforces.

- `SimServerProtocol` answers client pings like websockets does, unless `answer_pings` is False (the
  "stop answering pings" fault). websockets answers pings inside the Sans-I/O protocol's `recv_frame`,
  so the switch lives in a protocol subclass; the frame is still reported as an event.
- `SimConnection` counts incoming frames (pings, pongs, data) and enforces Binance's incoming-message
  limit (a PING, a PONG or a JSON message each count) by failing the connection with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from .ground_truth import SentLog

if TYPE_CHECKING:
    from .server import SimServer

COUNTED_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG)
# ((symbol, stream), first generation index, end index) of the data messages in one write.
SentRanges = tuple[tuple[tuple[str, str], int, int], ...]


class SimServerProtocol(ServerProtocol):
    answer_pings = True

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING and not self.answer_pings:
            self.events.append(frame)  # seen (and counted) but never answered
            return
        super().recv_frame(frame)


class IncomingLimiter:
    """Sliding window: more than `limit` frames within `window_s` seconds is a violation."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: deque[float] = deque(maxlen=limit + 1)

    def hit(self, now: float) -> bool:
        self.times.append(now)
        return len(self.times) > self.limit and now - self.times[0] < self.window_s


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one connection, as the simulator saw it (times are Unix seconds)."""

    id: int
    path: str
    opened_at: float
    closed_at: float | None
    close_code: int | None
    close_reason: str | None
    streams: tuple[str, ...]
    combined: bool
    messages_sent: int
    client_pings: int
    pongs_received: int
    pings_sent: int
    queued_bytes: int  # frames waiting in the simulator because the client reads slowly


class ConnState:
    """Mutable per-connection state, touched only on the simulator's event-loop thread."""

    def __init__(self, conn_id: int, path: str, streams: tuple[str, ...], combined: bool) -> None:
        self.id = conn_id
        self.path = path
        self.initial_streams = streams
        self.streams: dict[str, None] = {}
        self.combined = combined
        self.conn: SimConnection | None = None
        self.opened_at = time.time()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.server_reason: str | None = None  # why the simulator ended it, if it did
        self.messages_sent = 0
        self.client_pings = 0
        self.pongs_received = 0
        self.pings_sent = 0
        self.stalled_until = 0.0
        self.sent_log = SentLog()
        # Filled during one tick of fan-out, flushed at its end.
        self.out: list[bytes] = []
        self.tick_ranges: dict[tuple[str, str], list[int]] = {}
        self.active = False
        self.tasks: list[asyncio.Task[Any]] = []
        self.timer: asyncio.TimerHandle | None = None

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            id=self.id,
            path=self.path,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            close_code=self.close_code,
            close_reason=self.close_reason,
            streams=tuple(self.streams),
            combined=self.combined,
            messages_sent=self.messages_sent,
            client_pings=self.client_pings,
            pongs_received=self.pongs_received,
            pings_sent=self.pings_sent,
            queued_bytes=self.conn.backlog_bytes if self.conn is not None else 0,
        )


class SimConnection(ServerConnection):
    def __init__(self, protocol: ServerProtocol, server: Server, *, sim: SimServer, **kwargs: Any) -> None:
        # Same settings as the protocol serve() built, in the subclass that can withhold pongs.
        protocol = SimServerProtocol(
            max_size=(protocol.max_message_size, protocol.max_fragment_size),
            logger=protocol.logger,
        )
        super().__init__(protocol, server, **kwargs)
        self.sim = sim
        self.state_ref: ConnState | None = None
        limit = sim.config.max_incoming_per_s
        self.limiter = IncomingLimiter(limit, sim.config.incoming_window_s) if limit is not None else None
        self.backlog: deque[tuple[bytes, int, SentRanges]] = deque()
        self.backlog_bytes = 0

    def send_frames(self, data: bytes, count: int = 0, ranges: SentRanges = ()) -> bool:
        """Write pre-built frames, or queue them while the transport is paused.

        `count` data messages at generation `ranges` are recorded as sent when the bytes are handed to
        the transport, not before: queued data that never goes out (the connection closed first) is
        never counted. Our own queue keeps the transport's buffers small (asyncio 3.11 moves its whole
        write buffer on every partial send, which collapses throughput once megabytes pile up there).
        Returns False, after dropping the connection, when a client reads too slowly.
        """
        if self.protocol.state is not OPEN:
            return True
        if self.paused or self.backlog:
            self.backlog.append((data, count, ranges))
            self.backlog_bytes += len(data)
            if self.backlog_bytes > self.sim.config.max_send_buffer_bytes:
                self.backlog.clear()
                self.backlog_bytes = 0
                self.abort_with_reset()
                return False
            return True
        self._write(data, count, ranges)
        return True

    def _write(self, data: bytes, count: int, ranges: SentRanges) -> None:
        self.transport.write(data)
        state = self.state_ref
        if state is not None and count:
            state.messages_sent += count
            for key, start, end in ranges:
                state.sent_log.add(key, start, end)

    def resume_writing(self) -> None:
        super().resume_writing()
        backlog = self.backlog
        while backlog and not self.paused and self.protocol.state is OPEN:
            data, count, ranges = backlog.popleft()
            self.backlog_bytes -= len(data)
            self._write(data, count, ranges)  # may pause us again, synchronously

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.sim.refusing_with_reset():
            self.abort_with_reset()

    def process_event(self, event: Any) -> None:
        state = self.state_ref
        if state is not None and isinstance(event, Frame):
            if event.opcode is Opcode.PING:
                state.client_pings += 1
            elif event.opcode is Opcode.PONG:
                state.pongs_received += 1
            if self.limiter is not None and event.opcode in COUNTED_OPCODES and self.limiter.hit(self.loop.time()):
                state.server_reason = "too many incoming messages"
                self.fail_now(1008, "Too many requests")
                return
        super().process_event(event)

    def fail_now(self, code: int, reason: str) -> None:
        """Send a close frame and close the TCP connection without waiting for the client."""
        if self.protocol.state is not OPEN:
            return
        self.protocol.fail(code, reason)
        self.send_data()
        # Plain TCP only half-closes; make sure the socket goes even if the client never answers.
        self.loop.call_later(self.sim.config.close_timeout_s, self.transport.abort)

    def abort_with_reset(self) -> None:
        """Abrupt drop: RST instead of FIN (SO_LINGER 0), no close frame, no TLS close_notify."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
