"""The benchmark's gap repair latency, read from Kafka records: per hole of repaired records, from the streamer
receiving the first live record after it to the last repaired record of the hole appended."""

from __future__ import annotations

from k2_ops.bench.kafka_io import Rec
from k2_ops.bench.phases import repair_latencies


def rec(ident: int, received_ms: int, appended_ms: int, repaired: bool = False, stream: str = "trade") -> Rec:
    return Rec(stream, "btcusdt", ident, None, received_ms, "blue", appended_ms, 0, ident, repaired)


def test_each_hole_is_timed_from_the_jump_seen_to_its_last_repaired_append() -> None:
    records = [
        rec(1, 1_000, 1_002),
        rec(2, 5_000, 5_300, repaired=True),
        rec(3, 5_000, 5_450, repaired=True),  # the hole's last append: 450 ms after id 4 was received
        rec(4, 5_000, 5_460),
        rec(5, 6_000, 6_002),
        rec(6, 9_000, 9_900, repaired=True),  # a second hole, of one id
        rec(7, 8_000, 9_905),
    ]
    assert repair_latencies(records) == [0.45, 1.9]


def test_streams_are_separate_and_a_hole_at_the_end_is_left_out() -> None:
    records = [
        rec(10, 1_000, 1_001, stream="aggTrade"),
        rec(11, 2_000, 2_250, repaired=True, stream="aggTrade"),
        rec(12, 2_000, 2_260, stream="aggTrade"),
        rec(11, 3_000, 3_001),  # trade 11 is live: the same id in another stream is another key
        rec(12, 4_000, 4_500, repaired=True),  # no live trade after it: its jump was never seen
    ]
    assert repair_latencies(records) == [0.25]
