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
<K2_HANDOVER_TOKEN>` (401 without or with a wrong token, compared in constant time) and refuse with 403 when
no token is configured. The GET routes stay open to whoever reaches the port (Prometheus, probes).

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

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[tuple[int, str, bytes]]]

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class Guard:
    """A route that needs the shared token; `token` None means the feature is off (403), not open."""

    token: str | None
    setting: str  # named in the refusal, so an operator knows what to set

    def refusal(self, authorization: str) -> tuple[int, str, bytes] | None:
        if self.token is None:
            return json_response(403, {"error": f"refused: no token configured ({self.setting} unset)"})
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return json_response(401, {"error": f"refused: missing or wrong bearer token (see {self.setting})"})
        return None
MAX_BODY = 1 << 20


def json_response(status: int, payload: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload, sort_keys=True).encode()


class HealthServer:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.routes: dict[tuple[str, str], Handler] = {}
        self.guards: dict[tuple[str, str], Guard] = {}
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
        try:
            status, content_type, body = await asyncio.wait_for(self._respond(reader), 10)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except Exception:
            log.exception("health server failed answering a request")
            status, content_type, body = 500, "text/plain", b"internal error\n"
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request_line = (await reader.readline()).decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) < 2:
            return 400, "text/plain", b"bad request line\n"
        method, target = parts[0].upper(), parts[1]
        length = 0
        authorization = ""
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "authorization":
                authorization = value.strip()
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return 400, "text/plain", b"bad content-length\n"
        if length > MAX_BODY:
            return 400, "text/plain", b"body too large\n"
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                return 405, "text/plain", b"method not allowed\n"
            return 404, "text/plain", b"not found\n"
        guard = self.guards.get((method, path))
        if guard is not None and (refusal := guard.refusal(authorization)) is not None:
            log.warning("%s %s refused (%s)", method, path, "no token configured" if guard.token is None else
                        "missing or wrong token")
            return refusal
        return await handler(body)
