"""The HTTP fault-injection endpoint on loopback: faults reach real clients; ground truth and status are
served as JSON; bad requests get clear errors."""

from __future__ import annotations

import asyncio
import inspect
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from k2_ops.simulator import BackgroundSimulator, client_ssl_context
from k2_ops.simulator.control import FAULTS
from k2_ops.simulator.testing import all_closed, recv_json, wait_until

SimFactory = Callable[..., BackgroundSimulator]


def call(sim: BackgroundSimulator, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"{sim.control_url}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def controlled(make_sim: SimFactory) -> BackgroundSimulator:
    return make_sim(control_port=0, max_incoming_per_s=None)


def test_control_endpoint_is_on_loopback(controlled: BackgroundSimulator) -> None:
    assert controlled.control_url.startswith("http://127.0.0.1:")
    status, body = call(controlled, "GET", "/status")
    assert status == 200 and body["ok"] and body["result"]["port"] == controlled.port


def test_faults_over_http_reach_the_client(controlled: BackgroundSimulator) -> None:
    sim = controlled

    async def scenario() -> ConnectionClosed:
        async with connect(f"{sim.ws_base_url}/ws/btcusdt@trade", ssl=client_ssl_context(sim.ca_file)) as ws:
            await recv_json(ws)
            assert call(sim, "POST", "/pause_market") == (200, {"ok": True, "result": None})
            assert call(sim, "POST", "/send_unknown_event", {"count": 1})[1]["result"] == 1
            while (await recv_json(ws)).get("e") != "k2UnknownEvent":
                pass
            assert call(sim, "POST", "/close_connections", {"code": 1011, "reason": "via http"})[0] == 200
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return exc

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1011, "via http")
    all_closed(sim)  # the server records the close a moment after the client sees it
    status, body = call(sim, "GET", "/connections")
    assert status == 200 and body["result"][0]["close_code"] == 1011


def test_ground_truth_over_http(controlled: BackgroundSimulator) -> None:
    sim = controlled
    wait_until(lambda: len(sim.generated_ids("btcusdt")) >= 5, what="5 trades")
    sim.pause_market()
    status, body = call(sim, "GET", "/generated_ids?symbol=btcusdt&stream=trade")
    assert status == 200 and body["result"] == sim.generated_ids("btcusdt", "trade")
    since = 0
    status, body = call(sim, "GET", f"/generated_ids?symbol=ethusdt&stream=aggTrade&since={since}")
    assert body["result"] == sim.generated_ids("ethusdt", "aggTrade", since=since)
    assert call(sim, "GET", "/sent_ids?symbol=btcusdt")[1]["result"] == []
    assert call(sim, "GET", "/connection_attempts")[1]["result"] == 0


def test_bad_requests_are_explained(controlled: BackgroundSimulator) -> None:
    sim = controlled
    status, body = call(sim, "POST", "/close_connections", {"code": 1006})
    assert status == 400 and "close code" in body["error"]
    status, body = call(sim, "POST", "/stall", {"minutes": 1})
    assert status == 400 and "minutes" in body["error"]
    status, body = call(sim, "POST", "/stall", b"{not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = call(sim, "POST", "/format_disk")
    assert status == 404 and "unknown fault" in body["error"]
    status, body = call(sim, "GET", "/generated_ids?stream=trade")
    assert status == 400 and "symbol" in body["error"]
    status, body = call(sim, "GET", "/generated_ids?symbol=btcusdt&stream=kline")
    assert status == 400 and "unknown stream" in body["error"]
    status, body = call(sim, "GET", "/sent_ids?symbol=btcusdt&connection_id=42")
    assert status == 404
    assert call(sim, "GET", "/nowhere")[0] == 404


def test_every_fault_route_is_a_simulator_method() -> None:
    for name in FAULTS:
        assert inspect.isfunction(getattr(BackgroundSimulator, name)), name
