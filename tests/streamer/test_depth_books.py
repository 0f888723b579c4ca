"""Order books a consumer rebuilds from Kafka (k2_ops/books.py, `k2 book`) against the simulator's own books:
snapshots in `<prefix>.depth_snapshots`, diffs in `<prefix>.depth`, a silent loss of diffs healed by a resync,
and a market of 300 symbols whose trades, aggTrades and books all come out exact."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest

from k2_ops.books import rebuild_books
from k2_ops.simulator import BackgroundSimulator
from tests.streamer.conftest import REPO_ROOT, StreamerProcess, settle_streams, wait_for

pytestmark = pytest.mark.slow

DEPTH = "depth@100ms"


def _levels(levels: list[list[str]]) -> list[dict[str, str]]:
    return [{"price": price, "quantity": quantity} for price, quantity in levels]


def _books_settled(streamer: StreamerProcess, sim: BackgroundSimulator, symbols: tuple[str, ...]) -> None:
    """Pause the market; once its last book changes went out in a diff and the streamer has that diff, stop it."""
    sim.pause_market()

    def published() -> bool:
        return all(sim.sent_ids(s, DEPTH)[-1:] == [sim.book(s)["lastUpdateId"]] for s in symbols)

    wait_for(published, 30, "the last book changes sent in a diff")

    def received() -> bool:
        _, positions = streamer.get("/positions")
        return all(positions["received_last"].get(f"{s}@{DEPTH}") == sim.sent_ids(s, DEPTH)[-1] for s in symbols)

    wait_for(received, 30, "the streamer received every last diff")
    wait_for(lambda: streamer.metric("binance_depth_books_out_of_sync") == 0, 60, "every book in sync")


def _assert_books_equal(kafka: Any, streamer: StreamerProcess, sim: BackgroundSimulator,
                        symbols: tuple[str, ...]) -> dict[str, Any]:
    books = rebuild_books({"bootstrap.servers": kafka.bootstrap_servers}, streamer.env["K2_KAFKA_TOPIC_PREFIX"],
                          timeout_s=120)
    wrong = []
    for symbol in symbols:
        book, truth = books[symbol.upper()], sim.book(symbol)
        if book.status != "in_sync" or book.bids != _levels(truth["bids"]) or book.asks != _levels(truth["asks"]):
            wrong.append((symbol, book.status, book.break_at, book.last_update_id, truth["lastUpdateId"]))
    assert not wrong, wrong[:3]
    return books


def test_books_rebuilt_from_kafka_equal_the_exchanges_after_a_silent_loss_and_a_resync(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    symbols = ("btcusdt", "ethusdt")
    sim = make_simulator(symbols=symbols)
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_STREAMS="depth")
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("binance_depth_books_in_sync") == 2, 30, "both books in sync")
    assert streamer.metric("binance_depth_snapshots_total", outcome="produced") == 2
    sim.skip_messages([f"btcusdt@{DEPTH}"], count=3)  # three diffs lost without a disconnect: the chain breaks
    wait_for(lambda: streamer.metric("binance_depth_resyncs_total") == 1, 30, "the broken book resynced")
    wait_for(lambda: streamer.metric("binance_depth_snapshots_total", outcome="produced") == 3, 30,
             "a new snapshot for it")
    _books_settled(streamer, sim, symbols)
    assert streamer.terminate() == 0
    books = _assert_books_equal(kafka, streamer, sim, symbols)
    # `k2 book` says the same, and exits 0.
    done = subprocess.run([sys.executable, "-m", "k2_ops.cli", "book", "--kafka", kafka.bootstrap_servers,
                           "--topic-prefix", streamer.env["K2_KAFKA_TOPIC_PREFIX"], "--levels", "1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BTCUSDT: in_sync" in done.stdout and "ETHUSDT: in_sync" in done.stdout
    fault_report["depth_silent_loss"] = {"resyncs": 1, "diffs_applied": {s: b.diffs_applied for s, b in books.items()}}


def test_a_chain_broken_after_the_last_snapshot_is_reported_by_k2_book(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """The depth topic holds a break with no snapshot after it (here: the streamer stopped right after a loss,
    before its resync could be taken): k2 book says so and exits 1."""
    sim = make_simulator(symbols=("btcusdt",))
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_STREAMS="depth",
                             K2_BINANCE_REST_RETRY_SECONDS="60")
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("binance_depth_books_in_sync") == 1, 30, "the book in sync")
    sim.rest_fault(503, 120.0)  # no snapshot can be taken from now on
    sim.skip_messages([f"btcusdt@{DEPTH}"], count=2)
    wait_for(lambda: streamer.metric("binance_depth_resyncs_total") == 1, 30, "the break seen")
    produced = streamer.metric("kafka_messages_produced_total")
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") > produced + 5, 30, "diffs after the break")
    assert streamer.terminate() == 0
    done = subprocess.run([sys.executable, "-m", "k2_ops.cli", "book", "--kafka", kafka.bootstrap_servers,
                           "--topic-prefix", streamer.env["K2_KAFKA_TOPIC_PREFIX"]],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BTCUSDT: broken" in done.stdout and "missing" in done.stdout
    assert "chain broken or no snapshot: BTCUSDT" in done.stderr


def test_a_market_with_silent_losses_everywhere_keeps_every_trade_and_every_book_exact(
    make_simulator: Any, make_streamer: Any, kafka: Any, fault_report: dict[str, Any]
) -> None:
    """300 symbols x trade + aggTrade + depth (900 streams over 5 connections); the exchange silently withholds
    messages of 150 random streams. Every trade and aggTrade id reaches Kafka exactly once, and every book
    rebuilt from Kafka equals the exchange's. Binance's weight window is shrunk to 6 s (time is a parameter) so
    the 300 first snapshots (weight 5 each) do not wait for minutes (~60 s in all)."""
    symbols = tuple(f"s{i:03d}usdt" for i in range(300))
    sim = make_simulator(symbols=symbols, rate_per_symbol=1.0, tick_interval_s=0.05, control_port=None,
                         rest_weight_window_s=6.0)
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_SYMBOLS=",".join(symbols),
                             K2_BINANCE_STREAMS="trade,aggTrade,depth", K2_STREAMS_PER_CONNECTION=200,
                             K2_BINANCE_REST_WEIGHT_SHARE=1, K2_BINANCE_REST_WEIGHT_WINDOW_SECONDS=6,
                             K2_MAX_BUFFERED_MESSAGES=1_000_000)
    streamer.wait_ready(60)
    wait_for(lambda: streamer.metric("binance_depth_books_in_sync") == 300, 120, "all 300 books in sync")
    synced_after = streamer.get("/healthz")[1]["uptime_seconds"]
    rng = random.Random(5)
    streams = [f"{s}@{k}" for s in symbols for k in ("trade", "aggTrade", DEPTH)]
    withheld = rng.sample(streams, 150)
    sim.skip_messages(withheld, count=2)
    lost_diffs = sum(1 for key in withheld if key.endswith(DEPTH))
    wait_for(lambda: streamer.metric("binance_depth_resyncs_total") >= lost_diffs, 60, "every broken book resynced")
    _books_settled(streamer, sim, symbols)
    result = settle_streams(streamer, sim, kafka.bootstrap_servers, symbols,
                            {"trade": "trade_id", "aggTrade": "agg_trade_id"}, timeout_s=120)
    m = result["metrics"]
    problems = {f"{kind} {s}": r for kind in ("trade", "aggTrade") for s, r in result[kind].items()
                if s != "records" and (r["missing"] or r["duplicates"])}
    assert not problems, dict(list(problems.items())[:3])
    assert m.value("binance_gap_unrepaired_messages_total") == 0
    _assert_books_equal(kafka, streamer, sim, symbols)
    fault_report["market_books_and_trades"] = {
        "symbols": 300, "streams": 900, "withheld_streams": 150, "resyncs": m.value("binance_depth_resyncs_total"),
        "repaired": m.value("binance_gap_repaired_messages_total"), "books_synced_after_s": synced_after}
