"""Replay of the real BTCUSDT recording: full speed reproduces every frame byte for byte (its 9,757
trade ids in order); paced replay respects the recorded spacing divided by the speed."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from k2_ops.simulator import BackgroundSimulator, client_ssl_context
from k2_ops.simulator.replay import RecordingError, parse_line

SimFactory = Callable[..., BackgroundSimulator]
STREAMS = ("btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms")


def recorded_frames(path: Path) -> list[str]:
    """The recorded combined-stream frames exactly as received from Binance (the REST line excluded)."""
    with gzip.open(path, "rt") as lines:
        return [raw for raw in (line.rstrip("\n").split(" ", 1)[1] for line in lines) if raw.startswith('{"stream"')]


def test_full_speed_replay_reproduces_the_recording(make_sim: SimFactory, samples: Path) -> None:
    recording = samples / "btcusdt_20240808.gz"
    expected = recorded_frames(recording)
    expected_trades = [json.loads(f)["data"]["t"] for f in expected if f.startswith('{"stream":"btcusdt@trade"')]
    assert len(expected_trades) == 9757
    sim = make_sim(replay_file=recording, replay_speed=0, symbols=())

    async def scenario() -> list[str]:
        url = f"{sim.ws_base_url}/stream?streams=" + "/".join(STREAMS)
        async with connect(url, ssl=client_ssl_context(sim.ca_file), max_size=None) as ws:
            return [await asyncio.wait_for(ws.recv(), 10) for _ in expected]

    received = asyncio.run(scenario())
    assert received == expected  # every frame, in order, byte for byte
    trades = [json.loads(f)["data"]["t"] for f in received if f.startswith('{"stream":"btcusdt@trade"')]
    assert trades == expected_trades == list(range(3735683259, 3735693016))
    assert sim.generated_ids("btcusdt", "trade") == expected_trades
    assert sim.sent_ids("btcusdt", "trade") == expected_trades
    assert sim.replay_finished()
    recorded_e = [json.loads(f)["data"]["E"] for f in expected if f.startswith('{"stream":"btcusdt@trade"')]
    window = sim.generated_ids("btcusdt", "trade", since=recorded_e[100], until=recorded_e[200])
    assert window == [
        t for t, e in zip(expected_trades, recorded_e, strict=True) if recorded_e[100] <= e < recorded_e[200]
    ]


def write_recording(path: Path, offsets_s: list[float]) -> list[int]:
    base_ns = 1_723_161_253_937_085_768
    ids = []
    with gzip.open(path, "wt") as out:
        out.write(f'{base_ns} {{"lastUpdateId":1,"bids":[],"asks":[]}}\n')
        for i, offset in enumerate(offsets_s):
            trade_id = 1000 + i
            ids.append(trade_id)
            data = (
                f'{{"e":"trade","E":{1723161255343 + i},"s":"BTCUSDT","t":{trade_id},"p":"1.00000000",'
                f'"q":"1.00000000","T":{1723161255342 + i},"m":true,"M":true}}'
            )
            out.write(f'{base_ns + int(offset * 1e9)} {{"stream":"btcusdt@trade","data":{data}}}\n')
    return ids


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_paced_replay_keeps_the_recorded_spacing(make_sim: SimFactory, tmp_path: Path, speed: float) -> None:
    offsets = [0.0, 0.1, 0.2, 0.4]
    ids = write_recording(tmp_path / "small.gz", offsets)
    sim = make_sim(replay_file=tmp_path / "small.gz", replay_speed=speed, symbols=())

    async def scenario() -> list[tuple[float, int]]:
        async with connect(f"{sim.ws_base_url}/ws/btcusdt@trade", ssl=client_ssl_context(sim.ca_file)) as ws:
            out = []
            for _ in ids:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                out.append((time.monotonic(), message["t"]))
            return out

    arrivals = asyncio.run(scenario())
    assert [t for _, t in arrivals] == ids
    # Never early: the last frame comes at least the recorded span / speed after the first.
    assert arrivals[-1][0] - arrivals[0][0] >= (offsets[-1] - offsets[0]) / speed - 0.02


def test_recording_lines() -> None:
    assert parse_line('1 {"lastUpdateId":1,"bids":[],"asks":[]}') is None
    assert parse_line('1 {"stream":"btcusdt@kline_1m","data":{}}') is None
    recv_ns, event = parse_line('7 {"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT"}}') or (0, None)
    assert recv_ns == 7 and event is not None and (event.kind, event.ident, event.time_ms) == ("bookTicker", 5, 0)
    assert event.payload == b'{"u":5,"s":"BTCUSDT"}'
    with pytest.raises(RecordingError, match="line 3"):
        parse_line("not a recording line", 3)
    with pytest.raises(RecordingError, match="integer 't'"):
        parse_line('1 {"stream":"btcusdt@trade","data":{"e":"trade"}}')
