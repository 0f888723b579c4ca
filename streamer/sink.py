"""Kafka sink: an idempotent confluent-kafka producer that never blocks the event loop and never drops.

- `produce()` only enqueues into librdkafka (a C call, microseconds); a dedicated thread runs `poll()`, which
  serves the delivery callbacks, so the event loop never waits on the network.
- Delivery callbacks count `kafka_messages_produced_total{topic}` / `kafka_produce_errors_total`; they run in
  the poll thread and only bump plain ints that the same thread then adds to the counters. Each message
  carries its stream kind, exchange event time and receive time to its callback, which records the
  event -> ack and receive -> ack latencies (streamer/latency.py) at the acknowledgement.
- Broker down: librdkafka keeps every message (message.timeout.ms=0: no expiry) and retries; the app stops
  reading the sockets when `buffered()` reaches K2_MAX_BUFFERED_MESSAGES (back-pressure), instead of dropping.
- Idempotence (acks=all, ordered retries without duplicates within this producer session) and compression.
- Reachability for /readyz comes from librdkafka's statistics (broker state UP) and error callbacks; an
  authentication or TLS failure is named in the /readyz detail (and logged once per distinct reason, no secret).
- Connection and security settings (SASL, TLS, pass-through) come from one `KafkaClientConfig`
  (streamer.config); the settings below are set after them and cannot be overridden by it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.config import KafkaClientConfig
from streamer.latency import AckLatency

Headers = list[tuple[str, str | bytes | None]]
DeliveryCallback = Callable[[KafkaError | None, Any], None]

log = logging.getLogger(__name__)


def client_config(bootstrap_servers: str, client: KafkaClientConfig | None) -> dict[str, Any]:
    """Connection settings of any Kafka client of the project: security, pass-through, bootstrap servers."""
    return {**(client or KafkaClientConfig()).librdkafka(), "bootstrap.servers": bootstrap_servers}


def producer_config(
    bootstrap_servers: str, instance: str, compression: str, max_buffered: int, stats_interval_s: float,
    linger_s: float, client: KafkaClientConfig | None = None,
) -> dict[str, Any]:
    return {
        **client_config(bootstrap_servers, client),
        "client.id": f"k2-streamer-{instance}",
        # No loss, no reordering, no duplicates from retries: idempotence (with acks=all, ordered retries).
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": compression,
        # Batching vs latency (K2_KAFKA_LINGER_SECONDS): a message waits up to this long for others to share
        # its produce request. Measured (docs/performance.md), CPU per message at full speed / event -> append
        # p99 at 1k msg/s: 5 ms 14.1 µs / 8 ms, 2 ms (the default) 14.7 µs / 5 ms, 1 ms 16.1 µs / 4 ms, 0 17.7 µs
        # / 2 ms.
        "linger.ms": linger_s * 1000,
        # Keep messages for as long as the broker is away (0 = never expire); the app applies its own bound.
        "message.timeout.ms": 0,
        # librdkafka's own queue must never be the limit: our bound (plus handover/rotation slack) is.
        "queue.buffering.max.messages": min(2_147_483_647, max_buffered * 2 + 100_000),
        "queue.buffering.max.kbytes": 2_097_151,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2_000,
        "statistics.interval.ms": max(100, int(stats_interval_s * 1000)),
    }


class KafkaSink:
    def __init__(
        self,
        bootstrap_servers: str,
        instance: str,
        metrics: Any,
        compression: str = "lz4",
        max_buffered: int = 100_000,
        stats_interval_s: float = 1.0,
        *,
        linger_s: float,  # K2_KAFKA_LINGER_SECONDS: its default is the setting's (streamer/config.py)
        client: KafkaClientConfig | None = None,
        latency: AckLatency | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        # Latencies recorded at each acknowledgement (poll thread); None: not measured.
        self.latency = latency
        self.metrics = metrics
        self.max_buffered = max_buffered
        self.reachable = False
        self.reachable_detail = "not connected yet"
        # The last authentication or TLS failure (wrong password, untrusted certificate): named in /readyz
        # until a broker is up again. librdkafka keeps retrying, so fixing the cause needs no restart.
        self.connect_failure: str | None = None
        self.delivered = 0
        self.errors = 0
        self._counts: dict[str, int] = {}
        self._new_errors = 0
        self._overflow: deque[tuple[str, bytes, bytes, Headers, DeliveryCallback]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        config = producer_config(bootstrap_servers, instance, compression, max_buffered, stats_interval_s, linger_s,
                                 client)
        config.update(
            on_delivery=self._on_delivery,
            error_cb=self._on_error,
            stats_cb=self._on_stats,
            logger=logging.getLogger("librdkafka"),  # librdkafka's own log lines through ours (and counted)
        )
        self.producer = Producer(config)
        self._produce = self.producer.produce
        # Bound once: a bound method made per message costs the event loop ~0.05 µs.
        self._timed = self._on_delivery_timed
        self._record_latency = latency.record if latency is not None else None
        metrics.set_function(metrics.kafka_queue, self.buffered)
        metrics.set_function(metrics.kafka_reachable, lambda: 1.0 if self.reachable else 0.0)

    # ---- callbacks (poll thread) -------------------------------------------------------------------------
    def _on_delivery_timed(self, kind: str, event_ms: int | None, received_ms: int, err: KafkaError | None,
                           msg: Any) -> None:
        if err is not None:
            self._on_delivery(err, msg)
            return
        # _on_delivery's success path, written out (one Python call less per message in the poll thread). Counted
        # first: nothing below can keep a delivery from being counted.
        topic = msg.topic()
        self._counts[topic] = self._counts.get(topic, 0) + 1
        record = self._record_latency
        if record is not None:
            record(kind, event_ms, received_ms, time.time())

    def _on_delivery_then(self, on_acked: Callable[[bool], None], err: KafkaError | None, msg: Any) -> None:
        self._on_delivery(err, msg)
        on_acked(err is None)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            topic = msg.topic()
            self._counts[topic] = self._counts.get(topic, 0) + 1
            return
        self._new_errors += 1
        # Name what was lost (topic and symbol key; delivery reports carry no headers) so an operator can find
        # the gap in that symbol's ids and backfill it.
        key = msg.key().decode(errors="replace") if msg.key() else "?"
        log.error("Kafka rejected a message for %s (key %s, %d bytes): %s", msg.topic(), key, len(msg), err)

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if code in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            kind = "authentication failed" if code == KafkaError._AUTHENTICATION else "TLS handshake failed"
            failure = f"{kind}: {err.str()}"
            if failure != self.connect_failure:
                log.error("Kafka %s; keeping %d messages and retrying (fix the credentials or the CA)",
                          failure, self.buffered())
            self.connect_failure = failure
            return
        if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            if code == KafkaError._ALL_BROKERS_DOWN and self.reachable:
                self.reachable = False
                self.reachable_detail = f"all brokers down ({self.bootstrap_servers})"
                log.warning(
                    "Kafka unreachable at %s: %s; keeping %d messages and retrying",
                    self.bootstrap_servers, err.str(), self.buffered(),
                )
            return
        if err.fatal():
            log.critical("Kafka producer fatal error: %s", err)
        else:
            log.warning("Kafka producer error: %s", err)

    def _on_stats(self, stats_json: str) -> None:
        try:
            brokers = json.loads(stats_json).get("brokers", {})
        except ValueError:
            return
        up = [name for name, b in brokers.items() if b.get("nodeid", -1) >= 0 and b.get("state") == "UP"]
        if up and not self.reachable:
            log.info("Kafka reachable at %s (%d messages awaiting delivery)", ", ".join(up), self.buffered())
        elif not up and self.reachable:
            log.warning("Kafka unreachable at %s; keeping %d messages and retrying", self.bootstrap_servers,
                        self.buffered())
        self.reachable = bool(up)
        if up:
            self.connect_failure = None
        failure = f": {self.connect_failure}" if self.connect_failure else ""
        self.reachable_detail = (
            ("brokers up: " + ", ".join(up)) if up else f"no broker up ({self.bootstrap_servers}){failure}"
        )

    def _publish_counts(self) -> None:
        if self._counts:
            counts, self._counts = self._counts, {}
            for topic, n in counts.items():
                self.metrics.kafka_produced.labels(self.metrics.instance, topic).inc(n)
                self.delivered += n
        if self._new_errors:
            n, self._new_errors = self._new_errors, 0
            self.metrics.c_kafka_errors.inc(n)
            self.errors += n

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.producer.poll(0.05)
                self._publish_counts()
            except Exception:
                log.exception("Kafka poll failed; polling again")
                time.sleep(0.1)
        self._publish_counts()

    # ---- event loop side -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def buffered(self) -> int:
        """Messages not yet acknowledged by Kafka (librdkafka's queue plus our overflow)."""
        return len(self.producer) + len(self._overflow)

    def full(self) -> bool:
        return len(self.producer) + len(self._overflow) >= self.max_buffered

    def produce(self, topic: str, value: bytes, key: bytes, headers: Headers, kind: str = "",
                event_ms: int | None = None, received_ms: int = 0,
                on_acked: Callable[[bool], None] | None = None) -> None:
        """Hand one message to librdkafka (or, when its queue is full, to the overflow, in order). `kind`,
        `event_ms` (exchange event time) and `received_ms` (arrival here) feed the latency histograms; with
        `on_acked` (a repaired record: its event is old, so no latency) that is called instead, in the poll
        thread, with whether Kafka took it."""
        on_delivery: DeliveryCallback
        if on_acked is not None:
            on_delivery = partial(self._on_delivery_then, on_acked)
        elif self._record_latency is not None:
            on_delivery = partial(self._timed, kind, event_ms, received_ms)
        else:
            on_delivery = self._on_delivery
        if self._overflow:
            self._overflow.append((topic, value, key, headers, on_delivery))
            self.drain_overflow()
            return
        try:
            self._produce(topic, value, key, headers=headers, on_delivery=on_delivery)
        except BufferError:
            # librdkafka's queue is full (it is sized above our bound, so this is rare): keep the message in
            # order behind the others and retry from drain_overflow(), never drop it.
            self._overflow.append((topic, value, key, headers, on_delivery))

    def drain_overflow(self) -> None:
        while self._overflow:
            topic, value, key, headers, on_delivery = self._overflow[0]
            try:
                self._produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            except BufferError:
                return
            self._overflow.popleft()

    async def wait_delivered(self, timeout_s: float) -> bool:
        """Wait (without blocking the loop) until Kafka has acknowledged everything; False on the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.drain_overflow()
            if self.buffered() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.producer.poll(0)
        self._publish_counts()


def topic_config(min_insync_replicas: int = 0, retention_hours: float = 0.0) -> dict[str, str]:
    """Per-topic settings of topics the streamer creates (0 = the broker's default; retention -1 = forever)."""
    config: dict[str, str] = {}
    if min_insync_replicas > 0:
        config["min.insync.replicas"] = str(min_insync_replicas)
    if retention_hours == -1:
        config["retention.ms"] = "-1"
    elif retention_hours > 0:
        config["retention.ms"] = str(round(retention_hours * 3_600_000))
    return config


def ensure_topics(
    bootstrap_servers: str, topics: list[str], partitions: int, replication: int, timeout_s: float = 10.0,
    *, client: KafkaClientConfig | None = None, config: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that are missing (with `config`, e.g. topic_config()); returns those created.
    Raises KafkaException when unreachable."""
    admin = AdminClient({**client_config(bootstrap_servers, client), "socket.timeout.ms": int(timeout_s * 1000)})
    metadata = admin.list_topics(timeout=timeout_s)
    missing = [t for t in topics if t not in metadata.topics]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication, config=dict(config or {}))
         for t in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
    return created
