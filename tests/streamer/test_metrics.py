from streamer.integrity import SequenceTracker
from streamer.metrics import StreamerMetrics
from streamer.serialize import topic_for


def test_per_stream_and_per_topic_series_exist_at_zero_before_the_first_event() -> None:
    metrics = StreamerMetrics("blue", SequenceTracker())
    topics = [topic_for("market.crypto.binance", stream) for stream in ("trade", "depth")]
    metrics.prime_streams(("trade", "depth"), topics)
    value = metrics.registry.get_sample_value
    for topic in topics:
        assert value("kafka_messages_produced_total", {"instance": "blue", "topic": topic}) == 0
    for stream in ("trade", "depth"):
        assert value("binance_unknown_fields_total", {"instance": "blue", "stream": stream}) == 0
