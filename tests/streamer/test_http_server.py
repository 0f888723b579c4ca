"""The streamer's HTTP server (streamer/health.py) against bad clients: every malformed, oversized, unauthorised or
slow request gets its 4xx (or, when nothing came, a quiet close), never a 500 and never a traceback in the log;
the token is checked before a body is read; connections beyond the cap are turned away.

The server runs on its own event loop in a thread; clients are plain sockets, so each test sends exactly the bytes
it names. A client that is done writing shuts its side down, so an incomplete request is judged at once (h11 sees
the end of input) instead of after the request timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from streamer.health import MAX_BODY, Guard, HealthServer, json_response
from tests.streamer.conftest import wait_for

TOKEN = "s3cret-token-for-the-tests"
REQUEST_TIMEOUT_S = 0.5
MAX_CONNECTIONS = 4
# What a bad request may get back: a 4xx of the server's own, or nothing (closed without a byte). 200 when a
# mutation still makes a good request, 401 when it hits the guarded route without the token.
CLIENT_ERRORS = {400, 401, 404, 405, 408, 413, 414, 431}


@dataclass
class Served:
    port: int
    bodies: list[bytes]  # what the guarded handler received


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    bodies: list[bytes] = []
    ready = threading.Event()
    state: dict[str, object] = {}

    async def metrics(_body: bytes) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"up 1\n"

    async def standby(body: bytes) -> tuple[int, str, bytes]:
        bodies.append(body)
        return json_response(200, {"received": len(body)})

    async def main() -> None:
        server = HealthServer("127.0.0.1", 0, REQUEST_TIMEOUT_S, MAX_CONNECTIONS)
        server.route("GET", "/metrics", metrics)
        server.route("POST", "/handover/standby", standby, Guard(TOKEN, "K2_HANDOVER_TOKEN"))
        state["port"] = await server.start()
        stop = asyncio.Event()
        state["stop"] = stop
        state["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the server did not start"
    yield Served(int(state["port"]), bodies)  # type: ignore[call-overload]
    loop = state["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)


def exchange(port: int, data: bytes, finish: bool = True, timeout_s: float = 10.0) -> tuple[int | None, bytes]:
    """Send `data` (then shut the write side when `finish`), read until the server closes: (status, response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            if finish:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything (a 413, 414 or 431)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    response = b"".join(chunks)
    if not response:
        return None, response
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12]), response


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """After the test: nothing logged at ERROR and no traceback, by the server."""
    caplog.set_level(logging.DEBUG, logger="streamer.health")
    yield caplog
    loud = [r for r in caplog.records if r.name == "streamer.health" and (r.levelno >= logging.ERROR or r.exc_info)]
    assert not loud, [r.getMessage() for r in loud]


def test_good_requests_are_served(served: Served, quiet_log: pytest.LogCaptureFixture) -> None:
    assert exchange(served.port, request("GET", "/metrics"))[0] == 200
    status, response = exchange(served.port, request("POST", "/handover/standby", f"Authorization: Bearer {TOKEN}",
                                                     body=b'{"flush_timeout_seconds": 1}'))
    assert status == 200 and response.endswith(b'{"received": 28}')
    chunked = (b"POST /handover/standby HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
               + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert exchange(served.port, chunked)[0] == 200 and served.bodies[-1] == b"hello"


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("100 KB header", request("GET", "/metrics", "X-Big: " + "a" * 100_000), 431),
        ("70 KB URL", request("GET", "/metrics?" + "q" * 70_000), 414),
        ("negative Content-Length", request("POST", "/handover/standby", "Content-Length: -5"), 400),
        ("two Content-Lengths", request("POST", "/handover/standby", "Content-Length: 1", "Content-Length: 2"), 400),
        ("no Host on HTTP/1.1", b"GET /metrics HTTP/1.1\r\n\r\n", 400),
        ("garbage request line", b"\x00\x01\x02 hello\r\n\r\n", 400),
        ("header without a colon", b"GET /metrics HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n", 400),
        ("truncated headers", b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 400),
        ("truncated body", request("POST", "/handover/standby", f"Authorization: Bearer {TOKEN}",
                                   "Content-Length: 10") + b"abc", 400),
        ("unknown path", request("GET", "/nope"), 404),
        ("wrong method", request("DELETE", "/metrics"), 405),
        ("no token", request("POST", "/handover/standby", body=b"{}"), 401),
        ("wrong token", request("POST", "/handover/standby", "Authorization: Bearer nope", body=b"{}"), 401),
        ("body over the limit", request("POST", "/handover/standby", f"Authorization: Bearer {TOKEN}",
                                        f"Content-Length: {MAX_BODY + 1}"), 413),
        ("chunked body over the limit", b"POST /handover/standby HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
         + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
         + (b"10000\r\n" + b"x" * 0x10000 + b"\r\n") * 17 + b"0\r\n\r\n", 413),
        ("connect and close", b"", None),
    ],
)
def test_each_bad_request_gets_its_status(
    served: Served, quiet_log: pytest.LogCaptureFixture, name: str, data: bytes, status: int | None
) -> None:
    got, response = exchange(served.port, data)
    assert got == status, f"{name}: {response[:200]!r}"


def test_a_401_says_how_to_authenticate(served: Served, quiet_log: pytest.LogCaptureFixture) -> None:
    status, response = exchange(served.port, request("POST", "/handover/standby", body=b"{}"))
    assert status == 401 and b'\r\nWWW-Authenticate: Bearer realm="k2-streamer"\r\n' in response


def test_the_token_is_checked_before_the_body_is_read(served: Served, quiet_log: pytest.LogCaptureFixture) -> None:
    # Headers announcing a 1 MiB body, and no body at all, the write side left open: a server that read the body
    # first would wait for it and answer 408 at the request timeout; the refusal comes from the headers alone.
    before = len(served.bodies)
    head = request("POST", "/handover/standby", f"Content-Length: {MAX_BODY}")
    assert exchange(served.port, head, finish=False)[0] == 401
    authorised = request("POST", "/handover/standby", f"Authorization: Bearer {TOKEN}", f"Content-Length: {MAX_BODY}")
    assert exchange(served.port, authorised, finish=False)[0] == 408  # the control: with the token it waits
    assert len(served.bodies) == before


def test_slow_and_idle_clients_are_cut_off_at_the_request_timeout(
    served: Served, quiet_log: pytest.LogCaptureFixture
) -> None:
    assert exchange(served.port, b"GET /metrics HTTP/1.1\r\nHost:", finish=False)[0] == 408
    assert exchange(served.port, b"", finish=False) == (None, b"")  # sent nothing: closed without a word


def test_connections_beyond_the_cap_are_turned_away_and_served_again_after(
    served: Served, quiet_log: pytest.LogCaptureFixture
) -> None:
    holders = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        for holder in holders:  # each is being served (a request started, not finished) until the timeout
            holder.sendall(b"GET /metrics HTTP/1.1\r\n")
        status, response = exchange(served.port, request("GET", "/metrics"))
        assert status == 503 and b"too many connections" in response
    finally:
        for holder in holders:
            holder.close()

    def served_again() -> bool:
        return exchange(served.port, request("GET", "/metrics"))[0] == 200

    wait_for(served_again, 10, "a free connection slot once the holders are gone")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random edit of a request: bytes replaced, inserted, deleted or repeated, or the request cut short."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        edit = rng.randrange(5)
        if edit == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif edit == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif edit == 2:
            del out[at:at + rng.randint(1, 8)]
        elif edit == 3:
            piece = out[at:at + rng.randint(1, 16)] or b"A"
            out[at:at] = piece * rng.choice((2, 100, 5_000))
        else:
            del out[at:]
    return bytes(out)


def test_thousands_of_mutated_requests_get_only_client_errors(
    served: Served, quiet_log: pytest.LogCaptureFixture
) -> None:
    seeds = [
        request("GET", "/metrics"),
        request("POST", "/handover/standby", f"Authorization: Bearer {TOKEN}", body=b'{"flush_timeout_seconds": 1}'),
        request("POST", "/handover/standby", body=b'{"after": {}}'),
        b"POST /handover/standby HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    ]
    rng = random.Random(20261208)
    seen: dict[int | None, int] = {}
    for case in range(2_000):
        data = mutate(rng, rng.choice(seeds))
        status, response = exchange(served.port, data)
        seen[status] = seen.get(status, 0) + 1
        assert status is None or status == 200 or status in CLIENT_ERRORS, (case, data[:300], response[:300])
    # The corpus reached the server's error paths, not only its happy path.
    assert {200, 400, 401, 404, 431}.issubset(seen), seen
