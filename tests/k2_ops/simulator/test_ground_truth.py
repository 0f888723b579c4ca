"""Ground truth: what was generated (queryable by event time) and exactly what each connection was sent;
every connection sees the same market from the moment it joins; memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from k2_ops.simulator import BackgroundSimulator, client_ssl_context
from k2_ops.simulator.ground_truth import GroundTruth, SentLog, Series, merge_ranges
from k2_ops.simulator.testing import all_closed, recv_json, wait_until

SimFactory = Callable[..., BackgroundSimulator]


async def read_until_closed(ws: ClientConnection) -> list[str]:
    texts = []
    try:
        while True:
            texts.append(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed:
        return texts


def test_sent_ids_are_exactly_what_the_client_received(sim: BackgroundSimulator) -> None:
    async def scenario() -> list[dict[str, object]]:
        url = f"{sim.ws_base_url}/stream?streams=btcusdt@trade/btcusdt@aggTrade/ethusdt@depth@100ms"
        async with connect(url, ssl=client_ssl_context(sim.ca_file)) as ws:
            first = await recv_json(ws)
            wait_until(lambda: len(sim.sent_ids("btcusdt", "trade")) >= 50, what="50 trades sent")
            sim.close_connections(code=1000)  # everything sent before the close frame reaches us
            return [first] + [json.loads(t) for t in await read_until_closed(ws)]

    received = asyncio.run(scenario())
    (info,) = all_closed(sim)
    streams = {"btcusdt@trade": "t", "btcusdt@aggTrade": "a", "ethusdt@depth@100ms": "u"}
    for stream, id_field in streams.items():
        symbol, kind = stream.split("@", 1)
        got = [m["data"][id_field] for m in received if m["stream"] == stream]
        sent = sim.sent_ids(symbol, kind, connection_id=info.id)
        assert sent == got and len(got) > 0
        assert set(sent) <= set(sim.generated_ids(symbol, kind))
    assert info.messages_sent == sum(len(sim.sent_ids(s.split("@")[0], s.split("@", 1)[1], info.id)) for s in streams)


def test_every_connection_sees_the_same_market_from_now_on(sim: BackgroundSimulator) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        tls = client_ssl_context(sim.ca_file)
        url = f"{sim.ws_base_url}/ws/btcusdt@trade"
        async with connect(url, ssl=tls) as early:
            first_early = await early.recv()
            wait_until(lambda: len(sim.sent_ids("btcusdt")) >= 30, what="30 trades sent")
            async with connect(url, ssl=tls) as late:
                late_texts = [await asyncio.wait_for(late.recv(), 10) for _ in range(20)]
            early_texts = [first_early] + [await asyncio.wait_for(early.recv(), 10) for _ in range(80)]
        return early_texts, late_texts

    early, late = asyncio.run(scenario())
    early_by_id = {json.loads(t)["t"]: t for t in early}
    late_ids = [json.loads(t)["t"] for t in late]
    assert late_ids[0] > min(early_by_id)  # a new connection starts from now, not from the beginning
    assert late_ids == list(range(late_ids[0], late_ids[0] + len(late_ids)))
    assert all(early_by_id[i] == text for i, text in zip(late_ids, late, strict=True) if i in early_by_id)
    assert any(i in early_by_id for i in late_ids)
    early_conn, late_conn = all_closed(sim)
    union = sim.sent_ids("btcusdt", "trade")
    assert set(sim.sent_ids("btcusdt", "trade", late_conn.id)) <= set(sim.sent_ids("btcusdt", "trade", early_conn.id))
    assert union == sim.sent_ids("btcusdt", "trade", early_conn.id)


def test_generated_ids_by_event_time(sim: BackgroundSimulator) -> None:
    async def scenario() -> list[dict[str, int]]:
        async with connect(f"{sim.ws_base_url}/ws/ethusdt@trade", ssl=client_ssl_context(sim.ca_file)) as ws:
            return [await recv_json(ws) for _ in range(60)]

    trades = asyncio.run(scenario())
    since, until = trades[10]["E"], trades[50]["E"]
    expected = [t["t"] for t in trades if since <= t["E"] < until]
    assert sim.generated_ids("ethusdt", "trade", since=since, until=until) == expected
    assert sim.generated_ids("ETHUSDT", since=since, until=until) == expected
    assert sim.generated_ids("ethusdt", since=until + 10**9) == []
    assert sim.generated_ids("dogeusdt") == []


def test_ground_truth_is_bounded(make_sim: SimFactory) -> None:
    sim = make_sim(ground_truth_max_per_series=100, rate_per_symbol=5000.0, symbols=("btcusdt",))
    wait_until(lambda: sim.status()["generated"].get("btcusdt@trade", 0) > 500, what="500 trades")
    kept = sim.generated_ids("btcusdt")
    assert 0 < len(kept) <= 100
    assert kept == list(range(kept[0], kept[0] + len(kept)))  # the newest, still contiguous


def test_series_trims_oldest_and_answers_ranges() -> None:
    series = Series(max_len=10)
    for i in range(25):
        series.append(100 + i, 1000 + i)
    assert len(series.ids) <= 10 and series.end == 25
    assert series.ids.tolist() == list(range(125 - len(series.ids), 125))
    assert series.between(1020, 1023) == [120, 121, 122]
    assert series.ids_in([(0, 5), (20, 23)]) == [120, 121, 122]  # dropped positions are skipped
    unordered = Series(max_len=10)
    for ident, t in [(1, 5), (2, 3), (3, 7)]:
        unordered.append(ident, t)
    assert unordered.between(4, None) == [1, 3]


def test_sent_logs_merge_contiguous_ranges() -> None:
    log = SentLog()
    key = ("btcusdt", "trade")
    log.add(key, 0, 3)
    log.add(key, 3, 5)
    log.add(key, 7, 9)
    assert log.get(key) == [(0, 5), (7, 9)]
    assert merge_ranges([(7, 9), (0, 5), (4, 8)]) == [(0, 9)]
    truth = GroundTruth(max_per_series=100)
    series = truth.series_for("btcusdt", "trade")
    for i in range(10):
        series.append(500 + i, i)
    truth.sent[1] = log
    other = SentLog()
    other.add(key, 5, 6)
    truth.sent[2] = other
    assert truth.sent_ids("btcusdt", "trade", 1) == [500, 501, 502, 503, 504, 507, 508]
    assert truth.sent_ids("btcusdt", "trade") == [500, 501, 502, 503, 504, 505, 507, 508]


def test_sent_ids_stay_exact_when_the_client_falls_behind(make_sim: SimFactory) -> None:
    """A client that stops reading makes the simulator queue; queued data that never reaches the socket
    (the close frame overtakes it) is not counted as sent."""
    sim = make_sim(rate_per_symbol=20_000.0, symbols=("btcusdt",), max_incoming_per_s=None)

    async def scenario() -> list[int]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up quickly
        sock.connect(("127.0.0.1", sim.port))
        url = f"{sim.ws_base_url}/ws/btcusdt@trade"
        async with connect(url, ssl=client_ssl_context(sim.ca_file), sock=sock, max_queue=4) as ws:
            first = await recv_json(ws)
            wait_until(lambda: sim.connections()[0].queued_bytes > 0, what="the simulator to queue")
            sim.close_connections(code=1000)
            return [first["t"]] + [json.loads(t)["t"] for t in await read_until_closed(ws)]

    received = asyncio.run(scenario())
    (info,) = all_closed(sim)
    assert received == sim.sent_ids("btcusdt", "trade", connection_id=info.id)
    assert info.messages_sent == len(received)
    assert len(sim.generated_ids("btcusdt")) > len(received)
