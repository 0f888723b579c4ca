"""What the connection pool and symbol discovery need from the simulator, over its real TLS endpoint: URLs over
Binance's ~8,000 characters refused (HTTP 414), GET /api/v3/exchangeInfo in Binance's format, listings and
delistings injected from the control endpoint, and the REST API made unreachable on demand."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from k2_ops.simulator import BackgroundSimulator
from k2_ops.simulator.market import quote_asset
from k2_ops.simulator.testing import recv_json, wait_until


def rest(sim: BackgroundSimulator, tls: ssl.SSLContext, path: str = "/api/v3/exchangeInfo") -> tuple[int, Any]:
    url = sim.ws_base_url.replace("wss://", "https://") + path
    try:
        with urllib.request.urlopen(url, context=tls, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_url_over_8000_characters_is_refused_like_binance(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    def streams(n: int) -> str:
        return "/".join(f"s{i:05d}usdt@trade" for i in range(n))

    async def scenario() -> None:
        long_path = "/stream?streams=" + streams(460)  # ~7,850 characters: accepted
        assert len(long_path) <= 8000
        async with connect(sim.ws_base_url + long_path, ssl=tls, max_size=None):
            pass
        too_long = "/stream?streams=" + streams(475)  # ~8,090 characters (websockets reads request lines up to 8,192)
        assert len(too_long) > 8000
        with pytest.raises(InvalidStatus) as refused:
            async with connect(sim.ws_base_url + too_long, ssl=tls):
                pass
        assert refused.value.response.status_code == 414
        assert b"URI too long" in refused.value.response.body

    asyncio.run(scenario())


def test_exchange_info_lists_generated_symbols_over_tls_in_binances_format(
    sim: BackgroundSimulator, tls: ssl.SSLContext
) -> None:
    status, info = rest(sim, tls)
    assert status == 200
    assert {"timezone", "serverTime", "rateLimits", "exchangeFilters", "symbols"} <= set(info)
    assert info["symbols"] == [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
         "isSpotTradingAllowed": True, "permissions": ["SPOT"]},
        {"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT",
         "isSpotTradingAllowed": True, "permissions": ["SPOT"]},
    ]
    assert rest(sim, tls, "/api/v3/nothing")[0] == 404
    assert quote_asset("ethbtc") == "BTC" and quote_asset("solfdusd") == "FDUSD"


def test_listings_and_delistings_change_exchange_info_and_the_streams(
    sim: BackgroundSimulator, tls: ssl.SSLContext
) -> None:
    assert sim.list_symbols(["newusdt", "btcusdt"]) == ["newusdt"]  # btcusdt was listed already
    assert sim.delist_symbols(["ethusdt"]) == ["ethusdt"]
    statuses = {s["symbol"]: s["status"] for s in rest(sim, tls)[1]["symbols"]}
    assert statuses == {"BTCUSDT": "TRADING", "NEWUSDT": "TRADING", "ETHUSDT": "BREAK"}
    # The new listing trades; the delisted symbol no longer does.
    wait_until(lambda: len(sim.generated_ids("newusdt")) > 10, 10, what="trades of the new listing")
    stopped = len(sim.generated_ids("ethusdt"))
    ticks = sim.status()["ticks"]
    wait_until(lambda: sim.status()["ticks"] >= ticks + 20, 10, what="20 more ticks")
    assert len(sim.generated_ids("ethusdt")) == stopped

    async def subscribe_new() -> None:
        async with connect(sim.ws_base_url + "/stream", ssl=tls) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["newusdt@trade"], "id": 7}))
            assert await recv_json(ws) == {"result": None, "id": 7}
            message = await recv_json(ws)
            assert message["stream"] == "newusdt@trade" and message["data"]["s"] == "NEWUSDT"

    asyncio.run(subscribe_new())
    with pytest.raises(ValueError, match="lowercase symbols"):
        sim.list_symbols(["NEW USDT"])


def test_the_rest_api_can_be_made_unreachable(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    sim.fail_rest(30)
    status, body = rest(sim, tls)
    assert status == 503 and "unavailable" in body
