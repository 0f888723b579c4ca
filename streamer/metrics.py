"""Every metric of the streamer contract (team brief), each labelled `instance` = K2_INSTANCE.

Metrics live in their own registry (so tests can build several) that also carries prometheus_client's
process, platform and GC collectors. Names follow the contract; prometheus_client appends `_total` to
counters, so the Counter `binance_pings_sent` is exported as `binance_pings_sent_total`.

The per-message counters (messages received, gaps, missing, duplicates) are plain ints in the sequence
tracker, read by a collector at scrape time: incrementing a labelled prometheus_client counter takes a lock
per call, which the hot path does not need (the scrape runs on the same event loop thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from streamer.integrity import SequenceTracker
from streamer.kinds import STREAM_KINDS
from streamer.latency import AckLatency, AckLatencyCollector
from streamer.parse import MESSAGE_ERROR_TYPES
from streamer.rest import Endpoint
from streamer.routing import Failure, Rotation

ROTATION_REASONS = tuple(reason.value for reason in Rotation)
RECONNECT_REASONS = tuple(reason.value for reason in Failure)
CONNECT_FAILURE_REASONS = ("ssl_certificate", "refused", "timeout", "handshake", "error")
LOG_LEVELS = ("error", "critical")

# (exported name, type) of every metric the contract names; tests check /metrics against it.
CONTRACT_METRICS: dict[str, str] = {
    "binance_ssl_verify_enabled": "gauge",
    "binance_connection_rotations_total": "counter",
    "binance_connection_lifetime_seconds": "gauge",
    "binance_pong_timeouts_total": "counter",
    "binance_last_pong_timestamp_seconds": "gauge",
    "binance_pings_sent_total": "counter",
    "binance_reconnects_total": "counter",
    "binance_connection_status": "gauge",
    "binance_connections_open": "gauge",
    "binance_connection_slots": "gauge",
    "binance_connection_age_oldest_seconds": "gauge",
    "binance_connection_age_youngest_seconds": "gauge",
    "binance_last_message_timestamp_seconds": "gauge",
    "binance_message_errors_total": "counter",
    "binance_messages_received_total": "counter",
    "binance_sequence_gaps_total": "counter",
    "binance_missing_messages_total": "counter",
    "binance_duplicates_dropped_total": "counter",
    "serializer_cache_size": "gauge",
    "serializer_cache_evictions_total": "counter",
    "kafka_messages_produced_total": "counter",
    "kafka_produce_errors_total": "counter",
    "kafka_producer_queue_messages": "gauge",
    "process_memory_rss_bytes": "gauge",
    "memory_leak_detection_score": "gauge",
    "streamer_log_errors_total": "counter",
    "streamer_backpressure_active": "gauge",
    "binance_event_to_ack_seconds": "histogram",
    "binance_receive_to_ack_seconds": "histogram",
    "binance_gap_repaired_messages_total": "counter",
    "binance_gap_unrepaired_messages_total": "counter",
    "binance_gap_repair_seconds": "histogram",
    "binance_gap_repair_pending_messages": "gauge",
    "binance_rest_requests_total": "counter",
    "binance_rest_weight_used": "gauge",
    "binance_rest_banned": "gauge",
    "binance_rest_bad_answers_total": "counter",
    "binance_depth_resyncs_total": "counter",
    "binance_depth_snapshots_total": "counter",
    "binance_depth_books_in_sync": "gauge",
    "binance_depth_books_out_of_sync": "gauge",
    "binance_depth_book_out_of_sync_seconds": "gauge",
}
SNAPSHOT_OUTCOMES = ("produced", "too_old", "broken", "bad_answer", "error")
# Gap repair latency (gap seen -> last repaired id acknowledged): a REST round trip at best (about 10 ms against
# the local simulator in `k2 bench`), the deadline at worst.
REPAIR_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                          600.0)
REST_ENDPOINTS = tuple(endpoint.label for endpoint in Endpoint)


class _TrackerCollector:
    """Exports the sequence tracker's plain-int counters at scrape time."""

    def __init__(self, instance: str, tracker: SequenceTracker) -> None:
        self.instance = instance
        self.tracker = tracker

    def describe(self) -> Iterable[Metric]:
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_samples=True)

    def _families(self, with_samples: bool) -> list[Metric]:
        received = CounterMetricFamily(
            "binance_messages_received",
            "Market-data messages received and accepted (unique, after duplicate removal)",
            labels=["instance", "symbol", "stream"],
        )
        gaps = CounterMetricFamily(
            "binance_sequence_gaps", "Jumps in a stream's contiguous ids",
            labels=["instance", "symbol", "stream"],
        )
        missing = CounterMetricFamily(
            "binance_missing_messages", "Ids skipped by sequence gaps (messages lost)", labels=["instance"]
        )
        duplicates = CounterMetricFamily(
            "binance_duplicates_dropped", "Messages dropped as already seen (e.g. connection overlap)",
            labels=["instance"],
        )
        if with_samples:
            total_missing = total_duplicates = 0
            for state in list(self.tracker.states.values()):
                labels = [self.instance, state.symbol, state.stream]
                received.add_metric(labels, state.accepted)
                gaps.add_metric(labels, state.gaps)
                total_missing += state.missing
                total_duplicates += state.duplicates
            missing.add_metric([self.instance], total_missing)
            duplicates.add_metric([self.instance], total_duplicates)
        return [received, gaps, missing, duplicates]


class _ResyncCollector:
    """binance_depth_resyncs_total: chain breaks after a sync, counted by the book sync (a plain int)."""

    def __init__(self, instance: str, count: Callable[[], int]) -> None:
        self.instance = instance
        self.count = count

    HELP = "Depth books whose diff chain broke after a sync (each resyncs from a new snapshot)"

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily("binance_depth_resyncs", self.HELP, labels=["instance"])]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("binance_depth_resyncs", self.HELP, labels=["instance"])
        family.add_metric([self.instance], self.count())
        return [family]


class StreamerMetrics:
    def __init__(
        self, instance: str, tracker: SequenceTracker, registry: CollectorRegistry | None = None
    ) -> None:
        self.instance = instance
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self.tracker = tracker
        r, i = registry, ["instance"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, i, registry=r)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*i, *extra], registry=r)

        self.ssl_verify_enabled = gauge("binance_ssl_verify_enabled", "1 if server certificates are verified")
        self.rotations = counter(
            "binance_connection_rotations", "Planned make-before-break rotations", ("reason",)
        )
        self.connection_lifetime = gauge(
            "binance_connection_lifetime_seconds",
            "Age of the oldest connection delivering data (the one connection's age for a pool of one)",
        )
        self.connections_open = gauge(
            "binance_connections_open", "Connections of the pool delivering data (one per slot at most)"
        )
        self.connection_slots = gauge(
            "binance_connection_slots",
            "Connection slots of the pool (symbols x streams / K2_STREAMS_PER_CONNECTION, rounded up): the "
            "daily checks expect their per-connection rotations and pings times this",
        )
        self.connection_age_oldest = gauge(
            "binance_connection_age_oldest_seconds", "Age of the oldest connection of the pool delivering data"
        )
        self.connection_age_youngest = gauge(
            "binance_connection_age_youngest_seconds", "Age of the youngest connection of the pool delivering data"
        )
        self.pong_timeouts = counter("binance_pong_timeouts", "Client pings whose pong missed the deadline")
        self.last_pong = gauge("binance_last_pong_timestamp_seconds", "Unix time of the last pong received")
        self.pings_sent = counter("binance_pings_sent", "Client pings sent")
        self.reconnects = counter(
            "binance_reconnects", "Unplanned connection replacements (rotations excluded)", ("reason",)
        )
        self.connection_status = gauge(
            "binance_connection_status", "1 while every connection slot of the pool has a connection delivering data"
        )
        self.last_message = gauge(
            "binance_last_message_timestamp_seconds", "Unix time of the last market-data message"
        )
        self.message_errors = counter(
            "binance_message_errors", "Frames skipped: malformed, unknown event, oversized...",
            ("error_type",),
        )
        self.unknown_fields = counter(
            "binance_unknown_fields", "Payload fields we do not know (tolerated)", ("stream",)
        )
        self.connection_attempts = counter("binance_connection_attempts", "WebSocket connection attempts")
        self.connection_failures = counter(
            "binance_connection_failures", "Connection attempts that failed, by cause", ("reason",)
        )
        self.serializer_cache_size = gauge("serializer_cache_size", "Avro serializers cached (LRU)")
        self.serializer_cache_evictions = counter(
            "serializer_cache_evictions", "Avro serializers evicted from the LRU"
        )
        self.kafka_produced = counter("kafka_messages_produced", "Messages Kafka acknowledged", ("topic",))
        self.kafka_errors = counter("kafka_produce_errors", "Messages Kafka failed to take")
        self.kafka_queue = gauge("kafka_producer_queue_messages", "Messages awaiting Kafka's acknowledgement")
        self.kafka_reachable = gauge("streamer_kafka_reachable", "1 while a Kafka broker is up")
        self.rss = gauge("process_memory_rss_bytes", "Resident set size (psutil)")
        self.leak_score = gauge("memory_leak_detection_score", "Leak likelihood in [0, 1] from the RSS trend")
        self.leak_slope = gauge("memory_rss_trend_mb_per_hour", "Robust (Theil-Sen) RSS slope in MB/h")
        self.log_errors = counter("streamer_log_errors", "Log records at ERROR or CRITICAL", ("level",))
        self.backpressure = gauge("streamer_backpressure_active", "1 while reads pause: Kafka buffer full")
        self.handover_standby = gauge("streamer_handover_standby", "1 while buffering without producing")
        self.gap_repaired = counter(
            "binance_gap_repaired_messages", "Missed ids fetched from Binance's REST history and produced", ("stream",))
        self.gap_unrepaired = counter(
            "binance_gap_unrepaired_messages",
            "Missed ids given up: no longer served by the REST history, or not repaired by the deadline", ("stream",))
        self.gap_repair_seconds = Histogram(
            "binance_gap_repair_seconds", "From a gap seen to its last repaired id acknowledged by Kafka", i,
            buckets=REPAIR_SECONDS_BUCKETS, registry=r)
        self.gap_repair_pending = gauge("binance_gap_repair_pending_messages", "Missed ids still under repair")
        self.rest_requests = counter(
            "binance_rest_requests", "REST requests to Binance, by endpoint and HTTP status ('error': no answer)",
            ("endpoint", "code"))
        self.rest_weight_used = gauge(
            "binance_rest_weight_used",
            "Request weight counted in the current window: ours, or Binance's X-MBX-USED-WEIGHT-1M when higher")
        self.rest_banned = gauge("binance_rest_banned", "1 while Binance bans this IP (HTTP 418): no REST request")
        self.depth_snapshots = counter(
            "binance_depth_snapshots", "Depth snapshots taken, by outcome: produced, or asked again (too_old, "
            "broken, bad_answer, error)", ("outcome",))
        self.depth_in_sync = gauge("binance_depth_books_in_sync", "Depth books whose diffs chain from a snapshot")
        self.depth_out_of_sync = gauge(
            "binance_depth_books_out_of_sync", "Depth books waiting for a snapshot (never synced, or broken)")
        self.depth_out_of_sync_seconds = gauge(
            "binance_depth_book_out_of_sync_seconds", "How long the depth book longest out of sync has been so")
        self.rest_bad_answers = counter(
            "binance_rest_bad_answers", "REST answers that could not be used (not JSON, not the ids asked for)",
            ("endpoint",))
        registry.register(_TrackerCollector(instance, tracker))
        # Event -> ack and receive -> ack per stream kind, recorded by the Kafka sink at each acknowledgement.
        self.ack_latency = AckLatency(STREAM_KINDS)
        registry.register(AckLatencyCollector(instance, self.ack_latency))

        # Children resolved once; the label values below exist from the start (rate() needs a zero).
        self.c_pings_sent = self.pings_sent.labels(instance)
        self.c_pong_timeouts = self.pong_timeouts.labels(instance)
        self.c_kafka_errors = self.kafka_errors.labels(instance)
        self.c_evictions = self.serializer_cache_evictions.labels(instance)
        self.c_attempts = self.connection_attempts.labels(instance)
        for reason in ROTATION_REASONS:
            self.rotations.labels(instance, reason)
        for reason in RECONNECT_REASONS:
            self.reconnects.labels(instance, reason)
        for reason in CONNECT_FAILURE_REASONS:
            self.connection_failures.labels(instance, reason)
        for level in LOG_LEVELS:
            self.log_errors.labels(instance, level)
        for gauge_metric in (
            self.ssl_verify_enabled, self.connection_lifetime, self.last_pong, self.connection_status,
            self.connections_open, self.connection_slots, self.connection_age_oldest, self.connection_age_youngest,
            self.last_message, self.serializer_cache_size, self.kafka_queue, self.kafka_reachable, self.rss,
            self.leak_score, self.leak_slope, self.backpressure, self.handover_standby, self.gap_repair_pending,
            self.rest_weight_used, self.rest_banned, self.depth_in_sync, self.depth_out_of_sync,
            self.depth_out_of_sync_seconds,
        ):
            gauge_metric.labels(instance)
        for error_type in MESSAGE_ERROR_TYPES:
            self.message_errors.labels(instance, error_type)
        self.gap_repair_seconds.labels(instance)
        for outcome in SNAPSHOT_OUTCOMES:
            self.depth_snapshots.labels(instance, outcome)
        self._depth_resyncs: Callable[[], int] = lambda: 0
        registry.register(_ResyncCollector(instance, lambda: self._depth_resyncs()))
        for endpoint in REST_ENDPOINTS:
            self.rest_requests.labels(instance, endpoint, "200")
            self.rest_bad_answers.labels(instance, endpoint)

    def prime_streams(self, streams: Iterable[str], topics: Iterable[str]) -> None:
        """Zero series for the configured streams and their topics, so rate() works before the first event."""
        for stream in streams:
            self.unknown_fields.labels(self.instance, stream)
            self.ack_latency.export(stream)
            self.gap_repaired.labels(self.instance, stream)
            self.gap_unrepaired.labels(self.instance, stream)
        for topic in topics:
            self.kafka_produced.labels(self.instance, topic)

    # Small helpers keep call sites short and the label order in one place.
    def g(self, gauge_metric: Gauge) -> Gauge:
        return gauge_metric.labels(self.instance)

    def set_function(self, gauge_metric: Gauge, function: Callable[[], float]) -> None:
        gauge_metric.labels(self.instance).set_function(function)

    def on_serializer_cache(self, size: int, evicted: int) -> None:
        self.g(self.serializer_cache_size).set(size)
        if evicted:
            self.c_evictions.inc(evicted)

    # ---- gap repair and the REST budget (streamer/repair.py, streamer/rest.py) --------------------------------
    def on_gap_repaired(self, stream: str, count: int) -> None:
        self.gap_repaired.labels(self.instance, stream).inc(count)

    def on_gap_unrepaired(self, stream: str, count: int) -> None:
        self.gap_unrepaired.labels(self.instance, stream).inc(count)

    def on_gap_repair_seconds(self, seconds: float) -> None:
        self.gap_repair_seconds.labels(self.instance).observe(seconds)

    def on_rest_request(self, endpoint: str, code: str) -> None:
        self.rest_requests.labels(self.instance, endpoint, code).inc()

    def on_rest_bad_answer(self, endpoint: str) -> None:
        self.rest_bad_answers.labels(self.instance, endpoint).inc()

    def on_depth_snapshot(self, outcome: str) -> None:
        self.depth_snapshots.labels(self.instance, outcome).inc()

    def follow_books(self, in_sync: Callable[[], float], out_of_sync: Callable[[], float],
                     oldest_s: Callable[[], float], resyncs: Callable[[], int]) -> None:
        """Read the depth books' state at scrape time (the book sync owns it)."""
        self.set_function(self.depth_in_sync, in_sync)
        self.set_function(self.depth_out_of_sync, out_of_sync)
        self.set_function(self.depth_out_of_sync_seconds, oldest_s)
        self._depth_resyncs = resyncs

    def on_rest_budget(self, used: int, banned: bool) -> None:
        self.g(self.rest_weight_used).set(used)
        self.g(self.rest_banned).set(1 if banned else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ErrorCountingHandler(logging.Handler):
    """Counts log records at ERROR and above in streamer_log_errors_total{level} (the 'critical errors')."""

    def __init__(self, metrics: StreamerMetrics) -> None:
        super().__init__(level=logging.ERROR)
        self._children = {
            logging.ERROR: metrics.log_errors.labels(metrics.instance, "error"),
            logging.CRITICAL: metrics.log_errors.labels(metrics.instance, "critical"),
        }

    def emit(self, record: logging.LogRecord) -> None:
        child = self._children.get(record.levelno) or self._children[
            logging.CRITICAL if record.levelno > logging.ERROR else logging.ERROR
        ]
        child.inc()

