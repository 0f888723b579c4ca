"""Payloads match Binance's documentation and real recordings, field by field (names, order, JSON types),
and the id rules hold on the wire: trade t contiguous, aggTrade a contiguous with f/l, depth U == prev u + 1.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import re
import ssl
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from k2_ops.simulator import BackgroundSimulator
from k2_ops.simulator.frames import text_frame
from k2_ops.simulator.testing import recv_json

# Binance "WebSocket Market Streams" examples (spot, 2026): trade has no b/a since 2024-06-18,
# bookTicker has no e/E on spot.
DOCUMENTED: dict[str, dict[str, Any]] = {
    "trade": {
        "e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
        "T": 1672515782136, "m": True, "M": True,
    },
    "aggTrade": {
        "e": "aggTrade", "E": 1672515782136, "s": "BNBBTC", "a": 12345, "p": "0.001", "q": "100",
        "f": 100, "l": 105, "T": 1672515782136, "m": True, "M": True,
    },
    "bookTicker": {
        "u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
        "A": "40.66000000",
    },
    "depth@100ms": {
        "e": "depthUpdate", "E": 1672515782136, "s": "BNBBTC", "U": 157, "u": 160,
        "b": [["0.0024", "10"]], "a": [["0.0026", "100"]],
    },
}  # fmt: skip
DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")
STREAMS = tuple(DOCUMENTED)


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def signature(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Field names in order with their JSON types."""
    return [(key, json_type(value)) for key, value in payload.items()]


def check_levels(levels: Any) -> None:
    assert isinstance(levels, list)
    for level in levels:
        assert isinstance(level, list) and len(level) == 2, level
        assert all(isinstance(x, str) and DECIMAL_8.match(x) for x in level), level


def real_samples(samples: Path) -> dict[str, dict[str, Any]]:
    """The first recorded payload of each stream (aggTrade comes from the cryptofeed recording)."""
    found: dict[str, dict[str, Any]] = {}
    with gzip.open(samples / "btcusdt_20240808.gz", "rt") as lines:
        for line in lines:
            frame = json.loads(line.split(" ", 1)[1])
            stream = frame.get("stream", "").removeprefix("btcusdt@")
            data = frame.get("data")
            if stream in STREAMS and stream not in found and (stream != "depth@100ms" or data["a"]):
                found[stream] = data
            if len(found) == 3:
                break
    with open(samples / "cryptofeed_BINANCE.ws.1.0") as lines:
        for line in lines:
            if '@aggTrade","data"' in line:
                found["aggTrade"] = json.loads(line.split(": ", 1)[1])["data"]
                break
    return found


async def collect(url: str, tls: ssl.SSLContext, per_stream: int) -> dict[str, list[dict[str, Any]]]:
    """At least `per_stream` combined messages of each btcusdt stream (depth: a fifth, it comes every
    100 ms), in arrival order."""
    got: dict[str, list[dict[str, Any]]] = {s: [] for s in STREAMS}
    need = {s: per_stream if s != "depth@100ms" else max(per_stream // 5, 2) for s in STREAMS}
    async with connect(url, ssl=tls, max_size=None) as ws:
        while any(len(got[s]) < need[s] for s in STREAMS):
            message = await recv_json(ws)
            assert list(message) == ["stream", "data"]
            got[message["stream"].removeprefix("btcusdt@")].append(message["data"])
    return got


def test_every_stream_matches_documentation_and_recordings(
    sim: BackgroundSimulator, tls: ssl.SSLContext, samples: Path
) -> None:
    url = f"{sim.ws_base_url}/stream?streams=" + "/".join(f"btcusdt@{s}" for s in STREAMS)
    got = asyncio.run(collect(url, tls, per_stream=5))
    recorded = real_samples(samples)
    for stream in STREAMS:
        for payload in got[stream]:
            assert signature(payload) == signature(DOCUMENTED[stream]), stream
            assert signature(payload) == signature(recorded[stream]), stream
            assert payload["s"] == "BTCUSDT"
            for key in ("p", "q", "b", "B", "a", "A"):
                if isinstance(payload.get(key), str):
                    assert DECIMAL_8.match(payload[key]), (stream, key, payload[key])
        if stream == "depth@100ms":
            for payload in got[stream]:
                check_levels(payload["b"])
                check_levels(payload["a"])
                check_levels(recorded[stream]["b"])
    assert [k for k, _ in signature(got["trade"][0])] == ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
    assert got["trade"][0]["M"] is True and got["trade"][0]["T"] <= got["trade"][0]["E"]


def test_raw_streams_are_unwrapped(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    async def scenario() -> None:
        for stream in STREAMS:
            async with connect(f"{sim.ws_base_url}/ws/ethusdt@{stream}", ssl=tls) as ws:
                payload = await recv_json(ws)
                assert signature(payload) == signature(DOCUMENTED[stream])
                assert payload["s"] == "ETHUSDT"

    asyncio.run(scenario())


def test_ids_follow_binance_rules_on_the_wire(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    url = f"{sim.ws_base_url}/stream?streams=" + "/".join(f"btcusdt@{s}" for s in STREAMS)
    got = asyncio.run(collect(url, tls, per_stream=40))
    trade_ids = [m["t"] for m in got["trade"]]
    assert trade_ids == list(range(trade_ids[0], trade_ids[0] + len(trade_ids)))
    assert trade_ids[0] > 2**31  # realistic magnitudes catch 32-bit assumptions

    aggs = got["aggTrade"]
    assert [m["a"] for m in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs)))
    assert aggs[0]["f"] == trade_ids[0]  # subscribed together: both start at the same taker order
    for previous, current in itertools.pairwise(aggs):
        assert current["f"] == previous["l"] + 1
    covered = [t for m in aggs for t in range(m["f"], m["l"] + 1)]
    common = min(len(covered), len(trade_ids))
    assert covered[:common] == trade_ids[:common]
    by_id = {m["t"]: m for m in got["trade"]}
    for agg in aggs:
        trades = [by_id[t] for t in range(agg["f"], agg["l"] + 1) if t in by_id]
        assert all(t["p"] == agg["p"] and t["m"] == agg["m"] for t in trades)

    depth = got["depth@100ms"]
    for previous, current in itertools.pairwise(depth):
        assert current["U"] == previous["u"] + 1
        assert current["U"] <= current["u"]
        assert current["E"] >= previous["E"]
    tickers = [m["u"] for m in got["bookTicker"]]
    assert all(b > a for a, b in itertools.pairwise(tickers))
    spans = [(m["U"], m["u"]) for m in depth]
    inside = [u for u in tickers if spans[0][0] <= u <= spans[-1][1]]
    assert inside and all(any(lo <= u <= hi for lo, hi in spans) for u in inside)


def test_symbols_have_their_own_id_spaces(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    async def scenario() -> dict[str, list[int]]:
        ids: dict[str, list[int]] = {"BTCUSDT": [], "ETHUSDT": []}
        url = f"{sim.ws_base_url}/stream?streams=btcusdt@trade/ethusdt@trade"
        async with connect(url, ssl=tls) as ws:
            while min(len(v) for v in ids.values()) < 20:
                data = (await recv_json(ws))["data"]
                ids[data["s"]].append(data["t"])
        return ids

    for trade_ids in asyncio.run(scenario()).values():
        assert trade_ids == list(range(trade_ids[0], trade_ids[0] + len(trade_ids)))


def test_prebuilt_frames_equal_websockets_serialisation() -> None:
    for size in (0, 1, 125, 126, 65535, 65536, 200_000):
        payload = b"x" * size
        assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)
