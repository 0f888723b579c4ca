"""Every fault injection is observable by a real client over TLS."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidMessage, InvalidStatus

from k2_ops.simulator import BackgroundSimulator, client_ssl_context
from k2_ops.simulator.testing import all_closed, async_wait_until, recv_json, wait_until

SimFactory = Callable[..., BackgroundSimulator]


def open_ws(sim: BackgroundSimulator, path: str, **kwargs: Any) -> Any:
    return connect(f"{sim.ws_base_url}{path}", ssl=client_ssl_context(sim.ca_file), **kwargs)


async def until_closed(ws: ClientConnection, timeout_s: float = 10.0) -> ConnectionClosed:
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("unreachable")


def test_drop_is_an_abrupt_tcp_drop(sim: BackgroundSimulator) -> None:
    async def scenario() -> ConnectionClosed:
        async with open_ws(sim, "/ws/btcusdt@trade") as ws:
            await recv_json(ws)
            assert sim.drop_connections() == 1
            return await until_closed(ws)

    closed = asyncio.run(scenario())
    assert isinstance(closed, ConnectionClosedError) and closed.rcvd is None  # no close frame
    (info,) = all_closed(sim)
    assert (info.close_code, info.close_reason) == (1006, "dropped")


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011])
def test_close_with_a_chosen_code(sim: BackgroundSimulator, code: int) -> None:
    async def scenario() -> ConnectionClosed:
        async with open_ws(sim, "/stream?streams=btcusdt@trade") as ws:
            await recv_json(ws)
            sim.close_connections(code=code, reason=f"fault {code}")
            return await until_closed(ws)

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (code, f"fault {code}")
    assert all_closed(sim)[0].close_code == code


def test_close_code_is_validated(sim: BackgroundSimulator) -> None:
    with pytest.raises(ValueError, match="close code"):
        sim.close_connections(code=1006)


def test_stall_sends_nothing_until_resumed(sim: BackgroundSimulator) -> None:
    async def scenario() -> None:
        async with open_ws(sim, "/ws/btcusdt@trade") as ws:
            received = [(await recv_json(ws))["t"]]
            sim.stall()
            (info,) = sim.connections()
            last_sent = sim.sent_ids("btcusdt", "trade", connection_id=info.id)[-1]
            generated_at_stall = len(sim.generated_ids("btcusdt"))
            # The market keeps moving while this socket is silent.
            await async_wait_until(lambda: len(sim.generated_ids("btcusdt")) >= generated_at_stall + 30)
            assert sim.sent_ids("btcusdt", "trade", connection_id=info.id)[-1] == last_sent
            while received[-1] != last_sent:  # what was in flight before the stall, and nothing more
                received.append((await recv_json(ws))["t"])
            async with open_ws(sim, "/ws/btcusdt@trade") as fresh:  # new connections are not stalled
                assert (await recv_json(fresh))["t"] > last_sent
            sim.resume_data()
            resumed = await recv_json(ws)
            assert resumed["t"] > last_sent + 30  # the stalled stretch is gone for this connection

    asyncio.run(scenario())


def test_stall_for_seconds_resumes_by_itself(sim: BackgroundSimulator) -> None:
    async def scenario() -> None:
        async with open_ws(sim, "/ws/btcusdt@trade") as ws:
            await recv_json(ws)
            sim.stall(seconds=0.3)
            (info,) = sim.connections()
            stalled_at = len(sim.sent_ids("btcusdt", connection_id=info.id))
            await async_wait_until(lambda: len(sim.sent_ids("btcusdt", connection_id=info.id)) > stalled_at)

    asyncio.run(scenario())


def test_malformed_unknown_and_shutdown_messages(sim: BackgroundSimulator) -> None:
    async def scenario() -> None:
        async with (
            open_ws(sim, "/ws/btcusdt@trade") as raw,
            open_ws(sim, "/stream?streams=ethusdt@trade") as combined,
        ):
            await recv_json(raw)
            await recv_json(combined)
            sim.pause_market()  # only fault messages from here on
            assert sim.send_malformed(count=3) == 2
            assert sim.send_unknown_event(count=2) == 2
            assert sim.server_shutdown() == 2

            async def fault_messages(ws: ClientConnection) -> list[Any]:
                out: list[Any] = []
                while True:
                    text = await asyncio.wait_for(ws.recv(), 10)
                    try:
                        message = json.loads(text)
                    except json.JSONDecodeError:
                        out.append(("malformed", text))
                        continue
                    data = message.get("data", message)
                    if data.get("e") == "trade":
                        continue  # generated before the pause
                    out.append(message)
                    if data.get("e") == "serverShutdown":
                        return out

            raw_faults = await fault_messages(raw)
            assert [m[0] for m in raw_faults[:3]] == ["malformed"] * 3
            assert [m["e"] for m in raw_faults[3:5]] == ["k2UnknownEvent"] * 2
            assert raw_faults[5]["e"] == "serverShutdown" and isinstance(raw_faults[5]["E"], int)
            assert list(raw_faults[5]) == ["e", "E"]
            combined_faults = await fault_messages(combined)
            assert combined_faults[3]["stream"] == "ethusdt@trade"
            assert combined_faults[3]["data"]["e"] == "k2UnknownEvent"
            assert combined_faults[5]["stream"] == "!serverShutdown"
            assert combined_faults[5]["data"]["e"] == "serverShutdown"

    asyncio.run(scenario())


def test_server_shutdown_then_close(sim: BackgroundSimulator) -> None:
    async def scenario() -> ConnectionClosed:
        async with open_ws(sim, "/ws/btcusdt@trade") as ws:
            await recv_json(ws)
            sim.server_shutdown(close_after_s=0.1)
            return await until_closed(ws)

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert all_closed(sim)[0].close_reason == "server shutdown"


def test_oversized_frame(sim: BackgroundSimulator) -> None:
    size = 2_000_000

    async def scenario() -> tuple[int, ConnectionClosed]:
        async with (
            open_ws(sim, "/stream?streams=btcusdt@trade", max_size=None) as big,
            open_ws(sim, "/ws/btcusdt@trade") as small,
        ):  # websockets' default max_size is 1 MiB
            await recv_json(big)
            await recv_json(small)
            sim.send_oversized(size_bytes=size)
            while True:
                text = await asyncio.wait_for(big.recv(), 10)
                if len(text) > 100_000:
                    message = json.loads(text)
                    assert message["data"]["e"] == "k2Oversized"
                    break
            return len(text.encode()), await until_closed(small)

    received, closed = asyncio.run(scenario())
    assert received == size
    assert closed.sent is not None and closed.sent.code == 1009  # the client refused the frame


def test_refuse_connections_with_http_503(sim: BackgroundSimulator) -> None:
    sim.refuse_connections(seconds=0.5)

    async def attempt() -> int:
        try:
            async with open_ws(sim, "/ws/btcusdt@trade"):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt()) == 503
    wait_until(lambda: asyncio.run(attempt()) == 101, timeout_s=10, interval_s=0.1, what="refusal to end")


def test_refuse_connections_with_tcp_reset(sim: BackgroundSimulator) -> None:
    sim.refuse_connections(seconds=30, mode="tcp_reset")

    async def attempt() -> None:
        async with open_ws(sim, "/ws/btcusdt@trade", open_timeout=5):
            pass

    # The socket is reset right after accept: no HTTP response at all (unlike the 503 mode).
    with pytest.raises((OSError, InvalidMessage)):
        asyncio.run(attempt())
    assert sim.connections() == []


def test_pause_resume_and_rate(sim: BackgroundSimulator) -> None:
    wait_until(lambda: sim.generated_ids("btcusdt"), what="first trades")
    sim.pause_market()
    paused_at = len(sim.generated_ids("btcusdt"))
    ticks = sim.status()["ticks"]
    wait_until(lambda: sim.status()["ticks"] >= ticks + 20, what="20 ticks")
    assert len(sim.generated_ids("btcusdt")) == paused_at
    sim.resume_market()
    wait_until(lambda: len(sim.generated_ids("btcusdt")) > paused_at, what="trades after resume")

    sim.set_rate(0)
    stopped_at = len(sim.generated_ids("ethusdt"))
    ticks = sim.status()["ticks"]
    wait_until(lambda: sim.status()["ticks"] >= ticks + 20, what="20 ticks")
    assert len(sim.generated_ids("ethusdt")) == stopped_at
    sim.set_rate(2000)
    wait_until(lambda: len(sim.generated_ids("ethusdt")) >= stopped_at + 500, what="500 trades at 2000/s")


def test_burst_multiplies_the_rate(make_sim: SimFactory) -> None:
    sim = make_sim(rate_per_symbol=20.0, symbols=("btcusdt",))

    def reached(ms: int) -> bool:  # the simulator's own clock has passed `ms`
        return bool(sim.generated_ids("btcusdt", since=ms))

    start_ms = int(time.time() * 1000)
    wait_until(lambda: reached(start_ms + 1000), what="a second of normal trading")
    sim.burst(multiplier=20.0, seconds=1.0)
    burst_ms = int(time.time() * 1000)
    wait_until(lambda: reached(burst_ms + 1000), what="the end of the burst")
    normal = len(sim.generated_ids("btcusdt", since=start_ms, until=start_ms + 1000))
    bursty = len(sim.generated_ids("btcusdt", since=burst_ms, until=burst_ms + 1000))
    assert bursty > 5 * max(normal, 1), (normal, bursty)
