"""Values of two metrics no other test reads: `serializer_cache_evictions_total` and
`binance_connection_lifetime_seconds`, from a real streamer process against the simulator, real Kafka and the
real Schema Registry.

Evictions: the streamer registers one Avro subject per record it writes at start-up (its stream kinds in
K2_BINANCE_STREAMS order, then depth snapshots, as depth sync is on), then encodes what the exchange sends;
with an LRU bound below the number of subjects, the evictions are exactly (subjects - bound) at start-up plus
one per stream kind the traffic brings back after it was evicted.

Lifetime: the gauge is read on each scrape (`now - opened_at` of the connection delivering data), so between two
scrapes it grows by the time between them; every read is bracketed by monotonic clock readings taken before and
after its HTTP request (the same system clock in both processes), so the assertions hold on any load.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.streamer.conftest import StreamerProcess, wait_for

pytestmark = pytest.mark.slow

ALL_STREAMS = ("trade", "aggTrade", "bookTicker", "depth")
SUBJECTS = (*ALL_STREAMS, "depthSnapshot")  # depth sync (the default) writes snapshots to their own topic
CACHE_BOUND = 2
TRADES_EACH = 10  # trades and aggTrades, alternating: both stay cached once loaded


def write_trade_and_aggtrade_recording(path: Path) -> int:
    """A recording (replay format) of alternating btcusdt trade and aggTrade frames; returns the frame count."""
    base_ns = 1_723_161_255_000_000_000
    lines = []
    for i in range(TRADES_EACH):
        trade = (f'{{"e":"trade","E":{1723161255343 + i},"s":"BTCUSDT","t":{1000 + i},"p":"61837.63000000",'
                 f'"q":"0.00100000","T":{1723161255342 + i},"m":true,"M":true}}')
        agg = (f'{{"e":"aggTrade","E":{1723161255343 + i},"s":"BTCUSDT","a":{5000 + i},"p":"61837.63000000",'
               f'"q":"0.00100000","f":{7000 + i},"l":{7000 + i},"T":{1723161255342 + i},"m":false,"M":true}}')
        lines.append(f'{base_ns + 2 * i * 1_000_000} {{"stream":"btcusdt@trade","data":{trade}}}')
        lines.append(f'{base_ns + (2 * i + 1) * 1_000_000} {{"stream":"btcusdt@aggTrade","data":{agg}}}')
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return len(lines)


def test_cache_bound_below_the_subjects_exports_exactly_the_evictions_made(
    make_simulator: Any, make_streamer: Any, kafka: Any, schema_registry: Any, tmp_path: Path
) -> None:
    frames = write_trade_and_aggtrade_recording(tmp_path / "trades.gz")
    sim = make_simulator(symbols=(), replay_file=tmp_path / "trades.gz", replay_speed=0)
    streamer = make_streamer(
        sim, kafka.bootstrap_servers, K2_BINANCE_SYMBOLS="btcusdt", K2_BINANCE_STREAMS=",".join(ALL_STREAMS),
        K2_SERIALIZER_CACHE_MAX_SIZE=CACHE_BOUND, K2_SCHEMA_REGISTRY_URL=schema_registry.url,
        K2_HEALTH_CHECK_TIMEOUT_SECONDS=60,
    )

    def all_produced() -> bool:
        streamer.assert_running()
        return streamer.metric("kafka_messages_produced_total") >= frames

    wait_for(all_produced, 60, f"the {frames} replayed frames produced to Kafka; log:\n{streamer.log_tail()}")
    m = streamer.metrics()
    # Start-up registers 5 subjects into an LRU of 2: trade, aggTrade and bookTicker evicted, depth and
    # depthSnapshot kept (the replay sends no depth diff, so no snapshot is taken). The first trade evicts depth,
    # the first aggTrade depthSnapshot; every later frame is a hit.
    startup_evictions = len(SUBJECTS) - CACHE_BOUND
    returning_kinds = 2
    assert m.value("serializer_cache_evictions_total", instance="blue") == startup_evictions + returning_kinds
    assert m.value("serializer_cache_size", instance="blue") == CACHE_BOUND
    assert m.value("kafka_messages_produced_total") == frames
    assert m.value("binance_sequence_gaps_total") == 0


@dataclass(frozen=True)
class LifetimeRead:
    """One scrape: the gauge, the rotation and reconnect counters, and monotonic times around the request."""

    lifetime: float
    rotations: float
    reconnects: float
    before: float
    after: float


def read_lifetime(streamer: StreamerProcess) -> LifetimeRead:
    before = time.monotonic()
    m = streamer.metrics()
    after = time.monotonic()
    return LifetimeRead(m.value("binance_connection_lifetime_seconds"), m.value("binance_connection_rotations_total"),
                        m.value("binance_reconnects_total"), before, after)


def test_connection_lifetime_grows_with_the_connection_and_drops_after_a_rotation(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    lifetime_s = 10.0
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_CONNECTION_MAX_LIFETIME_SECONDS=lifetime_s)
    streamer.wait_ready()

    first = read_lifetime(streamer)
    assert (first.rotations, first.reconnects) == (0, 0)
    # The first connection opened at (time of the first read - its lifetime), somewhere in this interval.
    opened_earliest, opened_latest = first.before - first.lifetime, first.after - first.lifetime
    # The same connection, at least one second later: the gauge grew by the time between the two reads.
    second = wait_for(lambda: (r := read_lifetime(streamer)).before >= first.after + 1.0 and r, 30,
                      "a read one second after the first")
    assert (second.rotations, second.reconnects) == (0, 0), "the first connection must still deliver"
    assert second.before - first.after <= second.lifetime - first.lifetime <= second.after - first.before, (
        first, second)

    # Read until the rotation is counted: the gauge keeps growing with the first connection until then.
    last_before_rotation = second
    while (read := read_lifetime(streamer)).rotations == 0:
        streamer.assert_running()
        assert read.reconnects == 0 and read.lifetime >= last_before_rotation.lifetime, (last_before_rotation, read)
        assert read.before < opened_latest + lifetime_s + 60, f"no rotation 60 s after it was due: {read}"
        last_before_rotation = read
        time.sleep(0.2)
    assert (read.rotations, read.reconnects) == (1, 0)
    # The switch completed after the first connection was lifetime_s old and before this read answered, so the
    # gauge had reached lifetime_s minus the time between the last read before it and this one.
    assert last_before_rotation.lifetime >= lifetime_s - (read.after - last_before_rotation.before), (
        last_before_rotation, read)
    # Dropped: the replacement opened no earlier than the rotation was due (opened + lifetime_s).
    assert 0 < read.lifetime <= read.after - (opened_earliest + lifetime_s), (first, read)
    assert read.lifetime < last_before_rotation.lifetime
