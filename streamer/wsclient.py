"""The WebSocket client connection: an asyncio protocol around the pure framing of streamer/wsframes.py.

Why not websockets' asyncio client: it hands each message through a queue to a coroutine that awaits it, and
parses frames with a generator per frame, about 4 µs per market-data message on the hot path
(docs/performance.md). Here the bytes of one TLS read are parsed at once by `FrameReader` and handed to the
reader task as one batch. The opening handshake is still websockets' (its Sans-I/O `ClientProtocol` builds
the request and checks the response: status 101, Upgrade, Sec-WebSocket-Accept; a refusal raises its
`InvalidStatus`), fed the response head only, so every frame after it is ours.

Invariants:
- Messages are handed over in arrival order, including all that arrived before the connection closed:
  `recv` and `recv_batch` raise `ConnectionClosed` only once nothing is left to read.
- At most `max_queue` messages wait unread: then reading pauses (TCP holds the rest) until the reader takes
  them.
- Every ping of the server is answered at once with a pong carrying its payload, whatever the reader does.
- A pong acknowledges the ping with its payload and every earlier one (RFC 6455 section 5.5.3 lets a server
  answer only the latest).
- A protocol error of the server fails the connection with the code RFC 6455 gives it (`sent`); the server's
  Close frame, if any, is `rcvd`. Once CLOSED, pending pings are cancelled.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections import deque
from enum import Enum
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage
from websockets.http11 import Response
from websockets.uri import parse_uri

from streamer.wsframes import Close, CloseCode, FrameReader, Opcode, client_frame, close_payload

# The longest response head the handshake reads (websockets' own limits still apply inside it).
MAX_HANDSHAKE_HEAD = 64 * 1024


class State(Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"  # a Close frame was sent or received
    CLOSED = "closed"  # the TCP connection is gone


class ConnectionClosed(Exception):
    """The connection ended: `rcvd` is the server's Close frame (None: none came), `sent` ours."""

    def __init__(self, rcvd: Close | None, sent: Close | None) -> None:
        self.rcvd = rcvd
        self.sent = sent
        super().__init__(f"received {rcvd or '(no close frame)'}; sent {sent or '(no close frame)'}")


class WebSocket(asyncio.Protocol):
    """One client connection (see the module doc). Open it with `open_connection`."""

    def __init__(self, handshake: ClientProtocol, max_size: int, max_queue: int, close_timeout_s: float) -> None:
        self.state = State.CONNECTING
        self.rcvd: Close | None = None
        self.sent: Close | None = None
        self.transport: asyncio.Transport | None = None
        self.max_queue = max_queue
        self.close_timeout_s = close_timeout_s
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._handshake: ClientProtocol | None = handshake
        self._head = bytearray()
        self._head_only = True  # a 101 head is fed to websockets alone; any other response whole
        self._opened: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._reader = FrameReader(max_size)
        self._pending: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting for messages
        self._paused = False
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}  # oldest first
        self._close_timer: asyncio.TimerHandle | None = None

    # ---- the reader's side ------------------------------------------------------------------------------

    async def recv(self) -> str | bytes:
        """The next message."""
        if not self._pending:
            await self._wait_for_messages()
        message = self._pending.popleft()
        self._resume_if_drained()
        return message

    async def recv_batch(self) -> deque[str | bytes]:
        """Every message waiting, oldest first (at least one)."""
        if not self._pending:
            await self._wait_for_messages()
        batch, self._pending = self._pending, deque()
        self._resume_if_drained()
        return batch

    async def _wait_for_messages(self) -> None:
        while not self._pending:
            if self.state is State.CLOSED:
                raise ConnectionClosed(self.rcvd, self.sent)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake_reader(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_if_drained(self) -> None:
        if self._paused and len(self._pending) < self.max_queue and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    # ---- sending ----------------------------------------------------------------------------------------

    def send(self, message: str) -> None:
        """Send a text message (written at once: the caller keeps to the exchange's frame budget)."""
        self._check_open()
        self._write(Opcode.TEXT, message.encode())

    def ping(self) -> asyncio.Future[float]:
        """Send a ping; the future completes with the round trip in seconds when its pong (or a later one)
        comes, and is cancelled if the connection closes first."""
        self._check_open()
        payload = os.urandom(4)
        while payload in self._pings:
            payload = os.urandom(4)
        pong: asyncio.Future[float] = self._loop.create_future()
        self._pings[payload] = (pong, self._loop.time())
        self._write(Opcode.PING, payload)
        return pong

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The closing handshake: our Close frame, the server's, then the server ends TCP; after
        `close_timeout_s` without that, the connection is dropped. Messages read meanwhile stay readable."""
        if self.state is State.OPEN:
            self._send_close(Close(code, reason))
        elif self.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()
        await asyncio.shield(self._lost)

    def abort(self) -> None:
        """Drop the TCP connection now, no closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise ConnectionClosed(self.rcvd, self.sent)

    def _write(self, opcode: Opcode, payload: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload, os.urandom(4)))

    def _send_close(self, close: Close) -> None:
        self._write(Opcode.CLOSE, close_payload(close))
        self.sent = close
        self.state = State.CLOSING
        self._drop_after_timeout()

    def _drop_after_timeout(self) -> None:
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(self.close_timeout_s, self.abort)

    # ---- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (read and write); not isinstance-checked: other event loops' transports (uvloop's)
        # implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        assert self._handshake is not None
        for data in self._handshake.data_to_send():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.state is State.CONNECTING:
            self._handshake_data(data)
            return
        reader = self._reader
        messages = reader.feed(data)
        if messages:
            self._pending.extend(messages)
            self._wake_reader()
            if len(self._pending) >= self.max_queue and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        if reader.controls:
            self._controls()
        if reader.error is not None or reader.close is not None:
            self._stopped_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is State.CONNECTING:
            self._handshake_lost(exc)
        self.state = State.CLOSED
        if self._close_timer is not None:
            self._close_timer.cancel()
        for pong, _ in self._pings.values():
            pong.cancel()
        self._pings.clear()
        self._wake_reader()
        if not self._lost.done():
            self._lost.set_result(None)

    # ---- frames ------------------------------------------------------------------------------------------

    def _controls(self) -> None:
        for control in self._reader.take_controls():
            if control.opcode is Opcode.PING:
                if self.state is State.OPEN:
                    self._write(Opcode.PONG, control.payload)
            elif control.payload in self._pings:
                now = self._loop.time()
                while self._pings:
                    payload, (pong, sent) = next(iter(self._pings.items()))
                    del self._pings[payload]
                    if not pong.done():
                        pong.set_result(now - sent)
                    if payload == control.payload:
                        break

    def _stopped_reading(self) -> None:
        reader = self._reader
        if reader.close is not None and self.rcvd is None:
            self.rcvd = reader.close
            if self.state is State.OPEN:
                # Echo the code (RFC 6455 section 5.5.1); the server then ends the TCP connection.
                self._send_close(Close(reader.close.code if reader.close.code != CloseCode.NO_STATUS
                                       else CloseCode.NORMAL))
            self._drop_after_timeout()
        elif reader.error is not None and self.state is not State.CLOSED:
            # Fail the connection (RFC 6455 section 7.1.7): our Close frame with the error's code, then TCP.
            if self.state is State.OPEN:
                self._send_close(reader.error)
            else:
                self.sent = self.sent or reader.error
            assert self.transport is not None
            self.transport.close()

    # ---- the opening handshake ------------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None and self.transport is not None
        rest = b""
        if self._head_only:
            head = self._head
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > MAX_HANDSHAKE_HEAD:
                    self._fail_opening(InvalidMessage(f"response head over {MAX_HANDSHAKE_HEAD} bytes"))
                return
            if head.startswith(b"HTTP/1.1 101 "):
                data, rest = bytes(head[: end + 4]), bytes(head[end + 4 :])
            else:  # a refusal: websockets reads its body too, for InvalidStatus
                self._head_only = False
                data = bytes(head)
            head.clear()
        handshake.receive_data(data)
        if self._handshake_done(handshake) and rest:
            self.data_received(rest)

    def _handshake_done(self, handshake: ClientProtocol) -> bool:
        """True once the connection is open (False: more is needed, or the opening failed)."""
        if not _response_arrived(handshake):
            return False
        if handshake.handshake_exc is not None:
            self._fail_opening(handshake.handshake_exc)
            return False
        self._handshake = None
        self.state = State.OPEN
        if not self._opened.done():
            self._opened.set_result(None)
        return True

    def _handshake_lost(self, exc: Exception | None) -> None:
        handshake = self._handshake
        if handshake is not None and not self._head_only:
            handshake.receive_eof()
            if _response_arrived(handshake):
                exc = handshake.handshake_exc or exc
        if not self._opened.done():
            self._opened.set_exception(exc or InvalidMessage("connection closed during the opening handshake"))

    def _fail_opening(self, exc: BaseException) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
        assert self.transport is not None
        self.transport.abort()


def _response_arrived(handshake: ClientProtocol) -> bool:
    return any(isinstance(event, Response) for event in handshake.events_received())


async def open_connection(
    url: str,
    *,
    ssl: ssl_module.SSLContext | None,
    open_timeout_s: float,
    max_size: int,
    max_queue: int,
    close_timeout_s: float,
    user_agent: str,
) -> WebSocket:
    """TCP, TLS (wss://, with `ssl` or the default context) and the opening handshake, within
    `open_timeout_s`. Raises what fails: ssl.SSLCertVerificationError, OSError, TimeoutError, websockets'
    InvalidHandshake (InvalidStatus for a refusal)."""
    uri = parse_uri(url)
    handshake = ClientProtocol(uri)  # the handshake only: frames (and max_size) are FrameReader's
    request = handshake.connect()
    request.headers["User-Agent"] = user_agent
    handshake.send_request(request)
    context = (ssl or ssl_module.create_default_context()) if uri.secure else None
    loop = asyncio.get_running_loop()
    socket = WebSocket(handshake, max_size, max_queue, close_timeout_s)
    async with asyncio.timeout(open_timeout_s):
        transport, _ = await loop.create_connection(lambda: socket, uri.host, uri.port, ssl=context)
        try:
            await socket._opened
        except BaseException:
            transport.abort()
            raise
    return socket
