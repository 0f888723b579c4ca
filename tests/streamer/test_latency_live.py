"""The latency histograms of a real streamer against the simulator and Kafka: one observation per Kafka
acknowledgement, and the exchange's clock difference visible in event -> ack but not in receive -> ack."""

from __future__ import annotations

from typing import Any

import pytest

from tests.streamer.conftest import Metrics, StreamerProcess, wait_for

pytestmark = pytest.mark.slow


def settled_metrics(streamer: StreamerProcess, sim: Any) -> Metrics:
    """Once 50 trades arrived, pause the market and wait until every trade received is acknowledged by Kafka."""
    topic = streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades"
    wait_for(lambda: streamer.metric("binance_messages_received_total", stream="trade") >= 50, 30, "50 trades")
    sim.pause_market()

    def settled() -> Metrics | None:
        metrics = streamer.metrics()
        received = metrics.value("binance_messages_received_total", stream="trade")
        return metrics if metrics.value("kafka_messages_produced_total", topic=topic) == received else None

    return wait_for(settled, 30, "every received trade acknowledged by Kafka")


def bucket(metrics: Metrics, name: str, le: str) -> float:
    return metrics.value(f"{name}_bucket", stream="trade", le=le)


def test_every_acknowledged_trade_is_one_observation_of_each_histogram(
    make_simulator: Any, make_streamer: Any, kafka: Any
) -> None:
    sim = make_simulator(rate_per_symbol=40.0)
    streamer = make_streamer(sim, kafka.bootstrap_servers)
    streamer.wait_ready()
    metrics = settled_metrics(streamer, sim)
    produced = metrics.value("kafka_messages_produced_total")
    for name in ("binance_event_to_ack_seconds", "binance_receive_to_ack_seconds"):
        assert metrics.type_of(name) == "histogram"
        assert metrics.value(f"{name}_count", stream="trade") == produced
        # Loopback Kafka acknowledges within seconds, never beyond the last finite bucket.
        assert bucket(metrics, name, "10.0") == produced
        assert 0 < metrics.value(f"{name}_sum", stream="trade") < 10.0 * produced
    assert metrics.value("binance_event_time_ahead_total", stream="trade") == 0


@pytest.mark.parametrize("offset_s", [3.0, -4.0], ids=["exchange-ahead", "exchange-behind"])
def test_the_exchange_clock_difference_shows_in_event_to_ack_only(
    make_simulator: Any, make_streamer: Any, kafka: Any, offset_s: float
) -> None:
    sim = make_simulator(rate_per_symbol=40.0, clock_offset_s=offset_s)
    streamer = make_streamer(sim, kafka.bootstrap_servers)
    streamer.wait_ready()
    metrics = settled_metrics(streamer, sim)
    count = metrics.value("binance_receive_to_ack_seconds_count", stream="trade")
    assert count > 0
    # This host's clock at both ends: the offset does not enter receive -> ack.
    assert bucket(metrics, "binance_receive_to_ack_seconds", "2.5") == count
    ahead = metrics.value("binance_event_time_ahead_total", stream="trade")
    if offset_s > 0:
        # Stamped 3 s in this host's future: every latency would be negative; each counts as 0 and is counted.
        assert ahead == count
        assert bucket(metrics, "binance_event_to_ack_seconds", "0.001") == count
    else:
        # Stamped 4 s in the past: event -> ack holds the 4 s on top of the pipeline's latency.
        assert ahead == 0
        assert bucket(metrics, "binance_event_to_ack_seconds", "2.5") == 0
        assert bucket(metrics, "binance_event_to_ack_seconds", "10.0") == count
