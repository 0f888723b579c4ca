"""The client connection (streamer/wsclient.py) against real servers on loopback: websockets' own server for
what a correct server does, and a raw asyncio server (the handshake answered by hand) for what websockets
would never send: frames in the handshake's packet, protocol violations, a server that ignores our close."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import struct
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode
from websockets.http11 import Request, Response

from streamer.wsclient import ConnectionClosed, State, WebSocket, open_connection
from streamer.wsframes import Close, CloseCode
from tests.streamer.test_wsframes import parse_client_frame

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def dial(url: str, *, max_size: int = 1 << 20, max_queue: int = 1024, close_timeout_s: float = 5.0,
               context: ssl.SSLContext | None = None) -> WebSocket:
    return await open_connection(url, ssl=context, open_timeout_s=10.0, max_size=max_size, max_queue=max_queue,
                                 close_timeout_s=close_timeout_s, user_agent="k2-test")


async def read_all(ws: WebSocket) -> tuple[list[str | bytes], list[int], ConnectionClosed]:
    """Every message until the connection ends, the size of each batch, and how it ended."""
    messages: list[str | bytes] = []
    sizes: list[int] = []
    while True:
        try:
            batch = await asyncio.wait_for(ws.recv_batch(), 10)
        except ConnectionClosed as closed:
            return messages, sizes, closed
        messages.extend(batch)
        sizes.append(len(batch))


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s} s")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def websockets_server(handler: Callable[[ServerConnection], Awaitable[None]], **kwargs: Any) -> Any:
    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/stream"


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(after_handshake: Script, *, response_tail: bytes = b"") -> Any:
    """A server that answers the opening handshake by hand (its 101 response followed by `response_tail` in
    the same write), then runs `after_handshake` on the raw stream."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + response_tail)
        try:
            await after_handshake(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/stream"


def frame(opcode: WsOpcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=False)


async def client_frame(reader: asyncio.StreamReader) -> Frame:
    """One frame the client sent (websockets' parser, as a server: masked)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    extra = b""
    if length == 126:
        extra = await reader.readexactly(2)
        length = struct.unpack("!H", extra)[0]
    elif length == 127:
        extra = await reader.readexactly(8)
        length = struct.unpack("!Q", extra)[0]
    rest = await reader.readexactly(4 + length)
    return parse_client_frame(head + extra + rest)


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


# ---- messages ---------------------------------------------------------------------------------------------


def test_every_message_arrives_in_order_in_batches_then_the_close() -> None:
    """5,000 messages sent as fast as the server can, then a close: all of them, in order, handed over in
    batches of many (one batch per read, not one wake-up per message), and the close codes both ways."""

    async def handler(ws: ServerConnection) -> None:
        for i in range(5000):
            await ws.send(f'{{"i":{i}}}')
        await ws.close(1001, "maintenance")

    async def main() -> None:
        async with websockets_server(handler) as url:
            ws = await dial(url, max_queue=10_000)
            await until(lambda: ws.state is State.CLOSED, "the server's close")  # everything is queued
            messages, sizes, closed = await read_all(ws)
        assert messages == [f'{{"i":{i}}}' for i in range(5000)]
        assert max(sizes) > 100
        assert closed.rcvd == Close(1001, "maintenance")
        assert closed.sent == Close(1001)  # the code echoed (RFC 6455 5.5.1)

    run(main())


def test_frames_in_the_handshakes_own_packet_are_read() -> None:
    """A server may send its first frames in the same TCP segment as the 101 response: they are messages
    like any other (websockets' handshake parser is fed the response head only)."""
    first = frame(WsOpcode.TEXT, b'{"first":1}') + frame(WsOpcode.TEXT, b'{"second":2}')

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(WsOpcode.TEXT, b'{"third":3}') + frame(WsOpcode.CLOSE, struct.pack("!H", 1000)))
        await reader.read()  # until the client is gone

    async def main() -> None:
        async with raw_server(script, response_tail=first) as url:
            ws = await dial(url, close_timeout_s=0.5)
            messages, _, closed = await read_all(ws)
        assert messages == ['{"first":1}', '{"second":2}', '{"third":3}']
        assert closed.rcvd == Close(1000)

    run(main())


def test_reading_pauses_at_max_queue_and_resumes_when_the_reader_takes_them() -> None:
    """A reader that does not read (back-pressure): at most max_queue messages wait in memory, then the
    transport stops reading (TCP holds the rest); taking them resumes it, and nothing is lost."""
    count = 20000

    async def handler(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(f'{{"i":{i}}}')
        await ws.close()

    async def main() -> None:
        async with websockets_server(handler) as url:
            ws = await dial(url, max_queue=100)
            assert ws.transport is not None
            transport = ws.transport
            await until(lambda: not transport.is_reading(), "reading paused")
            first = await ws.recv_batch()
            assert 100 <= len(first) < count
            assert transport.is_reading()
            rest, _, closed = await read_all(ws)
        assert [*first, *rest] == [f'{{"i":{i}}}' for i in range(count)]
        assert closed.rcvd == Close(1000)

    run(main())


# ---- pings and pongs --------------------------------------------------------------------------------------


def test_server_pings_are_answered_and_our_pings_acknowledged() -> None:
    async def handler(ws: ServerConnection) -> None:
        latency = await asyncio.wait_for(await ws.ping(b"k2-1"), 5)  # the client's pong, payload checked
        await ws.send(f"pong after {latency >= 0}")
        await ws.wait_closed()

    async def main() -> None:
        async with websockets_server(handler) as url:
            ws = await dial(url)
            assert await asyncio.wait_for(ws.recv(), 10) == "pong after True"
            round_trip = await asyncio.wait_for(ws.ping(), 10)  # websockets' automatic pong
            assert round_trip >= 0
            await ws.close()
            assert ws.state is State.CLOSED

    run(main())


def test_a_pong_acknowledges_its_ping_and_every_earlier_one() -> None:
    """Three pings, the server answers only the second: the first two are acknowledged, the third is not,
    and is cancelled when the connection closes."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pings = [await client_frame(reader) for _ in range(3)]
        assert all(p.opcode == WsOpcode.PING for p in pings)
        writer.write(frame(WsOpcode.PONG, pings[1].data))
        writer.write(frame(WsOpcode.TEXT, b"answered"))
        await client_frame(reader)  # wait for the test to see it
        writer.transport.abort()

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await dial(url)
            pongs = [ws.ping(), ws.ping(), ws.ping()]
            assert await asyncio.wait_for(ws.recv(), 10) == "answered"
            assert pongs[0].done() and pongs[1].done() and not pongs[2].done()
            ws.send("seen")
            _, _, closed = await read_all(ws)
        assert pongs[2].cancelled()
        assert closed.rcvd is None and closed.sent is None  # dropped, no close frame either way
        with pytest.raises(ConnectionClosed):
            ws.ping()

    run(main())


# ---- closing ----------------------------------------------------------------------------------------------


def test_our_close_is_a_handshake_the_server_sees() -> None:
    seen: list[tuple[int | None, str | None]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        with pytest.raises(WsConnectionClosed):
            await ws.recv()
        seen.append((ws.close_code, ws.close_reason))

    async def main() -> None:
        async with websockets_server(handler) as url:
            ws = await dial(url)
            assert await ws.recv() == "hello"
            await asyncio.wait_for(ws.close(1000, "rotation"), 10)
            assert ws.state is State.CLOSED
            assert ws.sent == Close(1000, "rotation") and ws.rcvd == Close(1000, "rotation")
            await until(lambda: bool(seen), "the server's handler ended")
        assert seen == [(1000, "rotation")]

    run(main())


def test_a_server_that_ignores_our_close_is_dropped_after_the_close_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads our close frame and answers nothing

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await dial(url, close_timeout_s=0.3)
            await asyncio.wait_for(ws.close(1000, "rotation"), 10)
        assert ws.state is State.CLOSED and ws.rcvd is None and ws.sent == Close(1000, "rotation")

    run(main())


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(WsOpcode.TEXT, b"x" * 2000), CloseCode.MESSAGE_TOO_BIG),
        (frame(WsOpcode.TEXT, b"\xc3\x28"), CloseCode.INVALID_DATA),
        (Frame(WsOpcode.TEXT, b"masked").serialize(mask=True), CloseCode.PROTOCOL_ERROR),
    ],
)
def test_a_protocol_violation_fails_the_connection_with_its_code(bad: bytes, code: CloseCode) -> None:
    """The messages before it are delivered; the client sends a Close with the code and ends TCP."""
    received: list[Frame] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(WsOpcode.TEXT, b"before") + bad + frame(WsOpcode.TEXT, b"after"))
        received.append(await client_frame(reader))
        assert await reader.read() == b""  # then the client ends the TCP connection

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await dial(url, max_size=1000)
            messages, _, closed = await read_all(ws)
            await until(lambda: bool(received), "the client's close frame")
        assert messages == ["before"]
        assert closed.sent is not None and closed.sent.code == code and closed.rcvd is None
        assert received[0].opcode == WsOpcode.CLOSE and struct.unpack("!H", received[0].data[:2])[0] == code

    run(main())


# ---- opening ----------------------------------------------------------------------------------------------


def test_a_refused_handshake_raises_invalid_status_with_the_code() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(429, "too many connections\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never opened")

    async def main() -> None:
        async with websockets_server(handler, process_request=refuse) as url:
            with pytest.raises(InvalidStatus) as refused:
                await dial(url)
        assert refused.value.response.status_code == 429
        assert refused.value.response.body == b"too many connections\n"

    run(main())


def test_a_server_that_hangs_up_during_the_handshake_is_an_invalid_message() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching")
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            with pytest.raises(InvalidMessage):
                await dial(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")

    run(main())


def test_the_handshake_sends_our_user_agent_and_checks_the_accept_key() -> None:
    headers: list[Headers] = []

    def look(connection: ServerConnection, request: Request) -> None:
        headers.append(request.headers)

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def wrong_key(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")
        await reader.read()

    async def main() -> None:
        async with websockets_server(handler, process_request=look) as url:
            ws = await dial(url)
            await ws.close()
        assert headers[0]["User-Agent"] == "k2-test"
        server = await asyncio.start_server(wrong_key, "127.0.0.1", 0)
        async with server:
            with pytest.raises(Exception, match="Sec-WebSocket-Accept"):
                await dial(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")

    run(main())


def test_tls_is_verified() -> None:
    """wss:// with a context trusting the server's CA opens; one that does not trust it refuses the
    certificate (the streamer counts that as ssl_certificate and never retries without verification)."""
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def handler(ws: ServerConnection) -> None:
        await ws.send("over tls")
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, ssl=server_context, ping_interval=None) as server:
            url = f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/stream"
            ws = await dial(url, context=trusting)
            assert await ws.recv() == "over tls"
            await ws.close()
            with pytest.raises(ssl.SSLCertVerificationError):
                await dial(url, context=ssl.create_default_context())

    run(main())
