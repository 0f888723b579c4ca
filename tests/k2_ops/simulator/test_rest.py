"""Binance's REST market-data API on the simulator: historicalTrades, aggTrades and depth in Binance's exact
formats with the values the WebSocket sent, request weights and the per-window budget (429, Retry-After, the 418
ban), REST faults, and the silent message-loss fault with its ground truth.

The rules are tested on the pure classes with chosen times (rest.py), then over real HTTPS against a running
simulator; waits poll with a deadline, never a guessed sleep."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from k2_ops.simulator import BackgroundSimulator, SimulatorConfig, client_ssl_context
from k2_ops.simulator.market import SymbolMarket
from k2_ops.simulator.rest import (
    AGG_TRADES,
    DEPTH,
    EXCHANGE_INFO,
    HISTORICAL_TRADES,
    RestApi,
    RestError,
    RestRequest,
    WeightLimiter,
    depth_weight,
    early_requests,
    parse_query,
    request_weight,
    validate,
)
from k2_ops.simulator.testing import all_closed, recv_json, wait_until

SimFactory = Callable[..., BackgroundSimulator]
Answer = tuple[int, dict[str, str], bytes]


def get(sim: BackgroundSimulator, path: str) -> Answer:
    """GET over HTTPS trusting the simulator's CA: (status, headers, body), for errors too."""
    url = sim.ws_base_url.replace("wss://", "https://") + path
    try:
        with urllib.request.urlopen(url, context=client_ssl_context(sim.ca_file), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(sim: BackgroundSimulator, path: str) -> Any:
    status, _, body = get(sim, path)
    assert status == 200, body
    return json.loads(body)


# ---- pure rules, explicit times -----------------------------------------------------------------------------------


def test_weights_are_binances() -> None:
    assert [depth_weight(n) for n in (1, 100, 101, 500, 501, 1000, 1001, 5000, 9999)] == [5, 5, 25, 25, 50, 50, 250,
                                                                                           250, 250]
    assert request_weight(EXCHANGE_INFO, {}) == 20
    assert request_weight(HISTORICAL_TRADES, {"limit": "1000"}) == 25
    assert request_weight(AGG_TRADES, {}) == 4
    assert request_weight(DEPTH, {}) == 5 and request_weight(DEPTH, {"limit": "x"}) == 5
    assert request_weight(DEPTH, {"limit": "1000"}) == 50
    assert request_weight("/api/v3/klines", {}) == 0


@pytest.mark.parametrize(
    ("route", "query", "code", "msg"),
    [
        (HISTORICAL_TRADES, "", -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        (HISTORICAL_TRADES, "symbol=", -1102, "Mandatory parameter 'symbol'"),
        (DEPTH, "symbol=btcusdt", -1100, "parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."),
        (AGG_TRADES, "symbol=DOGEUSDT", -1121, "Invalid symbol."),
        (HISTORICAL_TRADES, "symbol=BTCUSDT&limit=1001", -1100,
         "Illegal characters found in parameter 'limit'; legal range is '1000'."),
        (AGG_TRADES, "symbol=BTCUSDT&limit=0", -1100, "legal range is '1000'."),
        (DEPTH, "symbol=BTCUSDT&limit=0", -1100, "legal range is '5000'."),
        (AGG_TRADES, "symbol=BTCUSDT&fromId=-3", -1100, "parameter 'fromId'; legal range is '^[0-9]{1,20}$'."),
        (HISTORICAL_TRADES, "symbol=BTCUSDT&limit=ten", -1100, "parameter 'limit'; legal range is '^[0-9]{1,20}$'."),
        (HISTORICAL_TRADES, "symbol=BTCUSDT&fromId=", -1105, "Parameter 'fromId' was empty."),
        (DEPTH, "symbol=BTCUSDT&fromId=5", -1104, "read '1' parameter(s) but was sent '2'."),
        (DEPTH, "symbol=BTCUSDT&symbol=ETHUSDT", -1101, "Duplicate values for a parameter detected."),
    ],
)
def test_bad_parameters_get_binances_codes(route: str, query: str, code: int, msg: str) -> None:
    market = SymbolMarket("btcusdt")
    params, duplicates = parse_query(query)
    with pytest.raises(RestError) as refused:
        validate(route, params, duplicates, lambda s: market if s == "BTCUSDT" else None)
    assert (refused.value.status, refused.value.code) == (400, code)
    assert msg in refused.value.msg


def test_defaults_and_the_depth_limit_cap() -> None:
    market = SymbolMarket("btcusdt")

    def check(route: str, query: str) -> tuple[int | None, int]:
        query_ = validate(route, *parse_query(query), lambda s: market)
        return query_.from_id, query_.limit

    assert check(HISTORICAL_TRADES, "symbol=BTCUSDT") == (None, 500)
    assert check(AGG_TRADES, "symbol=BTCUSDT&fromId=12&limit=1000") == (12, 1000)
    assert check(DEPTH, "symbol=BTCUSDT") == (None, 100)
    assert check(DEPTH, "symbol=BTCUSDT&limit=9000") == (None, 5000)  # "only 5000 entries will be returned"


def test_the_window_is_aligned_and_429_says_when_it_ends() -> None:
    limiter = WeightLimiter(limit=100, window_s=60.0, violations_before_ban=None, ban_s=120.0)
    assert limiter.admit(60, 1200.0).status == 200  # window [1200, 1260)
    assert limiter.admit(40, 1259.9) == (200, None, 100)
    refused = limiter.admit(1, 1259.95)
    assert refused == (429, 1, 100)  # 0.05 s left: rounded up, at least 1
    assert limiter.admit(100, 1261.0) == (200, None, 100)  # a new window (the Retry-After had passed)
    assert limiter.used(1319.999) == 100 and limiter.used(1320.0) == 0
    limiter.admit(100, 1330.5)
    assert limiter.admit(1, 1330.5) == (429, 50, 100)  # 49.5 s to the window's end -> 50
    assert limiter.window_end(1330.5) == 1380.0


def test_requests_before_retry_after_are_violations_then_a_ban_and_its_end() -> None:
    limiter = WeightLimiter(limit=50, window_s=10.0, violations_before_ban=2, ban_s=120.0)
    assert limiter.admit(50, 100.0).status == 200
    assert limiter.admit(25, 103.2) == (429, 7, 50)  # retry after 110.2
    assert limiter.admit(0, 105.0) == (429, 6, 50)  # violation 1: refused, Retry-After unchanged (110.2)
    assert limiter.admit(25, 110.1) == (418, 120, 0)  # violation 2 (a new window, but too early): banned
    assert limiter.admit(1, 150.0) == (418, 81, 0)  # every request, the seconds left of the ban
    assert limiter.admit(1, 230.09) == (418, 1, 0)  # ban ends at 230.1; requests do not extend it
    assert limiter.admit(25, 230.1) == (200, None, 25)
    # Violations start afresh after a ban: one more violation is not a ban.
    assert limiter.admit(50, 231.0).status == 429
    assert limiter.admit(1, 231.5).status == 429
    assert limiter.admit(1, 240.0) == (200, None, 1)


def test_without_a_budget_or_bans() -> None:
    free = WeightLimiter(limit=None, window_s=60.0, violations_before_ban=2, ban_s=1.0)
    assert all(free.admit(250, 10.0 + i / 1000).status == 200 for i in range(100))
    no_bans = WeightLimiter(limit=10, window_s=60.0, violations_before_ban=None, ban_s=1.0)
    no_bans.admit(10, 0.0)
    assert {no_bans.admit(1, 1.0 + i / 10).status for i in range(50)} == {429}


def test_early_requests_are_those_inside_a_retry_after() -> None:
    def request(t: float, status: int = 200, retry_after: int | None = None) -> RestRequest:
        return RestRequest(t, 1e9 + t, DEPTH, {}, 5, status, retry_after, 5)

    patient = [request(0.0), request(1.0, 429, 3), request(4.0), request(5.0, 418, 2), request(7.0)]
    assert early_requests(patient) == []
    hasty = [request(0.0, 429, 3), request(2.9), request(3.1, 418, 120), request(60.0)]
    assert early_requests(hasty) == [hasty[1], hasty[3]]


def make_api(*markets: SymbolMarket, limit: int | None = 6000) -> RestApi:
    by_upper = {m.upper: m for m in markets}
    return RestApi(
        WeightLimiter(limit, 60.0, 2, 120.0),
        lookup=by_upper.get,
        other=lambda m: next((o for o in markets if o is not m), None),
        exchange_info=lambda: {"symbols": []},
    )


def test_faults_and_corruptions_on_the_pure_api() -> None:
    btc, eth = SymbolMarket("btcusdt", 1), SymbolMarket("ethusdt", 1)
    btc.generate(1_000, 40)
    eth.generate(1_000, 40)
    api = make_api(btc, eth)
    first = btc.trades(None, 1000)[0].id
    api.set_fault(429, 2.5, 100.0)
    fault = api.handle(HISTORICAL_TRADES, "symbol=BTCUSDT", 100.2)
    assert (fault.status, fault.retry_after, fault.weight) == (429, 3, 0)
    assert json.loads(fault.body)["code"] == -1003
    api.set_fault(418, 10, 100.0)
    assert api.handle(DEPTH, "symbol=BTCUSDT", 109.5).retry_after == 1
    api.set_fault(502, 1, 200.0)
    assert (api.handle(EXCHANGE_INFO, "", 200.5).status, api.handle(EXCHANGE_INFO, "", 201.0).status) == (502, 200)
    with pytest.raises(ValueError, match="status"):
        api.set_fault(404, 1, 0.0)

    api.set_corrupt("short", 2)
    short = json.loads(api.handle(HISTORICAL_TRADES, f"symbol=BTCUSDT&fromId={first}&limit=10", 300.0).body)
    assert [t["id"] for t in short] == list(range(first + 5, first + 10))
    book = json.loads(api.handle(DEPTH, "symbol=BTCUSDT&limit=4", 300.0).body)
    assert book["bids"] == btc.book(4)["bids"][2:] and book["asks"] == btc.book(4)["asks"][2:]
    assert len(json.loads(api.handle(HISTORICAL_TRADES, "symbol=BTCUSDT&limit=10", 300.0).body)) == 10  # over
    api.set_corrupt("wrong_symbol", 1)
    wrong = json.loads(api.handle(AGG_TRADES, "symbol=BTCUSDT&limit=3", 300.0).body)
    assert [a["a"] for a in wrong] == [r.id for r in eth.agg_trades(None, 3)]
    api.set_corrupt("truncated", 1)
    cut = api.handle(DEPTH, "symbol=BTCUSDT", 300.0)
    assert cut.status == 200 and cut.body.startswith('{"lastUpdateId":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.body)
    api.set_corrupt("short", 1)
    assert api.handle(DEPTH, "symbol=NOPEUSDT", 300.0).status == 400  # an error answer is not corrupted
    assert [t["id"] for t in json.loads(api.handle(HISTORICAL_TRADES, "symbol=BTCUSDT&limit=2", 300.0).body)] == [
        first + 39]


def test_refused_and_faulted_requests_charge_nothing_but_bad_parameters_do() -> None:
    api = make_api(SymbolMarket("btcusdt"), limit=30)
    assert api.handle(HISTORICAL_TRADES, "symbol=NOPE", 0.0).weight == 25  # 400, charged as on Binance
    refused = api.handle(HISTORICAL_TRADES, "symbol=BTCUSDT", 1.0)
    assert (refused.status, refused.weight, refused.used) == (429, 0, 25)
    assert api.handle("/api/v3/unknown", "", 70.0).status == 404


# ---- over HTTPS against a running simulator -----------------------------------------------------------------------


def stream_messages(sim: BackgroundSimulator, streams: str, trades: int) -> list[dict[str, Any]]:
    """Combined-stream messages until `trades` trades arrived."""

    async def scenario() -> list[dict[str, Any]]:
        async with connect(f"{sim.ws_base_url}/stream?streams={streams}", ssl=client_ssl_context(sim.ca_file)) as ws:
            out: list[dict[str, Any]] = []
            while sum(1 for m in out if m["stream"].endswith("@trade")) < trades:
                out.append(await recv_json(ws))
            return out

    return asyncio.run(scenario())


def test_history_equals_what_the_websocket_sent_and_pages_by_from_id(sim: BackgroundSimulator) -> None:
    messages = stream_messages(sim, "btcusdt@trade/btcusdt@aggTrade", 150)
    trades = [m["data"] for m in messages if m["stream"] == "btcusdt@trade"]
    aggs = [m["data"] for m in messages if m["stream"] == "btcusdt@aggTrade"]
    pages, from_id = [], trades[0]["t"]
    while len(pages) < 2 or sum(len(p) for p in pages) < len(trades):
        page = get_json(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={from_id}&limit=40")
        assert page and page[0]["id"] == from_id
        pages.append(page)
        from_id = page[-1]["id"] + 1
    served = [item for page in pages for item in page][: len(trades)]
    assert len(pages) >= 4
    for item, trade in zip(served, trades, strict=True):
        assert list(item) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]
        assert item == {"id": trade["t"], "price": trade["p"], "qty": trade["q"], "quoteQty": item["quoteQty"],
                        "time": trade["T"], "isBuyerMaker": trade["m"], "isBestMatch": True}
        assert Decimal(item["quoteQty"]) == Decimal(trade["p"]) * Decimal(trade["q"])
        assert len(item["quoteQty"].split(".")[1]) == 8
    agg_items = get_json(sim, f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={aggs[0]['a']}&limit=1000")[: len(aggs)]
    assert agg_items == [{k: a[k] for k in ("a", "p", "q", "f", "l", "T", "m", "M")} for a in aggs]
    assert [list(i) for i in agg_items[:1]] == [["a", "p", "q", "f", "l", "T", "m", "M"]]
    # Without fromId: the newest `limit`, ascending, ending at the newest generated id.
    sim.pause_market()
    newest = get_json(sim, "/api/v3/historicalTrades?symbol=BTCUSDT&limit=5")
    assert [t["id"] for t in newest] == sim.generated_ids("btcusdt", "trade")[-5:]
    assert [a["a"] for a in get_json(sim, "/api/v3/aggTrades?symbol=BTCUSDT")] == sim.generated_ids(
        "btcusdt", "aggTrade")[-500:]
    assert get_json(sim, f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={newest[-1]['id'] * 2}") == []


def test_ids_no_longer_kept_are_not_served(make_sim: SimFactory) -> None:
    sim = make_sim(symbols=("btcusdt",), rate_per_symbol=3000.0, rest_history_per_symbol=100)
    wait_until(lambda: len(sim.generated_ids("btcusdt")) > 400, what="400 trades generated")
    sim.pause_market()
    generated = sim.generated_ids("btcusdt")
    oldest_asked = generated[0]
    answer = get_json(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={oldest_asked}&limit=1000")
    assert [t["id"] for t in answer] == generated[-100:]  # starts later than asked: the older ids are gone
    assert answer[0]["id"] > oldest_asked
    assert [t["id"] for t in get_json(sim, "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1000")] == generated[-100:]
    aggs = sim.generated_ids("btcusdt", "aggTrade")
    assert [a["a"] for a in get_json(sim, f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={aggs[0]}")] == aggs[-100:]
    assert get_json(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={generated[-1] + 1}") == []


def test_every_answer_carries_the_used_weight(make_sim: SimFactory) -> None:
    sim = make_sim()
    paths = {
        "/api/v3/exchangeInfo": 20,
        "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1": 25,
        "/api/v3/aggTrades?symbol=ETHUSDT": 4,
        "/api/v3/depth?symbol=BTCUSDT": 5,
        "/api/v3/depth?symbol=BTCUSDT&limit=500": 25,
        "/api/v3/depth?symbol=BTCUSDT&limit=1000": 50,
        "/api/v3/depth?symbol=BTCUSDT&limit=5000": 250,
        "/api/v3/depth?symbol=BTCUSDT&limit=6000": 250,
        "/api/v3/depth?symbol=NOPEUSDT": 5,  # refused with 400, still charged
    }
    headers = {path: get(sim, path)[1] for path in paths}
    log = sim.rest_requests()
    assert [r.weight for r in log] == list(paths.values())
    for (path, weight), entry, previous in zip(paths.items(), log, [None, *log], strict=False):
        assert headers[path]["X-MBX-USED-WEIGHT-1M"] == headers[path]["X-MBX-USED-WEIGHT"] == str(entry.used_weight)
        same_window = previous is not None and previous.wall_time // 60 == entry.wall_time // 60
        assert entry.used_weight == (previous.used_weight if same_window and previous else 0) + weight, path
    assert log[-1].status == 400 and log[-1].params == {"symbol": "NOPEUSDT"}
    status, not_found_headers, _ = get(sim, "/api/v3/klines?symbol=BTCUSDT")
    assert status == 404 and "X-MBX-USED-WEIGHT-1M" in not_found_headers


def test_429_with_retry_after_then_served_again(make_sim: SimFactory) -> None:
    sim = make_sim(rest_weight_limit=60, rest_weight_window_s=3.0)
    path = "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1"
    for _ in range(10):
        status, headers, body = get(sim, path)
        if status == 429:
            break
    assert status == 429, "no 429 within 10 requests of weight 25 against a limit of 60"
    refused = sim.rest_requests()[-1]
    window_end = (math.floor(refused.wall_time / 3.0) + 1) * 3.0
    assert int(headers["Retry-After"]) == refused.retry_after == max(1, math.ceil(window_end - refused.wall_time))
    assert headers["X-MBX-USED-WEIGHT-1M"] == "50" and refused.weight == 0
    assert json.loads(body) == {"code": -1003, "msg": "Too much request weight used; current limit is 60 request "
                                "weight per 3 SECOND. Please use WebSocket Streams for live updates to avoid polling "
                                "the API."}
    # Back off exactly as told (the log's time is the simulator's monotonic clock, the same as time.monotonic()).
    wait_until(lambda: time.monotonic() >= refused.time + refused.retry_after, 10, what="Retry-After passed")
    status, headers, _ = get(sim, path)
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "25"
    assert early_requests(sim.rest_requests()) == []


def test_ignoring_retry_after_gets_a_418_ban_until_it_ends(make_sim: SimFactory) -> None:
    sim = make_sim(rest_weight_limit=30, rest_weight_window_s=2.0, rest_ban_s=2.0)  # the ban outlasts the window
    path = "/api/v3/historicalTrades?symbol=BTCUSDT&limit=1"
    while get(sim, path)[0] != 429:
        assert len(sim.rest_requests()) < 10
    assert get(sim, path)[0] == 429  # violation 1, right away
    status, headers, body = get(sim, "/api/v3/exchangeInfo")  # violation 2: banned, whatever the route
    assert (status, headers["Retry-After"]) == (418, "2")
    assert "IP banned until" in json.loads(body)["msg"] and json.loads(body)["code"] == -1003
    ban = sim.rest_requests()[-1]

    def served() -> bool:
        answer = get(sim, path)[0]
        assert answer in (200, 418)
        return answer == 200

    wait_until(served, 15, interval_s=0.2, what="served again after the ban")
    log = sim.rest_requests()
    first_served = log[-1]
    assert first_served.wall_time >= ban.wall_time + 2.0
    assert all(r.status == 418 for r in log if ban.time <= r.time < first_served.time)
    assert all(r.retry_after is not None and 1 <= r.retry_after <= 2 for r in log if r.status == 418)
    first_429 = next(r for r in log if r.status == 429)
    hasty = [r for r in log if first_429.time < r.time < first_served.time]
    # The first served request may itself be early: a 418 just before the ban's end still said "1 s".
    assert early_requests(log) in (hasty, [*hasty, first_served])


def test_rest_faults_answer_every_endpoint(make_sim: SimFactory) -> None:
    sim = make_sim()
    paths = ["/api/v3/exchangeInfo", "/api/v3/depth?symbol=BTCUSDT", "/api/v3/aggTrades?symbol=BTCUSDT",
             "/api/v3/historicalTrades?symbol=BTCUSDT"]
    sim.rest_fault(503, 30)
    for path in paths:
        status, headers, body = get(sim, path)
        assert (status, body) == (503, b"Service unavailable (fault)\n") and "X-MBX-USED-WEIGHT-1M" in headers
    sim.rest_fault(429, 5)
    status, headers, body = get(sim, paths[1])
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 5 and json.loads(body)["code"] == -1003
    sim.rest_fault(418, 7)
    status, headers, _ = get(sim, paths[2])
    assert status == 418 and 5 <= int(headers["Retry-After"]) <= 7
    sim.fail_rest(30)  # the older name: 503 on every endpoint
    assert get(sim, paths[3])[0] == 503
    sim.rest_fault(500, 0.5)
    assert get(sim, paths[0])[0] == 500
    wait_until(lambda: get(sim, paths[0])[0] == 200, 10, interval_s=0.1, what="the fault over")
    log = sim.rest_requests()
    assert [r.status for r in log[:8]] == [503, 503, 503, 503, 429, 418, 503, 500]
    assert all(r.weight == 0 for r in log[:8]) and log[-1].weight == 20
    with pytest.raises(ValueError, match="status"):
        sim.rest_fault(404, 1)


def test_corrupted_answers(sim: BackgroundSimulator) -> None:
    wait_until(lambda: len(sim.generated_ids("ethusdt")) > 20, what="ethusdt trades")
    sim.pause_market()
    first = sim.generated_ids("btcusdt")[0]
    path = f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={first}&limit=10"
    sim.rest_corrupt("truncated", 2)
    for endpoint in (path, "/api/v3/depth?symbol=BTCUSDT"):
        status, _, body = get(sim, endpoint)
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
    assert [t["id"] for t in get_json(sim, path)] == list(range(first, first + 10))  # two answers, then whole
    sim.rest_corrupt("wrong_symbol", 2)
    eth = set(sim.generated_ids("ethusdt", "aggTrade"))
    assert {a["a"] for a in get_json(sim, "/api/v3/aggTrades?symbol=BTCUSDT&limit=5")} <= eth
    assert get_json(sim, "/api/v3/depth?symbol=BTCUSDT&limit=5000") == sim.book("ethusdt")
    sim.rest_corrupt("short", 1)
    assert [t["id"] for t in get_json(sim, path)] == list(range(first + 5, first + 10))
    assert get_json(sim, "/api/v3/depth?symbol=BTCUSDT&limit=5000") == sim.book("btcusdt")
    with pytest.raises(ValueError, match="mode"):
        sim.rest_corrupt("gibberish", 1)


def test_a_depth_snapshot_plus_the_streamed_diffs_rebuilds_the_exchanges_book(sim: BackgroundSimulator) -> None:
    """Binance's recipe: buffer the diff stream, take a snapshot, drop diffs with u <= lastUpdateId, the first
    kept has U <= lastUpdateId + 1, then each U == previous u + 1. The rebuilt book equals the simulator's."""

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with connect(f"{sim.ws_base_url}/ws/btcusdt@depth@100ms", ssl=client_ssl_context(sim.ca_file)) as ws:
            diffs = [await recv_json(ws)]
            snapshot = json.loads((await asyncio.to_thread(get, sim, "/api/v3/depth?symbol=BTCUSDT&limit=5000"))[2])
            while diffs[-1]["u"] <= snapshot["lastUpdateId"] or len(diffs) < 15:
                diffs.append(await recv_json(ws))
            await asyncio.to_thread(sim.set_rate, 0)  # the market stops moving; what is pending is still sent
            target = -1
            while diffs[-1]["u"] != target:
                target = (await asyncio.to_thread(sim.book, "btcusdt"))["lastUpdateId"]
                while diffs[-1]["u"] < target:
                    diffs.append(await recv_json(ws))
            return snapshot, diffs

    snapshot, diffs = asyncio.run(scenario())
    last_id = snapshot["lastUpdateId"]
    assert diffs[0]["u"] <= last_id  # the stream was buffered before the snapshot
    later = [d for d in diffs if d["u"] > last_id]
    assert later and later[0]["U"] <= last_id + 1 <= later[0]["u"]
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(later))
    book = {"bids": dict(map(tuple, snapshot["bids"])), "asks": dict(map(tuple, snapshot["asks"]))}
    for diff in later:
        for side, key in (("bids", "b"), ("asks", "a")):
            for price, qty in diff[key]:
                if Decimal(qty) == 0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = qty
    exchange = sim.book("btcusdt")
    assert exchange["lastUpdateId"] == later[-1]["u"]
    assert [[p, q] for p, q in sorted(book["bids"].items(), key=lambda x: -Decimal(x[0]))] == exchange["bids"]
    assert [[p, q] for p, q in sorted(book["asks"].items(), key=lambda x: Decimal(x[0]))] == exchange["asks"]
    assert get_json(sim, "/api/v3/depth?symbol=BTCUSDT&limit=5000") == exchange


def test_skipped_messages_are_lost_silently_and_never_counted_as_sent(make_sim: SimFactory) -> None:
    """At 2,000 trades/s a fan-out carries about 20 trades; letting 5 pass first puts the hole inside one, so the
    connection's sent range of that fan-out must be split around it."""
    sim = make_sim(symbols=("btcusdt",), rate_per_symbol=2000.0, max_incoming_per_s=None)

    async def scenario() -> tuple[list[int], list[int]]:
        url = f"{sim.ws_base_url}/stream?streams=btcusdt@trade/btcusdt@aggTrade"
        async with connect(url, ssl=client_ssl_context(sim.ca_file)) as ws:
            messages = [await recv_json(ws)]
            assert await asyncio.to_thread(sim.skip_messages, ["btcusdt@trade"], 7, None, 5) == 1
            while sum(1 for m in messages if m["stream"] == "btcusdt@trade") < 300:
                messages.append(await recv_json(ws))
            await asyncio.to_thread(sim.close_connections, 1000)  # what was sent before the close frame reaches us
            try:
                while True:
                    messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            except ConnectionClosed:
                pass
        trades = [m["data"]["t"] for m in messages if m["stream"] == "btcusdt@trade"]
        aggs = [m["data"]["a"] for m in messages if m["stream"] == "btcusdt@aggTrade"]
        return trades, aggs

    trades, aggs = asyncio.run(scenario())
    (info,) = all_closed(sim)
    assert info.close_code == 1000  # no disconnect from the fault: the test closed it
    generated = sim.generated_ids("btcusdt", "trade")
    expected_range = generated[generated.index(trades[0]) : generated.index(trades[-1]) + 1]
    skipped = [t for t in expected_range if t not in set(trades)]
    assert len(skipped) == 7 and skipped == list(range(skipped[0], skipped[0] + 7))
    assert trades.index(skipped[0] - 1) >= 5  # five more were sent before the hole
    assert sim.sent_ids("btcusdt", "trade", info.id) == trades == [t for t in expected_range if t not in skipped]
    assert sim.sent_ids("btcusdt", "aggTrade", info.id) == aggs == list(range(aggs[0], aggs[0] + len(aggs)))
    assert info.messages_sent == len(trades) + len(aggs)
    served = get_json(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={skipped[0]}&limit=7")
    assert [t["id"] for t in served] == skipped  # still generated and served by REST
    with pytest.raises(ValueError, match="stream"):
        sim.skip_messages(["btcusdt@kline"], 1)


def test_control_endpoint_serves_the_new_faults_and_reads(make_sim: SimFactory) -> None:
    sim = make_sim(control_port=0)

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{sim.control_url}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert call("POST", "/rest_fault", {"status": 504, "seconds": 30}) == (200, {"ok": True, "result": None})
    assert get(sim, "/api/v3/depth?symbol=ETHUSDT")[0] == 504
    status, body = call("GET", "/rest_requests")
    assert status == 200 and body["result"][-1]["status"] == 504 and body["result"][-1]["params"] == {
        "symbol": "ETHUSDT"}
    assert call("POST", "/skip_messages", {"streams": ["btcusdt@trade"], "count": 2})[1]["result"] == 0
    assert call("POST", "/rest_corrupt", {"mode": "short", "count": 1})[0] == 200
    assert call("POST", "/rest_corrupt", {"mode": "sideways"})[0] == 400
    sim.pause_market()
    status, body = call("GET", "/book?symbol=btcusdt")
    assert status == 200 and body["result"] == sim.book("btcusdt") and body["result"]["bids"]
    assert call("GET", "/book?symbol=nopeusdt")[0] == 404
    assert call("GET", "/book")[0] == 400


def test_rest_settings_are_validated() -> None:
    from k2_ops.simulator import ConfigError

    for overrides in ({"rest_history_per_symbol": -1}, {"rest_weight_limit": 0}, {"rest_weight_window_s": 0},
                      {"rest_violations_before_ban": 0}, {"rest_ban_s": float("inf")}):
        with pytest.raises(ConfigError, match=rf"SimulatorConfig\.{next(iter(overrides))}"):
            SimulatorConfig(**overrides)
    config = SimulatorConfig(rest_weight_limit=None, rest_violations_before_ban=None, rest_history_per_symbol=0)
    assert config.rest_weight_window_s == 60.0 and config.rest_ban_s == 120.0


def test_rest_settings_have_command_line_flags() -> None:
    import argparse

    from k2_ops.simulator.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--rest-history", "50", "--rest-weight-limit", "off", "--rest-weight-window", "2.5",
         "--rest-violations-before-ban", "3", "--rest-ban", "9"]))
    assert (config.rest_history_per_symbol, config.rest_weight_limit, config.rest_weight_window_s,
            config.rest_violations_before_ban, config.rest_ban_s) == (50, None, 2.5, 3, 9.0)
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.rest_weight_limit, defaults.rest_violations_before_ban) == (6000, 2)
