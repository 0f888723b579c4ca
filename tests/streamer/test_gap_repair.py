"""Gap repair against the simulator's ground truth: trades and aggTrades a connection silently missed are fetched
from the REST history and reach Kafka exactly once, in order per key, marked `k2-source: rest`; what cannot be
repaired is reported with its ids and never blocks the live stream; the exchange's 429 and 418 are honoured and
the weight spent stays within the budget."""

from __future__ import annotations

import json
import math
import ssl
import urllib.request
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from k2_ops.simulator import BackgroundSimulator
from k2_ops.simulator.rest import early_requests
from tests.streamer.conftest import (
    Record,
    StreamerProcess,
    compare_with_truth,
    consume,
    settle_streams,
    wait_for,
)

pytestmark = pytest.mark.slow

SYMBOLS = ("btcusdt", "ethusdt")
ID_FIELD = {"trade": "trade_id", "aggTrade": "agg_trade_id"}


def _start(make_simulator: Any, make_streamer: Any, kafka: Any, sim_settings: dict[str, Any] | None = None,
           symbols: tuple[str, ...] = SYMBOLS, **env: Any) -> tuple[BackgroundSimulator, StreamerProcess]:
    sim = make_simulator(symbols=symbols, **(sim_settings or {}))
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_STREAMS="trade,aggTrade",
                             K2_BINANCE_SYMBOLS=",".join(symbols), **env)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 200, 30, "deliveries before the fault")
    return sim, streamer


def _rest_ids(records: list[Record], field: str) -> set[int]:
    return {r.value[field] for r in records if r.headers.get("k2-source") == b"rest"}


def _skipped(sim: BackgroundSimulator, symbol: str, kind: str, connection_id: int) -> set[int]:
    """Ids generated while the connection was open but never sent on it (what skip_messages withheld)."""
    sent = sim.sent_ids(symbol, kind, connection_id=connection_id)
    return {i for i in sim.generated_ids(symbol, kind) if sent[0] <= i <= sent[-1]} - set(sent)


def _ms(moment: datetime) -> int:
    """A timestamp-millis field as fastavro reads it (a datetime), in ms."""
    return round(moment.timestamp() * 1000)


def _rest_get(sim: BackgroundSimulator, path: str) -> Any:
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    url = sim.ws_base_url.replace("wss://", "https://") + path
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return json.loads(response.read())


def test_silently_skipped_trades_and_agg_trades_are_repaired_exactly_once_and_in_order(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    sim, streamer = _start(make_simulator, make_streamer, kafka)
    connection = next(c.id for c in sim.connections() if c.closed_at is None)
    skipped_streams = ["btcusdt@trade", "btcusdt@aggTrade", "ethusdt@trade"]
    assert sim.skip_messages(skipped_streams, count=25) == 1
    wait_for(lambda: streamer.metric("binance_gap_repaired_messages_total") >= 75, 60, "75 ids repaired")
    result = settle_streams(streamer, sim, kafka.bootstrap_servers, SYMBOLS, ID_FIELD)
    m = result["metrics"]
    for kind, field in ID_FIELD.items():
        for symbol in SYMBOLS:
            compared = result[kind][symbol]
            assert compared["missing"] == 0 and compared["duplicates"] == 0, (kind, symbol, compared)
            assert compared["in_order"], f"{kind} {symbol}: ids out of order in Kafka (the hold should keep order)"
        skipped = {s: _skipped(sim, s, kind, connection) for s in SYMBOLS}
        records = result[kind]["records"]
        # Exactly the withheld ids came from REST, with the live records' key and id header.
        assert _rest_ids(records, field) == set().union(*skipped.values())
        for record in records:
            assert record.key == record.value["symbol"].encode()
            assert record.headers[field] == str(record.value[field]).encode()
    assert len(_skipped(sim, "btcusdt", "trade", connection)) == 25
    assert m.value("binance_gap_repaired_messages_total", stream="trade") == 50
    assert m.value("binance_gap_repaired_messages_total", stream="aggTrade") == 25
    assert m.value("binance_gap_unrepaired_messages_total") == 0
    assert m.value("binance_missing_messages_total") == 75  # the gaps were seen, and counted as such
    assert m.value("binance_gap_repair_seconds_count") == 3  # one per gap, at its last acknowledgement
    assert result["summary"]["repaired"] == 75 and result["summary"]["unrepaired"] == 0
    # A repaired record holds what the exchange's history says of that trade.
    repaired = min(_rest_ids(result["trade"]["records"], "trade_id"))
    record = next(r.value for r in result["trade"]["records"] if r.value["trade_id"] == repaired)
    served = _rest_get(sim, f"/api/v3/historicalTrades?symbol={record['symbol']}&fromId={repaired}&limit=1")[0]
    assert (record["price"], record["quantity"], _ms(record["trade_time"]), record["is_buyer_maker"]) == (
        served["price"], served["qty"], served["time"], served["isBuyerMaker"])
    assert _ms(record["event_time"]) == served["time"]  # REST has no event time: the trade time stands in
    fault_report["silent_skip_repaired"] = {"skipped": 75, "repaired": 75, "lost": 0}


def test_ids_no_longer_served_are_reported_unrepaired_and_never_block_the_live_stream(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """REST down while the exchange's history moves past the missed ids: when REST answers again they are no
    longer served; the streamer says so (ERROR with the ids, a counter) and the live stream went on meanwhile."""
    sim, streamer = _start(make_simulator, make_streamer, kafka, {"rest_history_per_symbol": 100},
                           K2_BINANCE_REST_RETRY_SECONDS="0.2", K2_GAP_REPAIR_HOLD_SECONDS="1")
    connection = next(c.id for c in sim.connections() if c.closed_at is None)
    sim.rest_fault(503, 6.0)
    sim.skip_messages(["btcusdt@trade"], count=10)
    produced = streamer.metric("kafka_messages_produced_total")
    # The live stream goes on while the repair fails (the hold is released after 1 s).
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= produced + 500, 30, "live deliveries")
    wait_for(lambda: streamer.metric("binance_gap_unrepaired_messages_total", stream="trade") == 10, 60,
             "the 10 ids reported unrepaired")
    lost = sorted(_skipped(sim, "btcusdt", "trade", connection))
    log = streamer.log_text()
    assert f"gap on btcusdt@trade NOT repaired: 10 id(s) lost ({lost[0]}..{lost[-1]})" in log
    assert "no longer served by historicalTrades" in log
    assert streamer.metric("binance_rest_requests_total", endpoint="historicalTrades", code="503") >= 1
    result = settle_streams(streamer, sim, kafka.bootstrap_servers, SYMBOLS, ID_FIELD)
    assert result["trade"]["btcusdt"]["missing"] == 10 and result["trade"]["btcusdt"]["duplicates"] == 0
    assert result["trade"]["ethusdt"]["missing"] == 0
    assert result["summary"]["unrepaired"] == 10


@pytest.mark.parametrize("mode", ["truncated", "wrong_symbol", "short"])
def test_bad_rest_answers_are_counted_and_retried_without_a_duplicate(
    mode: str, make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """A short answer (starting above the asked id) is what ids the exchange no longer serves look like: the
    repair asks again before giving any id up, so one short answer costs a retry, two in a row are believed."""
    sim, streamer = _start(make_simulator, make_streamer, kafka, K2_BINANCE_REST_RETRY_SECONDS="0.2")
    sim.rest_corrupt(mode, count=1 if mode == "short" else 3)
    sim.skip_messages(["ethusdt@trade"], count=15)
    wait_for(lambda: streamer.metric("binance_gap_repaired_messages_total") >= 15, 60, "15 ids repaired")
    bad = streamer.metric("binance_rest_bad_answers_total", endpoint="historicalTrades")
    assert bad == (1 if mode == "short" else 3), f"{mode}: {bad} bad answers counted"
    said = "asking again before reporting those ids lost" if mode == "short" else "bad answer from historicalTrades"
    assert said in streamer.log_text()
    assert streamer.metric("binance_gap_unrepaired_messages_total") == 0
    result = settle_streams(streamer, sim, kafka.bootstrap_servers, SYMBOLS, ID_FIELD)
    for symbol in SYMBOLS:
        assert result["trade"][symbol]["missing"] == 0 and result["trade"][symbol]["duplicates"] == 0


def test_429_and_418_are_honoured_and_the_weight_stays_within_the_budget(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """Ten symbols, a small budget (200 weight per 2 s window; historicalTrades costs 25, aggTrades 4) against a
    gap on all 20 streams at once, three times, while the exchange answers 429, then 418 (a ban): the
    simulator's request log shows no request inside a ban or before a Retry-After had passed, and no window
    over the budget; every gap is repaired in the end."""
    window_s, limit = 2.0, 200
    symbols = tuple(f"s{i:02d}usdt" for i in range(10))
    sim, streamer = _start(
        make_simulator, make_streamer, kafka, {"rest_weight_window_s": window_s, "rest_weight_limit": 10_000,
                                               "rate_per_symbol": 10.0},
        symbols, K2_BINANCE_REST_WEIGHT_LIMIT=limit, K2_BINANCE_REST_WEIGHT_SHARE=1,
        K2_BINANCE_REST_WEIGHT_WINDOW_SECONDS=window_s, K2_BINANCE_REST_RETRY_SECONDS="0.1")
    streams = [f"{s}@{k}" for s in symbols for k in ID_FIELD]
    for round_, fault in enumerate((429, 418, None)):
        if fault is not None:
            sim.rest_fault(fault, 2.0)
        sim.skip_messages(streams, count=2)
        wait_for(lambda n=round_: streamer.metric("binance_gap_repaired_messages_total") >= 40 * (n + 1), 90,
                 f"round {round_ + 1}: 40 ids repaired")
    requests = sim.rest_requests()
    assert not early_requests(requests), early_requests(requests)[:3]
    assert {429, 418} <= {r.status for r in requests}
    assert streamer.metric("binance_rest_requests_total", endpoint="historicalTrades", code="418") >= 1
    spent: dict[int, int] = defaultdict(int)
    for request in requests:
        if request.status == 200:
            spent[math.floor(request.wall_time / window_s)] += request.weight
    # Windows are the streamer's (wall clock); a request counted just before a window's end may be logged by the
    # exchange just after it: one request's weight (25) of slack, no more.
    assert max(spent.values()) <= limit + 25, sorted(spent.items())
    assert sum(1 for w in spent.values() if w > 100) >= 2, "the gaps never needed more than one window"
    result = settle_streams(streamer, sim, kafka.bootstrap_servers, symbols, ID_FIELD)
    for kind in ID_FIELD:
        for symbol in symbols:
            assert result[kind][symbol]["missing"] == 0 and result[kind][symbol]["duplicates"] == 0


def test_gaps_under_repair_at_a_handover_are_repaired_once_by_the_instance_taking_over(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    """Blue has a gap it cannot repair yet (REST down) when it hands over to green: its standby answer lists the
    open ranges, green's release takes them, and green repairs them once REST answers. Every id in Kafka once."""
    sim = make_simulator()
    blue = make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_REST_RETRY_SECONDS="0.2")
    shared = {"K2_KAFKA_TOPIC_PREFIX": blue.env["K2_KAFKA_TOPIC_PREFIX"], "K2_BINANCE_REST_RETRY_SECONDS": "0.2"}
    green = make_streamer(sim, kafka.bootstrap_servers, K2_INSTANCE="green", K2_START_MODE="standby", **shared)
    blue.wait_ready()
    green.wait_ready()
    blue_connection = next(c.id for c in sim.connections() if c.closed_at is None)
    sim.rest_fault(503, 5.0)
    sim.skip_messages(["btcusdt@trade"], count=10, connection_ids=[blue_connection])
    wait_for(lambda: blue.metric("binance_gap_repair_pending_messages") == 10, 30, "blue's gap open, unrepaired")
    status, standby = blue.post("/handover/standby", {"flush_timeout_seconds": 20})
    assert status == 200 and standby["flushed"], standby
    handed = standby["repairs"]
    assert list(handed) == ["btcusdt@trade"] and handed["btcusdt@trade"]["stream"] == "trade"
    assert sum(b - a + 1 for a, b in handed["btcusdt@trade"]["ranges"]) == 10
    assert blue.metric("binance_gap_repair_pending_messages") == 0  # blue no longer repairs them
    status, released = green.post("/handover/release", {"after": standby["positions"], "repairs": handed})
    assert status == 200, released
    wait_for(lambda: green.metric("binance_gap_repaired_messages_total") == 10, 60, "green repaired the 10 ids")
    sim.pause_market()
    wait_for(lambda: all(green.get("/positions")[1]["received_last"].get(f"{s}@trade") == sim.sent_ids(s)[-1]
                         for s in SYMBOLS), 30, "green caught up")
    assert blue.terminate() == 0 and green.terminate() == 0
    total = blue.summary()["delivered"] + green.summary()["delivered"]
    records = consume(kafka.bootstrap_servers, shared["K2_KAFKA_TOPIC_PREFIX"] + ".trades",
                      lambda rs: len(rs) >= total)
    for symbol in SYMBOLS:
        ids = [r.value["trade_id"] for r in records if r.value["symbol"] == symbol.upper()]
        start = sim.sent_ids(symbol, connection_id=blue_connection)[0]
        compared = compare_with_truth(ids, [i for i in sim.generated_ids(symbol) if i <= sim.sent_ids(symbol)[-1]],
                                      start)
        assert compared["missing"] == 0 and compared["duplicates"] == 0, (symbol, compared)
    repaired_by = {r.value["instance"] for r in records if r.headers.get("k2-source") == b"rest"}
    assert repaired_by == {"green"}
    assert blue.summary()["unrepaired"] == 0  # handed over, not given up
    fault_report["handover_with_open_repairs"] = {"handed_over": 10, "repaired_by": "green"}


def test_without_repair_a_gap_is_unrepaired_at_once(make_simulator: Any, make_streamer: Any, kafka: Any) -> None:
    sim, streamer = _start(make_simulator, make_streamer, kafka, K2_GAP_REPAIR="false")
    sim.skip_messages(["btcusdt@trade"], count=5)
    wait_for(lambda: streamer.metric("binance_gap_unrepaired_messages_total", stream="trade") == 5, 30,
             "the 5 ids counted unrepaired")
    assert streamer.metric("binance_rest_requests_total", endpoint="historicalTrades", code="200") == 0
    line = wait_for(lambda: next((x for x in streamer.log_text().splitlines() if "sequence gap" in x), None), 10,
                    "the gap logged")
    assert " ERROR " in line and "(under repair)" not in line
