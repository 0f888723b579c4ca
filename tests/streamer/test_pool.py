"""The connection pool against the simulator (verified TLS) and real Kafka, with the simulator's ground truth.

- The whole market: `quote:USDT` discovered from exchangeInfo (2,000 symbols x trade + bookTicker = 4,000
  streams over 20 connections of 200), every connection rotated several times on a compressed clock, a
  delisting and a listing mid-run: every trade the exchange sent reaches Kafka once, in order.
- Faults on single connections: one dropped while new connections are refused with 429, one told
  `serverShutdown`: only that slot reconnects or rotates, the others keep streaming untouched, and the pool
  stays within its attempt budget.
- Silent message loss on 200 of 4,000 streams: every trade and aggTrade repaired from the REST history.
- The REST API unreachable: said plainly, retried, the last known set keeps streaming.
- A blue-green handover of a 20-connection streamer: no gap, no duplicate.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from k2_ops.simulator import BackgroundSimulator
from tests.streamer.conftest import StreamerProcess, compare_with_truth, consume, settle_streams, wait_for

pytestmark = pytest.mark.slow

MARKET = tuple(f"s{i:04d}usdt" for i in range(2000))
STREAMS = "trade,bookTicker"
# A realistic aggregate rate for two cores shared with the rest of the suite: 2,000 symbols x 0.5 trades/s =
# 1,000 trades/s, about 3,500 messages/s with their bookTicker updates.
RATE_PER_SYMBOL = 0.5


def pool_simulator(make_simulator: Any, symbols: tuple[str, ...], rate: float = RATE_PER_SYMBOL) -> BackgroundSimulator:
    sim: BackgroundSimulator = make_simulator(symbols=symbols, rate_per_symbol=rate, tick_interval_s=0.05,
                                              control_port=None)
    return sim


def pool_streamer(make_streamer: Any, sim: BackgroundSimulator, bootstrap: str, **env: Any) -> StreamerProcess:
    settings: dict[str, Any] = {
        "K2_BINANCE_SYMBOLS": "quote:USDT",
        "K2_BINANCE_REST_URL": sim.ws_base_url.replace("wss://", "https://"),
        "K2_BINANCE_STREAMS": STREAMS,
        "K2_STREAMS_PER_CONNECTION": 200,
        "K2_SYMBOL_REFRESH_SECONDS": 1,
        "K2_ROTATION_OVERLAP_TIMEOUT_SECONDS": 1.5,
        "K2_HEALTH_CHECK_TIMEOUT_SECONDS": 10,
        "K2_MAX_BUFFERED_MESSAGES": 1_000_000,
    }
    settings.update(env)
    streamer: StreamerProcess = make_streamer(sim, bootstrap, **settings)
    return streamer


def open_connections(sim: BackgroundSimulator) -> list[Any]:
    return [c for c in sim.connections() if c.closed_at is None]


def caught_up(streamer: StreamerProcess, sim: BackgroundSimulator, symbols: list[str]) -> bool:
    """The streamer has received the last trade the exchange sent to any of its connections, for every symbol
    (not the last generated: a quiet symbol's last trade may have been generated while its connection was down)."""
    _, positions = streamer.get("/positions")
    received = positions["received_last"]
    return all(received.get(f"{s}@trade") == (sim.sent_ids(s)[-1:] or [None])[0] for s in symbols)


def trades_by_symbol(records: list[Any]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for record in records:
        ids.setdefault(record.value["symbol"].lower(), []).append(record.value["trade_id"])
    return ids


def audit(streamer: StreamerProcess, sim: BackgroundSimulator, bootstrap: str, symbols: list[str]) -> dict[str, Any]:
    """Pause the market, let the streamer catch up, stop it; every trade the exchange generated between the first
    and the last one it sent to any of the streamer's connections (per symbol) against Kafka."""
    sim.pause_market()
    wait_for(lambda: caught_up(streamer, sim, symbols), 60, "streamer caught up with the paused market")
    wait_for(lambda: streamer.metric("binance_gap_repair_pending_messages") == 0, 90, "every gap repaired")
    metrics = streamer.metrics()
    assert streamer.terminate() == 0
    expected = {}
    for symbol in symbols:
        sent = sim.sent_ids(symbol)
        # From the first trade sent to the last one: a trade generated after it, while its connection was down,
        # is one nobody could have seen missing yet (no later trade reached the streamer).
        expected[symbol] = [g for g in sim.generated_ids(symbol) if sent and sent[0] <= g <= sent[-1]]
    total = sum(len(v) for v in expected.values())
    received = metrics.value("binance_messages_received_total", stream="trade")  # each produced once
    records = consume(bootstrap, streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades",
                      lambda rs: len(rs) >= received, timeout_s=90)
    kafka_ids = trades_by_symbol(records)
    results = {s: compare_with_truth(kafka_ids.get(s, []), expected[s], expected[s][0] if expected[s] else None)
               for s in symbols}
    return {
        "metrics": metrics,
        "expected": total,
        "missing": sum(r["missing"] for r in results.values()),
        "duplicates": sum(r["duplicates"] for r in results.values()),
        "out_of_order": [s for s, r in results.items() if not r["in_order"]],
        "worst": sorted(results.items(), key=lambda item: -item[1]["missing"])[:3],
        "per_symbol": results,
    }


def test_whole_market_over_20_connections_rotates_follows_listings_and_loses_nothing(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    """4,000 streams over 20 connections with an 8 s lifetime: every connection rotates at least once and a
    listing is followed before the settle (~30 s)."""
    lifetime_s = 8.0
    sim = pool_simulator(make_simulator, MARKET)
    began = time.monotonic()
    streamer = pool_streamer(make_streamer, sim, kafka.bootstrap_servers,
                             K2_CONNECTION_MAX_LIFETIME_SECONDS=lifetime_s)
    streamer.wait_ready(90)
    ready_s = time.monotonic() - began
    log = streamer.log_text()
    assert "opening a pool of 20 connection(s) for 4000 streams (at most 200 per connection)" in log
    opened = [line for line in log.splitlines() if "pool open: 20 connection(s), 4000 streams, in" in line]
    assert len(opened) == 1, streamer.log_tail()
    open_s = float(opened[0].rsplit(" in ", 1)[1].split()[0])
    # The URL names no stream: each connection was subscribed with SUBSCRIBE messages, 200 streams each, 20
    # different sets. Rotations begin at once (slot 0's first is due after lifetime / 20), so a replacement
    # may be open too, holding its slot's set (or none yet, while it is being subscribed): how many depends
    # on timing, the sets do not.
    first = open_connections(sim)
    assert all(c.path == "/stream" for c in first)
    subscribed = [c for c in first if c.streams]
    assert all(len(c.streams) == 200 for c in subscribed)
    assert len({frozenset(c.streams) for c in subscribed}) == 20
    assert {k for c in first for k in c.streams} == {f"{s}@{k}" for s in MARKET for k in ("trade", "bookTicker")}
    m = streamer.metrics()
    assert m.value("binance_connections_open") == 20 and m.value("binance_connection_slots") == 20

    # Mid-run: a delisting, then a listing. The listing goes to the slot the delisting left room on.
    delisted, listed = "s0005usdt", "s2000usdt"
    holder = next(c.id for c in first if f"{delisted}@trade" in c.streams)
    sim.delist_symbols([delisted])
    wait_for(lambda: all(f"{delisted}@trade" not in c.streams for c in open_connections(sim)), 30,
             "the delisted symbol unsubscribed")
    sim.list_symbols([listed])
    wait_for(lambda: any(f"{listed}@trade" in c.streams for c in open_connections(sim)), 30,
             "the new listing subscribed")
    m = streamer.metrics()
    assert m.value("binance_connection_slots") == 20  # no new slot: the listing took the room left
    assert m.value("binance_reconnects_total") == 0  # and no connection was replaced for it

    # Every connection rotates several times (staggered: never all at once).
    wait_for(lambda: streamer.metric("binance_connection_rotations_total", reason="scheduled") >= 3 * 20, 120,
             "every connection rotated three times")
    assert holder not in {c.id for c in open_connections(sim)}  # the first connections are long gone
    ages = streamer.metrics()
    oldest = ages.value("binance_connection_age_oldest_seconds")
    youngest = ages.value("binance_connection_age_youngest_seconds")
    assert youngest < oldest <= lifetime_s + 2  # ages spread over the lifetime
    symbols = sorted({*MARKET, listed})
    result = audit(streamer, sim, kafka.bootstrap_servers, symbols)
    m = result["metrics"]
    closes = Counter(c.close_code for c in sim.connections() if c.closed_at is not None)
    fault_report["pool_whole_market"] = {
        "connections": 20, "streams": 4000, "open_s": open_s, "ready_s": round(ready_s, 2),
        "rotations": m.value("binance_connection_rotations_total"), "expected_trades": result["expected"],
        "missing": result["missing"], "duplicates": result["duplicates"], "close_codes": dict(closes),
    }
    print(f"\npool: 20 connections open in {open_s:.2f} s (ready {ready_s:.1f} s), "
          f"{m.value('binance_connection_rotations_total'):.0f} rotations, {result['expected']} trades checked")
    assert result["expected"] > 20_000
    assert result["missing"] == 0 and result["duplicates"] == 0, result["worst"]
    assert not result["out_of_order"]
    assert result["per_symbol"][listed]["expected"] > 0 and result["per_symbol"][delisted]["expected"] > 0
    assert m.value("binance_sequence_gaps_total") == 0 and m.value("binance_missing_messages_total") == 0
    assert m.value("binance_reconnects_total") == 0
    assert set(closes) == {1000}  # every connection we replaced, we closed ourselves with 1000
    assert m.value("binance_connection_attempts_total") <= 100  # the pool's share of the attempt budget


def test_faults_on_one_connection_leave_the_others_streaming(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    """One connection dropped while the exchange answers 429; one told serverShutdown. 400 symbols x 2 over
    4 connections; no scheduled rotation meanwhile."""
    symbols = MARKET[:400]
    sim = pool_simulator(make_simulator, symbols, rate=1.0)
    streamer = pool_streamer(make_streamer, sim, kafka.bootstrap_servers, K2_BACKOFF_INITIAL_SECONDS=0.5,
                             K2_CONNECTION_ATTEMPTS_PER_WINDOW=12, K2_CONNECTION_ATTEMPT_WINDOW_SECONDS=300)
    streamer.wait_ready(60)
    first = open_connections(sim)
    assert len(first) == 4
    dropped, announced, *others = sorted(first, key=lambda c: c.id)

    # serverShutdown on one connection rotates that one only, make-before-break.
    assert sim.server_shutdown(connection_ids=[announced.id]) == 1
    wait_for(lambda: streamer.metric("binance_connection_rotations_total", reason="server_shutdown") == 1, 30,
             "the announced connection rotated")
    wait_for(lambda: announced.id not in {c.id for c in open_connections(sim)}, 30, "it closed")

    # One connection dropped while new connections get 429 for a while: that slot redials with backoff.
    sim.refuse_connections(2.0, mode="http_429")
    assert sim.drop_connections(connection_ids=[dropped.id]) == 1
    wait_for(lambda: streamer.metric("binance_connection_failures_total", reason="handshake") >= 1, 30,
             "a redial refused with 429")
    wait_for(lambda: streamer.metric("binance_connections_open") == 4, 30, "the dropped slot back")
    open_now = {c.id for c in open_connections(sim)}
    assert {c.id for c in others} <= open_now  # the others were never touched
    m = streamer.metrics()
    assert m.value("binance_reconnects_total", reason="server_close") == 1  # the drop, and nothing else
    assert m.value("binance_reconnects_total") == 1
    # Attempts: 4 to open, 1 for the rotation, the redials of one slot: inside the pool's budget of 12.
    attempts = m.value("binance_connection_attempts_total")
    assert attempts <= 12 and sim.connection_attempts() == attempts

    result = audit(streamer, sim, kafka.bootstrap_servers, list(symbols))
    m = result["metrics"]
    lost = {s: r["missing"] for s, r in result["per_symbol"].items() if r["missing"]}
    dropped_symbols = {name.split("@")[0] for name in dropped.streams}
    repaired = m.value("binance_gap_repaired_messages_total")
    fault_report["pool_faults"] = {"attempts": attempts, "missing": result["missing"], "repaired": repaired,
                                   "symbols_with_loss": len(lost)}
    # What the dropped connection's symbols missed came back from the REST history: nothing lost, nothing twice.
    assert result["missing"] == 0 and result["duplicates"] == 0 and not result["out_of_order"], result["worst"]
    assert repaired == m.value("binance_missing_messages_total")
    gapped = {key.split("@")[0] for key in dropped.streams}
    assert m.value("binance_gap_unrepaired_messages_total") == 0 and gapped <= dropped_symbols
    assert m.value("binance_connection_rotations_total", reason="server_shutdown") == 1


def test_whole_market_with_silent_skips_on_200_streams_repairs_every_trade_and_agg_trade(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    """2,000 symbols x trade + aggTrade over 20 connections; the exchange silently withholds 3 messages of each
    of 200 random streams (no disconnect): every id of both topics reaches Kafka exactly once, the 600 withheld
    ones from the REST history, under Binance's default weight limit (this process's whole share: 100
    historicalTrades pages at 25 and 100 aggTrades pages at 4). Order as documented (docs/consumers.md): live
    records in order per key; a repair slower than the hold (2 s: 200 repairs queue for one REST connection)
    lands its ids after later live ones, and only repaired records are ever out of place."""
    sim = pool_simulator(make_simulator, MARKET)
    streamer = pool_streamer(make_streamer, sim, kafka.bootstrap_servers, K2_BINANCE_STREAMS="trade,aggTrade",
                             K2_BINANCE_REST_WEIGHT_SHARE=1)
    streamer.wait_ready(90)
    rng = random.Random(19)
    skipped = rng.sample([f"{s}@{k}" for s in MARKET for k in ("trade", "aggTrade")], 200)
    began = time.monotonic()
    assert sim.skip_messages(skipped, count=3) == 20
    wait_for(lambda: streamer.metric("binance_gap_repaired_messages_total") >= 600, 120, "600 ids repaired")
    repaired_s = time.monotonic() - began
    result = settle_streams(streamer, sim, kafka.bootstrap_servers, MARKET,
                            {"trade": "trade_id", "aggTrade": "agg_trade_id"}, timeout_s=90)
    m = result["metrics"]
    problems = {f"{kind} {symbol}": r for kind in ("trade", "aggTrade") for symbol, r in result[kind].items()
                if symbol != "records" and (r["missing"] or r["duplicates"])}
    out_of_place = 0
    for kind, field in (("trade", "trade_id"), ("aggTrade", "agg_trade_id")):
        live: dict[str, list[int]] = {}
        for record in result[kind]["records"]:
            if record.headers.get("k2-source") == b"rest":
                out_of_place += 1
            else:
                live.setdefault(record.value["symbol"], []).append(record.value[field])
        problems.update({f"{kind} {s} live out of order": ids for s, ids in live.items() if ids != sorted(ids)})
    in_order = sum(1 for kind in ("trade", "aggTrade") for symbol, r in result[kind].items()
                   if symbol != "records" and r["in_order"])
    fault_report["pool_silent_skips"] = {
        "streams": 200, "withheld": 600, "repaired": m.value("binance_gap_repaired_messages_total"),
        "problems": len(problems), "repaired_within_s": round(repaired_s, 1), "keys_fully_in_order": in_order,
        "repair_seconds_count": m.value("binance_gap_repair_seconds_count")}
    print(f"\npool: 600 withheld ids on 200 streams repaired within {repaired_s:.1f} s")
    assert not problems, dict(list(problems.items())[:3])
    assert m.value("binance_gap_repaired_messages_total") == 600
    assert m.value("binance_gap_unrepaired_messages_total") == 0
    rest = {r.value["trade_id"] for r in result["trade"]["records"] if r.headers.get("k2-source") == b"rest"}
    assert len(rest) == 3 * sum(1 for key in skipped if key.endswith("@trade"))


def test_an_unreachable_rest_api_is_said_plainly_and_the_last_set_keeps_streaming(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = pool_simulator(make_simulator, MARKET[:50], rate=2.0)
    streamer = pool_streamer(make_streamer, sim, kafka.bootstrap_servers)
    streamer.wait_ready(60)
    sim.fail_rest(60)
    wait_for(lambda: "unreachable or unusable" in streamer.log_text(), 30, "the failure logged")
    line = next(x for x in streamer.log_text().splitlines() if "unreachable or unusable" in x)
    assert "/api/v3/exchangeInfo" in line and "503" in line and "still streaming the last known 50 symbols" in line
    sim.list_symbols(["s2000usdt"])  # not seen while the REST API fails
    before = streamer.metric("binance_messages_received_total")
    wait_for(lambda: streamer.metric("binance_messages_received_total") > before + 200, 30, "still streaming")
    assert streamer.metric("binance_messages_received_total", symbol="s2000usdt") == 0
    assert streamer.get("/readyz")[0] == 200


def test_blue_green_handover_of_a_20_connection_streamer_has_no_gap_and_no_duplicate(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    """400 symbols x trade over connections of 20 streams: blue and green each run a pool of 20 connections
    (green in standby, buffering); blue hands over its positions, green goes on from there."""
    symbols = MARKET[:400]
    sim = pool_simulator(make_simulator, symbols, rate=1.0)
    env = {"K2_BINANCE_STREAMS": "trade", "K2_STREAMS_PER_CONNECTION": 20}
    blue = pool_streamer(make_streamer, sim, kafka.bootstrap_servers, **env)
    green = pool_streamer(make_streamer, sim, kafka.bootstrap_servers, K2_INSTANCE="green", K2_START_MODE="standby",
                          K2_KAFKA_TOPIC_PREFIX=blue.env["K2_KAFKA_TOPIC_PREFIX"], **env)
    blue.wait_ready(60)
    assert green.wait_ready(60)["mode"] == "standby"
    for color in (blue, green):
        assert color.metric("binance_connections_open") == 20
    wait_for(lambda: green.metric("binance_messages_received_total") >= 2_000, 30, "green buffering")
    assert green.metric("kafka_messages_produced_total") == 0
    status, standby = blue.post("/handover/standby", {"flush_timeout_seconds": 20})
    assert status == 200 and standby["flushed"], standby
    positions = standby["positions"]
    status, released = green.post("/handover/release", {"after": positions})
    assert status == 200 and released["mode"] == "active"
    assert all(report["gap"] == 0 for report in released["streams"].values())
    wait_for(lambda: green.metric("kafka_messages_produced_total") >= 2_000, 30, "green producing")
    sim.pause_market()
    wait_for(lambda: caught_up(green, sim, list(symbols)), 60, "green caught up")
    assert blue.terminate() == 0 and green.terminate() == 0
    total = blue.summary()["delivered"] + green.summary()["delivered"]
    records = consume(kafka.bootstrap_servers, blue.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades",
                      lambda rs: len(rs) >= total, timeout_s=90)
    by_symbol: dict[str, list[Any]] = {}
    for record in records:
        by_symbol.setdefault(record.value["symbol"].lower(), []).append(record)
    missing = duplicates = 0
    for symbol in symbols:
        ids = [r.value["trade_id"] for r in by_symbol.get(symbol, [])]
        result = compare_with_truth(ids, sim.generated_ids(symbol))
        missing += result["missing"]
        duplicates += result["duplicates"]
        instances = [r.value["instance"] for r in by_symbol.get(symbol, [])]
        if "green" in instances:  # one switch, at blue's next id
            switch = instances.index("green")
            assert set(instances[:switch]) <= {"blue"} and set(instances[switch:]) == {"green"}
            if switch:
                assert ids[switch] == positions[f"{symbol}@trade"] + 1
    fault_report["pool_handover_20_connections"] = {"symbols": len(symbols), "records": len(records),
                                                    "missing": missing, "duplicates": duplicates}
    assert missing == 0 and duplicates == 0


def test_a_listing_with_a_non_ascii_name_is_streamed_and_other_quotes_are_not(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """Binance lists symbols with non-ASCII names (e.g. 币安人生USDT): quote:USDT streams them like any other,
    keyed by the symbol in UTF-8; ETHBTC (quote BTC) is not selected."""
    sim = pool_simulator(make_simulator, ("btcusdt", "币安人生usdt", "ethbtc"), rate=20.0)
    streamer = pool_streamer(make_streamer, sim, kafka.bootstrap_servers, K2_BINANCE_STREAMS="trade")
    streamer.wait_ready(60)
    assert {k for c in open_connections(sim) for k in c.streams} == {"btcusdt@trade", "币安人生usdt@trade"}
    wait_for(lambda: streamer.metric("binance_messages_received_total", symbol="币安人生usdt") >= 20, 30,
             "trades of the non-ASCII listing")
    result = audit(streamer, sim, kafka.bootstrap_servers, ["btcusdt", "币安人生usdt"])
    assert result["missing"] == 0 and result["duplicates"] == 0
    assert result["per_symbol"]["币安人生usdt"]["expected"] >= 20
    records = consume(kafka.bootstrap_servers, streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades",
                      lambda rs: any(r.value["symbol"] == "币安人生USDT" for r in rs), timeout_s=30)
    record = next(r for r in records if r.value["symbol"] == "币安人生USDT")
    assert record.key == "币安人生USDT".encode()
