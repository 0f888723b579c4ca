"""Two shards split a market against the simulator and real Kafka: each streamer asks the exchange for its
shard's streams only, and together they deliver every trade of the market exactly once (ground truth)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from streamer.shards import Shard
from tests.streamer.conftest import compare_with_truth, consume, trade_ids, wait_for

pytestmark = pytest.mark.slow
MARKET = tuple(f"coin{i:02d}usdt" for i in range(16))


def test_two_shards_stream_the_market_exactly_once(make_simulator: Any, make_streamer: Any, kafka: Any) -> None:
    sim = make_simulator(symbols=MARKET, rate_per_symbol=10.0)
    prefix = f"test.shards.{uuid.uuid4().hex[:8]}"
    shards = [
        make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_SYMBOLS=",".join(MARKET), K2_SHARD_COUNT=2,
                      K2_SHARD_INDEX=index, K2_INSTANCE=f"s{index}-blue", K2_KAFKA_TOPIC_PREFIX=prefix)
        for index in (0, 1)
    ]
    for streamer in shards:
        streamer.wait_ready()

    # What each streamer subscribed to at the exchange: its shard's streams, nothing else.
    wanted = [{f"{s}@trade" for s in Shard(index, 2).select(MARKET)} for index in (0, 1)]
    assert wanted[0] and wanted[1] and wanted[0] | wanted[1] == {f"{s}@trade" for s in MARKET}
    subscribed = wait_for(lambda: [set().union(*(c.streams for c in sim.connections() if c.id in ids))
                                   for ids in _connections_by_shard(sim, wanted)] or None,
                          30, "both shards connected")
    assert subscribed == wanted

    def received() -> dict[str, int]:
        merged: dict[str, int] = {}
        for streamer in shards:
            merged.update(streamer.get("/positions")[1]["received_last"])
        return merged

    wait_for(lambda: all(len(sim.sent_ids(s)) >= 20 for s in MARKET), 60, "20 trades of every symbol sent")
    sim.pause_market()
    wait_for(lambda: all(received().get(f"{s}@trade") == sim.generated_ids(s)[-1] for s in MARKET), 30,
             "both shards caught up with the paused market")
    records = stop_and_read(shards, kafka.bootstrap_servers, f"{prefix}.trades")
    for symbol in MARKET:
        first = sim.sent_ids(symbol)[0]  # the first trade the exchange sent for it, to its shard's connection
        result = compare_with_truth(trade_ids(records, symbol), sim.generated_ids(symbol), first)
        assert (result["missing"], result["duplicates"], result["unexpected"]) == (0, 0, 0), (symbol, result)
        assert result["delivered"] >= 20, (symbol, result)


def stop_and_read(shards: list[Any], bootstrap: str, topic: str) -> list[Any]:
    """Stop every shard's streamer, then read back from Kafka exactly what they say they delivered."""
    delivered = 0
    for streamer in shards:
        assert streamer.terminate() == 0
        delivered += streamer.summary()["delivered"]
    records: list[Any] = consume(bootstrap, topic, lambda rs: len(rs) >= delivered, timeout_s=60)
    assert len(records) == delivered
    return records


def _connections_by_shard(sim: Any, wanted: list[set[str]]) -> list[set[int]]:
    """The simulator's connection ids per shard (a connection belongs to the shard whose streams it asked for);
    empty until each shard has one."""
    found: list[set[int]] = [set(), set()]
    for connection in sim.connections():
        for index, streams in enumerate(wanted):
            if set(connection.streams) & streams:
                found[index].add(connection.id)
    return found if all(found) else []


def test_two_shards_discover_the_market_and_split_its_listings(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    """quote:USDT from exchangeInfo in both shards, a listing and a delisting mid-run: at every moment the
    shards' subscriptions are the market exactly (no stream twice, none missing), and Kafka holds every trade
    the exchange sent, once."""
    market = tuple(f"m{i:03d}usdt" for i in range(120))
    sim = make_simulator(symbols=market, rate_per_symbol=1.0, tick_interval_s=0.05, control_port=None)
    prefix = f"test.shards.{uuid.uuid4().hex[:8]}"
    shards = [
        make_streamer(sim, kafka.bootstrap_servers, K2_BINANCE_SYMBOLS="quote:USDT",
                      K2_BINANCE_REST_URL=sim.ws_base_url.replace("wss://", "https://"), K2_SYMBOL_REFRESH_SECONDS=1,
                      K2_STREAMS_PER_CONNECTION=25, K2_SHARD_COUNT=2, K2_SHARD_INDEX=index,
                      K2_INSTANCE=f"s{index}-blue", K2_KAFKA_TOPIC_PREFIX=prefix)
        for index in (0, 1)
    ]
    for streamer in shards:
        streamer.wait_ready(60)

    def split_is(symbols: set[str]) -> bool:
        subscribed = [k for c in sim.connections() if c.closed_at is None for k in c.streams]
        return len(subscribed) == len(set(subscribed)) and set(subscribed) == {f"{s}@trade" for s in symbols}

    wait_for(lambda: split_is(set(market)), 30, "the shards together subscribed to the market, each stream once")
    listed, delisted = "m999usdt", market[7]
    sim.delist_symbols([delisted])
    sim.list_symbols([listed])
    now = (set(market) | {listed}) - {delisted}
    wait_for(lambda: split_is(now), 30, "the listing subscribed by one shard, the delisting dropped")

    def received(streamer: Any) -> dict[str, int]:
        return dict(streamer.get("/positions")[1]["received_last"])

    wait_for(lambda: all(len(sim.sent_ids(s)) >= 3 for s in now), 60, "three trades of every symbol sent")
    for index, streamer in enumerate(shards):
        owned = {f"{s}@trade" for s in Shard(index, 2).select(now | {delisted})}
        assert set(received(streamer)) <= owned, f"shard {index} received another shard's symbol"

    sim.pause_market()
    everything = sorted(now | {delisted})

    def caught_up() -> bool:
        merged = {**received(shards[0]), **received(shards[1])}
        return all(merged.get(f"{s}@trade") == (sim.sent_ids(s)[-1:] or [None])[0] for s in everything)

    wait_for(caught_up, 60, "both shards caught up with the paused market")
    records = stop_and_read(shards, kafka.bootstrap_servers, f"{prefix}.trades")
    for symbol in everything:
        sent = sim.sent_ids(symbol)
        expected = [g for g in sim.generated_ids(symbol) if sent[0] <= g <= sent[-1]]
        result = compare_with_truth(trade_ids(records, symbol), expected, expected[0])
        assert (result["missing"], result["duplicates"], result["unexpected"]) == (0, 0, 0), (symbol, result)
