"""A small asyncio HTTP/1.1 server on K2_METRICS_HOST:K2_METRICS_PORT.

GET  /metrics            Prometheus exposition (prometheus_client.generate_latest)
GET  /healthz            200 while the process runs its event loop
GET  /readyz             200 when connected, data within the health timeout, Kafka reachable and not in standby
                         longer than K2_HANDOVER_STANDBY_MAX_SECONDS; else 503. JSON with every check and its
                         reason.
GET  /positions          handover: mode, last produced and last received id per stream key
POST /handover/standby   stop producing, wait for Kafka to acknowledge, answer the last produced ids
                         (body optional: {"flush_timeout_seconds": 30})
POST /handover/release   body {"after": {"btcusdt@trade": 123, ...}}: produce buffered events after those ids
                         and keep producing (omit "after" to produce everything buffered)
GET  /debug/allocations  top allocators from tracemalloc (when it runs)

The POST routes change what the instance produces, so they are guarded: they require `Authorization: Bearer
<K2_HANDOVER_TOKEN>` (401 with `WWW-Authenticate: Bearer` without or with a wrong token, compared in constant
time) and refuse with 403 when no token is configured. The GET routes stay open to whoever reaches the port
(Prometheus, probes).

The port faces whatever can reach it, so the request is parsed by h11 (the sans-I/O HTTP/1.1 parser httpx and
uvicorn use) and every way a request can be wrong has its own 4xx, never a 500 or a traceback:

- request line longer than MAX_HEAD: 414; request line and headers together longer than MAX_HEAD: 431;
- malformed request line, header or Content-Length (e.g. -5), no Host on HTTP/1.1: 400;
- a body over MAX_BODY: 413, judged on Content-Length before any of it is read (chunked: as it arrives);
- the guard runs right after the headers, so a refused request's body is never read;
- the whole request (line, headers, body) must arrive within `request_timeout_s` (K2_HTTP_REQUEST_TIMEOUT_SECONDS):
  408 when part of it came, the connection silently closed when nothing did (an idle client);
- at most `max_connections` (K2_HTTP_MAX_CONNECTIONS) at once: more are answered 503 at once and closed;
- an error answer is followed by a lingering close (the rest of the request read and dropped for up to
  LINGER_S), so the client reads the answer instead of a connection reset.

One request per connection (Connection: close) keeps it simple; scrapes and probes are not hot paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[tuple[int, str, bytes]]]

MAX_HEAD = 16 * 1024  # request line and headers together (h11's default incomplete-event bound)
MAX_BODY = 1 << 20
READ_CHUNK = 64 * 1024
LINGER_S = 1.0  # after an error answer: how long the rest of the request is read and dropped before closing

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class Answer:
    """A response: status, body and its content type, and any extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}", "Connection: close",
                 *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def text(status: int, message: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", (message + "\n").encode(), headers)


@dataclass(frozen=True)
class Guard:
    """A route that needs the shared token; `token` None means the feature is off (403), not open."""

    token: str | None
    setting: str  # named in the refusal, so an operator knows what to set

    def refusal(self, authorization: str) -> Answer | None:
        if self.token is None:
            return Answer(*json_response(403, {"error": f"refused: no token configured ({self.setting} unset)"}))
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            why = {"error": f"refused: missing or wrong bearer token (see {self.setting})"}
            return Answer(*json_response(401, why), headers=(("WWW-Authenticate", 'Bearer realm="k2-streamer"'),))
        return None


def json_response(status: int, payload: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload, sort_keys=True).encode()


class RequestError(Exception):
    """The request cannot be served; `answer` says why (a 4xx), or None to close without a word."""

    def __init__(self, answer: Answer | None) -> None:
        super().__init__(answer.status if answer else "closed")
        self.answer = answer


class Request:
    """One request read from a connection with h11, under one deadline (the loop's clock)."""

    def __init__(self, reader: asyncio.StreamReader, deadline: float) -> None:
        self.reader = reader
        self.deadline = deadline
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.received = 0

    async def _event(self) -> Any:
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as exc:
                raise RequestError(self._protocol_error(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            remaining = self.deadline - asyncio.get_running_loop().time()
            try:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), max(remaining, 0.0))
            except TimeoutError:
                raise RequestError(text(408, "request not received in time") if self.received else None) from None
            self.received += len(data)
            self.parser.receive_data(data)  # b"" = the client closed; h11 then reports what is missing

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> Answer | None:
        if self.received == 0:
            return None  # connected and closed without a byte: nothing to answer
        if exc.error_status_hint == 431:
            # Too much before the end of the headers: the request line alone, or the headers.
            buffered = bytes(self.parser.trailing_data[0])
            if b"\n" not in buffered:
                return text(414, "request line too long")
            return text(431, f"request line and headers over {MAX_HEAD} bytes")
        return text(400, f"bad request: {exc}")

    async def head(self) -> h11.Request:
        event = await self._event()
        if not isinstance(event, h11.Request):  # ConnectionClosed before a request
            raise RequestError(None)
        return event

    async def body(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise RequestError(text(413, f"body over {limit} bytes"))
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:  # ConnectionClosed mid-body
                raise RequestError(None)


async def _drop_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(READ_CHUNK):
        pass


class HealthServer:
    def __init__(self, host: str, port: int, request_timeout_s: float = 10.0, max_connections: int = 64) -> None:
        self.host = host
        self.port = port
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self.routes: dict[tuple[str, str], Handler] = {}
        self.guards: dict[tuple[str, str], Guard] = {}
        self.open_connections = 0
        self._server: asyncio.Server | None = None

    def route(self, method: str, path: str, handler: Handler, guard: Guard | None = None) -> None:
        self.routes[(method, path)] = handler
        if guard is not None:
            self.guards[(method, path)] = guard

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            await self._send(reader, writer, text(503, f"too many connections (at most {self.max_connections})"))
            return
        self.open_connections += 1
        try:
            answer = await self._answer(reader)
        finally:
            self.open_connections -= 1
        await self._send(reader, writer, answer)

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: Answer | None) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            if answer is not None:
                writer.write(answer.encode())
                await asyncio.wait_for(writer.drain(), self.request_timeout_s)
                if answer.status >= 400 and writer.can_write_eof():
                    # Lingering close (as nginx does): a refused request may still be arriving, and closing
                    # with unread bytes sends a reset that can destroy the answer before the client reads it.
                    # Our side is closed for writing; what comes is read and dropped until the client closes,
                    # for at most LINGER_S.
                    writer.write_eof()
                    await asyncio.wait_for(_drop_until_eof(reader), LINGER_S)
        writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> Answer | None:
        request = Request(reader, asyncio.get_running_loop().time() + self.request_timeout_s)
        try:
            head = await request.head()
            method, path = head.method.decode("ascii", "replace"), head.target.decode("latin-1").split("?", 1)[0]
            handler = self.routes.get((method, path))
            if handler is None:
                allowed = sorted(m for m, p in self.routes if p == path)
                if allowed:
                    return text(405, "method not allowed", ("Allow", ", ".join(allowed)))
                return text(404, "not found")
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
            guard = self.guards.get((method, path))
            if guard is not None and (refusal := guard.refusal(headers.get("authorization", ""))) is not None:
                log.warning("%s %s refused (%s)", method, path,
                            "no token configured" if guard.token is None else "missing or wrong token")
                return refusal
            length = headers.get("content-length")
            if length is not None and int(length) > MAX_BODY:  # h11 has checked it is digits
                return text(413, f"body over {MAX_BODY} bytes")
            body = await request.body(MAX_BODY)
        except RequestError as refused:
            if refused.answer is not None:
                log.info("HTTP request refused: %d %s", refused.answer.status, refused.answer.body.decode().strip())
            return refused.answer
        except ConnectionError:
            return None
        except Exception:  # a bug of ours, not the client's: say so, and keep serving
            log.exception("health server failed reading a request")
            return text(500, "internal error")
        try:
            return Answer(*await handler(body))
        except Exception:
            log.exception("health server failed answering %s %s", method, path)
            return text(500, "internal error")
