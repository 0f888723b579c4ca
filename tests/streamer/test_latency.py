"""The latency histograms' arithmetic, driven directly (streamer/latency.py): buckets, sums, clock skew."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamer.latency import BUCKETS, AckLatency, AckLatencyCollector, Histogram


def test_an_observation_lands_in_the_first_bucket_that_holds_it() -> None:
    histogram = Histogram()
    for seconds in (0.0, 0.001, 0.0011, 0.7, 10.0, 42.0):
        histogram.observe(seconds)
    cumulative, total, count = histogram.snapshot()
    bounds = [*BUCKETS, float("inf")]
    assert count == 6 and total == 0.0 + 0.001 + 0.0011 + 0.7 + 10.0 + 42.0
    assert dict(zip(bounds, cumulative, strict=True)) == {
        0.001: 2, 0.0025: 3, 0.005: 3, 0.01: 3, 0.025: 3, 0.05: 3, 0.1: 3, 0.25: 3, 0.5: 3, 1.0: 4, 2.5: 4,
        5.0: 4, 10.0: 5, float("inf"): 6}


def test_event_time_ahead_of_the_host_counts_as_zero_and_is_counted() -> None:
    latency = AckLatency(["trade", "bookTicker"])
    latency.record("trade", event_ms=10_500, received_ms=9_990, acked_s=10.0)  # exchange 0.5 s ahead
    latency.record("trade", event_ms=7_000, received_ms=9_998, acked_s=10.0)  # 3 s from the exchange
    latency.record("bookTicker", event_ms=None, received_ms=9_995, acked_s=10.0)  # no event time on spot
    assert latency.clock_ahead == {"trade": 1, "bookTicker": 0}
    event, _, event_count = latency.event_to_ack["trade"].snapshot()
    assert event_count == 2 and event[0] == 1 and event[BUCKETS.index(2.5)] == 1 and event[BUCKETS.index(5.0)] == 2
    receive, receive_sum, receive_count = latency.receive_to_ack["trade"].snapshot()
    assert receive_count == 2 and receive[BUCKETS.index(0.0025)] == 1 and receive[BUCKETS.index(0.01)] == 2
    assert abs(receive_sum - 0.012) < 1e-9
    assert latency.event_to_ack["bookTicker"].snapshot()[2] == 0
    assert latency.receive_to_ack["bookTicker"].snapshot()[2] == 1


def test_the_scrape_shows_the_configured_kinds_as_prometheus_histograms() -> None:
    latency = AckLatency(["trade", "aggTrade", "bookTicker", "depth"])
    latency.export("trade")
    latency.record("trade", event_ms=9_997, received_ms=9_999, acked_s=10.0)
    registry = CollectorRegistry()
    registry.register(AckLatencyCollector("blue", latency))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}

    event = families["binance_event_to_ack_seconds"]
    assert event.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in event.samples if s.name.endswith("_bucket")}
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 1 and buckets["+Inf"] == 1
    assert {s.labels["stream"] for s in event.samples} == {"trade"}  # only configured kinds
    assert all(s.labels["instance"] == "blue" for s in event.samples)
    assert families["binance_receive_to_ack_seconds"].type == "histogram"
    assert [s.value for s in families["binance_event_time_ahead"].samples if s.name.endswith("_total")] == [0]


def test_an_unknown_kind_is_ignored_not_raised() -> None:
    latency = AckLatency(["trade"])
    latency.record("", event_ms=1, received_ms=1, acked_s=1.0)  # the poll thread must never raise
    assert latency.receive_to_ack["trade"].snapshot()[2] == 0
