"""Binance's connection rules on compressed clocks: server pings and the pong deadline, the connection
lifetime, the incoming-message limit, the stream limit and the connection-attempt limit (HTTP 429)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from k2_ops.simulator import BackgroundSimulator, client_ssl_context
from k2_ops.simulator.testing import (
    SilentClientConnection,
    all_closed,
    async_wait_until,
    recv_json,
    recv_response,
    wait_until,
)

SimFactory = Callable[..., BackgroundSimulator]


async def closed_by_server(ws: object, timeout_s: float = 10.0) -> ConnectionClosed:
    """Read until the server closes the connection; returns the ConnectionClosed it ended with."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("unreachable")


def test_client_that_never_pongs_is_disconnected(make_sim: SimFactory) -> None:
    sim = make_sim(server_ping_interval_s=0.1, pong_timeout_s=0.4, max_incoming_per_s=None)

    async def scenario() -> tuple[ConnectionClosed, list[bytes]]:
        url = f"{sim.ws_base_url}/ws/btcusdt@trade"
        tls = client_ssl_context(sim.ca_file)
        async with connect(url, ssl=tls, create_connection=SilentClientConnection, ping_interval=None) as ws:
            # Unsolicited pongs are allowed but do not keep the connection alive.
            await ws.pong(b"")
            closed = await closed_by_server(ws)
            return closed, ws.pings_received  # type: ignore[attr-defined]

    closed, pings = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1008 and closed.rcvd.reason == "Pong timeout"
    assert pings and all(pings), "server pings carry a payload"
    (info,) = all_closed(sim)
    assert info.close_reason == "pong timeout" and info.pings_sent >= 1 and info.pongs_received >= 1


def test_client_that_echoes_pings_stays_connected(make_sim: SimFactory) -> None:
    sim = make_sim(server_ping_interval_s=0.1, pong_timeout_s=0.5, max_incoming_per_s=None)

    async def scenario() -> None:
        # No market data on this connection: the client is never blocked behind unread messages.
        url = f"{sim.ws_base_url}/ws"
        tls = client_ssl_context(sim.ca_file)
        async with connect(url, ssl=tls, create_connection=SilentClientConnection, ping_interval=None) as ws:
            ws.answer_pings = True  # type: ignore[attr-defined]
            reader = asyncio.create_task(ws.recv())
            # Ten pings span two pong deadlines: answered ones never disconnect.
            await async_wait_until(lambda: sim.connections()[0].pings_sent >= 10, what="10 server pings")
            assert not reader.done()  # nothing ended the connection
            reader.cancel()
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert await recv_response(ws, 1) == {"result": [], "id": 1}
            pings = ws.pings_received  # type: ignore[attr-defined]
            assert len(pings) >= 10 and len(set(pings)) == len(pings)

    asyncio.run(scenario())
    (info,) = all_closed(sim)
    assert info.close_code == 1000 and info.pongs_received >= 10


def test_connection_lifetime_ends_with_a_close(make_sim: SimFactory) -> None:
    sim = make_sim(max_lifetime_s=0.5)

    async def scenario() -> ConnectionClosed:
        async with connect(f"{sim.ws_base_url}/ws/btcusdt@trade", ssl=client_ssl_context(sim.ca_file)) as ws:
            return await closed_by_server(ws)

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    (info,) = all_closed(sim)
    assert info.close_reason == "lifetime" and info.closed_at is not None
    assert info.closed_at - info.opened_at >= 0.5


def test_more_than_five_messages_a_second_disconnects(make_sim: SimFactory) -> None:
    sim = make_sim(server_ping_interval_s=None)

    async def scenario() -> ConnectionClosed:
        async with connect(f"{sim.ws_base_url}/ws", ssl=client_ssl_context(sim.ca_file)) as ws:
            # Back to back, so all six land within the one-second window whatever the machine's load.
            for i in range(5):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            await ws.ping()  # a ping frame counts too: the sixth message
            return await closed_by_server(ws)

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1008, "Too many requests")
    assert all_closed(sim)[0].close_reason == "too many incoming messages"


def test_messages_within_the_limit_are_fine(make_sim: SimFactory) -> None:
    sim = make_sim(server_ping_interval_s=None, max_incoming_per_s=3, incoming_window_s=0.2)

    async def scenario() -> None:
        async with connect(f"{sim.ws_base_url}/ws", ssl=client_ssl_context(sim.ca_file)) as ws:
            for i in range(9):  # three per 0.2 s window, paced by the server's own window
                if i and i % 3 == 0:
                    await asyncio.sleep(0.25)  # the window length is the rule under test, not a guess
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                await recv_response(ws, i)

    asyncio.run(scenario())
    assert all_closed(sim)[0].close_code == 1000


def test_stream_limit(make_sim: SimFactory) -> None:
    sim = make_sim(max_incoming_per_s=None)
    names = [f"sym{i:04d}@trade" for i in range(1025)]

    async def scenario() -> None:
        async with connect(f"{sim.ws_base_url}/ws", ssl=client_ssl_context(sim.ca_file)) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
            too_many = await recv_response(ws, 1)
            assert too_many["error"]["code"] == 2 and "too many streams" in too_many["error"]["msg"]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[:1024], "id": 2}))
            assert await recv_response(ws, 2) == {"result": None, "id": 2}
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[1024:], "id": 3}))
            assert "error" in await recv_response(ws, 3)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
            assert len((await recv_response(ws, 4))["result"]) == 1024

    asyncio.run(scenario())


def test_stream_limit_in_the_url(make_sim: SimFactory) -> None:
    sim = make_sim(max_streams_per_connection=2)

    async def scenario() -> int:
        url = f"{sim.ws_base_url}/stream?streams=btcusdt@trade/ethusdt@trade/btcusdt@aggTrade"
        try:
            async with connect(url, ssl=client_ssl_context(sim.ca_file)):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(scenario()) == 400


def test_too_many_connection_attempts_get_http_429(make_sim: SimFactory) -> None:
    sim = make_sim(max_connection_attempts=3, connection_attempt_window_s=60.0)

    async def attempt() -> int:
        try:
            async with connect(f"{sim.ws_base_url}/ws/btcusdt@trade", ssl=client_ssl_context(sim.ca_file)):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def scenario() -> list[int]:
        return [await attempt() for _ in range(5)]

    assert asyncio.run(scenario()) == [101, 101, 101, 429, 429]
    assert sim.connection_attempts() == 5


def test_attempt_window_slides(make_sim: SimFactory) -> None:
    sim = make_sim(max_connection_attempts=2, connection_attempt_window_s=0.5)

    async def attempt() -> int:
        try:
            async with connect(f"{sim.ws_base_url}/ws", ssl=client_ssl_context(sim.ca_file)):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def scenario() -> None:
        assert [await attempt() for _ in range(3)] == [101, 101, 429]
        # Refused attempts count too, so polling would keep the limit hit: wait out the window itself.
        await asyncio.sleep(0.6)
        assert await attempt() == 101

    asyncio.run(scenario())


def test_client_pings_get_pongs_unless_switched_off(make_sim: SimFactory) -> None:
    sim = make_sim(max_incoming_per_s=None)

    async def scenario() -> None:
        url = f"{sim.ws_base_url}/ws/btcusdt@trade"
        async with connect(url, ssl=client_ssl_context(sim.ca_file), ping_interval=None) as ws:
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            assert sim.set_answer_pings(False) == 1
            silent = await ws.ping(b"still there?")
            # The server answers a ping before it reads the next message, so once the reply to a later
            # request is here, a pong would have been too.
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 99}))
            await recv_response(ws, 99)
            assert not silent.done()
            sim.set_answer_pings(True)
            await asyncio.wait_for(await ws.ping(b"again"), 5)  # acknowledges the unanswered one too
            assert silent.done()

    asyncio.run(scenario())
    wait_until(lambda: sim.connections()[0].client_pings == 3, what="three client pings counted")


def test_a_client_that_does_not_read_is_dropped_once_its_queue_is_full(make_sim: SimFactory) -> None:
    sim = make_sim(rate_per_symbol=20_000.0, symbols=("btcusdt",), max_send_buffer_bytes=256 * 1024)

    async def scenario() -> ConnectionClosed:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", sim.port))
        url = f"{sim.ws_base_url}/ws/btcusdt@trade"
        async with connect(url, ssl=client_ssl_context(sim.ca_file), sock=sock, max_queue=4) as ws:
            await recv_json(ws)
            wait_until(lambda: sim.connections()[0].closed_at is not None, what="the slow client to be dropped")
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return exc
        raise AssertionError("unreachable")

    closed = asyncio.run(scenario())
    assert closed.rcvd is None  # dropped, no close frame
    (info,) = all_closed(sim)
    assert (info.close_code, info.close_reason) == (1006, "slow consumer")
