"""Wires the streamer: source (WebSockets) → parse → integrity → serialize (Avro) → sink (Kafka).

Start-up: health server first (so /healthz answers and /readyz says what is missing), then Kafka topics and
Schema Registry subjects, retried plainly until reachable, then the connections. SIGTERM/SIGINT: stop
reading (close every connection with 1000, processing what the server sent before confirming the close),
wait for Kafka to acknowledge everything up to K2_SHUTDOWN_FLUSH_TIMEOUT_SECONDS, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from streamer.backpressure import BackPressure
from streamer.books import BookSync
from streamer.config import StreamerConfig
from streamer.connect import AttemptBudget, make_ssl_context
from streamer.discovery import Discovery
from streamer.health import Guard, HealthServer, json_response
from streamer.integrity import SequenceTracker
from streamer.kinds import DEPTH_SNAPSHOT, KINDS
from streamer.memory import MemoryMonitor
from streamer.metrics import ErrorCountingHandler, StreamerMetrics
from streamer.parse import FrameParser
from streamer.pipeline import Pipeline
from streamer.pool import Pool
from streamer.redact import MaskCredentials, mask_credentials
from streamer.repair import Repairer, parse_handed_over
from streamer.rest import RestClient, WeightBudget
from streamer.serialize import (
    RecordSerializer,
    SerializerCache,
    make_registry_client,
    registry_failure,
    topic_for,
)
from streamer.sink import KafkaSink, ensure_topics, topic_config
from streamer.snapshots import Snapshotter
from streamer.summary import format_summary
from streamer.symbols import Explicit, select

log = logging.getLogger("streamer")


def setup_logging(config: StreamerConfig, metrics: StreamerMetrics) -> None:
    root = logging.getLogger()
    root.setLevel(config.log_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s [{config.instance}] %(name)s: %(message)s")
    )
    # Every record, ours or a library's, passes the credential mask before any handler writes or counts it.
    handler.addFilter(MaskCredentials())
    root.handlers = [handler, ErrorCountingHandler(metrics)]
    # websockets logs every connection, httpx2 every request (registry, REST) at INFO; we log what matters.
    for chatty in ("websockets", "httpx2", "httpcore2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def saved_mode(path: str | None) -> str | None:
    """The handover mode an earlier run of this instance recorded in K2_HANDOVER_MODE_FILE, if any."""
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the handover mode file %s (%s): starting in K2_START_MODE", path, exc)
        return None
    if text in ("active", "standby"):
        return text
    log.warning("handover mode file %s holds %r, not active or standby: starting in K2_START_MODE", path, text[:40])
    return None


def initial_mode(config: StreamerConfig) -> str:
    """A container restarted after a handover resumes the mode it had, not the one it was created with."""
    return saved_mode(config.handover_mode_file) or config.start_mode


def record_mode(path: str | None, mode: str) -> None:
    if not path:
        return
    temporary = Path(f"{path}.tmp")
    try:
        temporary.write_text(mode + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        log.error("cannot record handover mode %s in %s (%s): a restart would start in K2_START_MODE",
                  mode, path, exc)


def standby_check(standby_seconds: float | None, limit_s: float) -> dict[str, Any]:
    """The /readyz check of the handover mode: a standby nobody released within `limit_s` is not serving."""
    if standby_seconds is None:
        return {"ok": True, "reason": "not in standby"}
    if limit_s > 0 and standby_seconds > limit_s:
        return {"ok": False, "reason": (
            f"standby for {standby_seconds:.0f} s without a release (K2_HANDOVER_STANDBY_MAX_SECONDS={limit_s:g}): "
            "produces nothing; POST /handover/release, or stop it")}
    limit = f"limit {limit_s:g} s" if limit_s > 0 else "no limit"
    return {"ok": True, "reason": f"standby for {standby_seconds:.1f} s ({limit})"}


async def _retry_until(
    stop: asyncio.Event, what: str, action: Callable[[], Awaitable[Any]], cap_s: float = 30.0
) -> Any:
    """Await `action()` until it succeeds, saying plainly why it failed; None if stopped."""
    delay = 1.0
    while not stop.is_set():
        try:
            return await action()
        except Exception as exc:
            log.warning("%s failed: %s; retrying in %.0f s", what, mask_credentials(str(exc)), delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(cap_s, delay * 2)
    return None


class Streamer:
    def __init__(self, config: StreamerConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.tracker = SequenceTracker()  # the pool tracks the keys of the symbols it streams
        self.metrics = StreamerMetrics(config.instance, self.tracker)
        self.metrics.prime_streams(config.streams, [topic_for(config.kafka_topic_prefix, r) for r in config.records])
        self.stop_event = asyncio.Event()
        self.sink: KafkaSink | None = None
        self.pipeline: Pipeline | None = None
        self.source: Pool | None = None
        self.memory = MemoryMonitor(
            config.memory_sample_interval_s,
            config.memory_window_s,
            config.memory_warmup_s,
            self.metrics,
            start_tracemalloc=config.tracemalloc,
            leak_bytes_per_s=config.test_leak_bytes_per_s,
            reference_mb_per_hour=config.leak_reference_mb_per_hour,
        )
        self.health = HealthServer(config.metrics_host, config.metrics_port, config.http_request_timeout_s,
                                   config.http_max_connections)
        # Binance's REST API, one weight budget for discovery, gap repairs and depth snapshots.
        self.rest = RestClient(
            config.rest_url,
            WeightBudget(max(1, int(config.rest_weight_limit * config.rest_weight_share)), config.rest_weight_window_s),
            make_ssl_context(config.ssl_verify, config.ssl_ca_file) if config.rest_url.startswith("https://") else None,
            config.rest_timeout_s, config.binance_api_key, self.metrics)
        self.repairer: Repairer | None = None
        self._register_routes()

    # ---- HTTP ----------------------------------------------------------------------------------------------
    def _register_routes(self) -> None:
        h = self.health
        h.route("GET", "/metrics", self._metrics)
        h.route("GET", "/healthz", self._healthz)
        h.route("GET", "/readyz", self._readyz)
        h.route("GET", "/positions", self._positions)
        # They change what this instance produces: only the deploy tooling, which holds the token, may call them.
        guard = Guard(self.config.handover_token, "K2_HANDOVER_TOKEN")
        h.route("POST", "/handover/standby", self._standby, guard)
        h.route("POST", "/handover/release", self._release, guard)
        h.route("GET", "/debug/allocations", self._allocations)

    async def _metrics(self, _body: bytes) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, self.metrics.exposition()

    async def _healthz(self, _body: bytes) -> tuple[int, str, bytes]:
        return json_response(200, {"status": "alive", "instance": self.config.instance,
                                   "uptime_seconds": round(time.monotonic() - self.started, 3)})

    def readiness(self) -> dict[str, Any]:
        source, sink = self.source, self.sink
        connected = source is not None and source.connected()
        since = source.seconds_since_data() if source is not None else None
        fresh = since is not None and since < self.config.health_timeout_s
        kafka = sink is not None and sink.reachable
        # Brokers may be up yet unable to take writes (fewer in-sync replicas than min.insync.replicas with
        # acks=all): the buffer fills and reading pauses. Not ready then, and the reason names Kafka.
        accepting = sink is not None and not sink.full()
        pipeline = self.pipeline
        handover = standby_check(pipeline.standby_seconds() if pipeline is not None else None,
                                 self.config.handover_standby_max_s)
        checks = {
            "connected": {
                "ok": connected,
                "reason": source.describe() if source is not None else "no open connection",
            },
            "data_fresh": {
                "ok": fresh,
                "reason": "no data yet" if since is None
                else f"last market data {since:.2f} s ago (limit {self.config.health_timeout_s} s)",
            },
            "kafka_reachable": {
                "ok": kafka,
                "reason": sink.reachable_detail if sink else "Kafka not set up yet",
            },
            "kafka_accepting": {
                "ok": accepting,
                "reason": "Kafka not set up yet" if sink is None
                else f"{sink.buffered()} messages awaiting Kafka's acknowledgement (limit {sink.max_buffered})"
                + ("" if accepting else ": Kafka is not acknowledging writes, reading paused (back-pressure)"),
            },
            "handover": handover,
        }
        return {
            "ready": connected and fresh and kafka and accepting and handover["ok"],
            "instance": self.config.instance,
            "mode": "standby" if self.pipeline is not None and self.pipeline.standby else "active",
            "checks": checks,
        }

    async def _readyz(self, _body: bytes) -> tuple[int, str, bytes]:
        result = self.readiness()
        return json_response(200 if result["ready"] else 503, result)

    async def _positions(self, _body: bytes) -> tuple[int, str, bytes]:
        if self.pipeline is None:
            return json_response(503, {"error": "not streaming yet"})
        return json_response(200, {"instance": self.config.instance, **self.pipeline.positions()})

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    async def _standby(self, body: bytes) -> tuple[int, str, bytes]:
        if self.pipeline is None:
            return json_response(503, {"error": "not streaming yet"})
        try:
            request = self._json_body(body)
            timeout = float(request.get("flush_timeout_seconds", self.config.shutdown_flush_timeout_s))
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": f"bad request: {exc}"})
        result = await self.pipeline.enter_standby(timeout)
        record_mode(self.config.handover_mode_file, "standby")
        return json_response(200 if result["flushed"] else 503, {"instance": self.config.instance, **result})

    async def _release(self, body: bytes) -> tuple[int, str, bytes]:
        if self.pipeline is None:
            return json_response(503, {"error": "not streaming yet"})
        try:
            request = self._json_body(body)
            after = request.get("after") or {}
            if not isinstance(after, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in after.items()
            ):
                raise ValueError('"after" must map stream keys ("btcusdt@trade") to integer ids')
            repairs = parse_handed_over(request.get("repairs"))
        except ValueError as exc:
            return json_response(400, {"error": f"bad request: {exc}"})
        report = self.pipeline.release(after, repairs)
        record_mode(self.config.handover_mode_file, "active")
        return json_response(200, {"instance": self.config.instance, **report})

    async def _allocations(self, _body: bytes) -> tuple[int, str, bytes]:
        return json_response(200, {"leak_score": self.memory.estimate.score,
                                   "slope_mb_per_hour": self.memory.estimate.slope_mb_per_hour,
                                   "top_allocators": self.memory.top_allocators})

    # ---- life cycle ---------------------------------------------------------------------------------
    async def run(self) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        try:
            await self.health.start()
        except OSError as exc:  # e.g. the port is taken: said plainly, not as a traceback
            log.error("cannot listen on %s:%d (K2_METRICS_HOST, K2_METRICS_PORT): %s", config.metrics_host,
                      config.metrics_port, exc.strerror or exc)
            return 1
        mode = ("NO TLS" if config.ws_url.startswith("ws://")
                else "TLS verified" if config.ssl_verify else "TLS NOT VERIFIED")
        source_kind = "live Binance" if "binance.com" in config.ws_url else "not Binance: a simulator?"
        selector = config.selector
        shown = selector.describe()
        log.info("streaming %s x %s%s from %s (%s, %s) to Kafka %s (%s) as instance %s (%s)",
                 shown if len(shown) <= 200 else f"{len(config.symbols)} symbols ({shown[:160]}...)",
                 ",".join(config.streams), "" if config.shard.whole_market else f", {config.shard}",
                 config.ws_url, source_kind, mode,
                 config.kafka_bootstrap_servers, config.kafka_client.describe(), config.instance, config.start_mode)

        sink = self.sink = KafkaSink(
            config.kafka_bootstrap_servers, config.instance, self.metrics, config.kafka_compression,
            config.max_buffered_messages, config.kafka_stats_interval_s, linger_s=config.kafka_linger_s,
            client=config.kafka_client, latency=self.metrics.ack_latency,
        )
        sink.start()
        registry = make_registry_client(config.schema_registry_url, config.schema_registry)
        cache = SerializerCache(registry, config.serializer_cache_max_size, self.metrics.on_serializer_cache)
        serializer = RecordSerializer(cache, config.kafka_topic_prefix)
        topics = [serializer.topics[record] for record in config.records]
        created = await _retry_until(
            self.stop_event, f"creating Kafka topics on {config.kafka_bootstrap_servers}",
            lambda: asyncio.to_thread(
                ensure_topics, config.kafka_bootstrap_servers, topics, config.kafka_topic_partitions,
                config.kafka_replication_factor, config.kafka_admin_timeout_s, client=config.kafka_client,
                config=topic_config(config.kafka_topic_min_insync_replicas, config.kafka_topic_retention_hours)),
        )
        if created:
            log.info("created Kafka topics %s", created)
        def register() -> list[int]:
            try:
                return [serializer.serializer(record).schema_id for record in config.records]
            except Exception as exc:
                raise RuntimeError(registry_failure(exc, config.schema_registry_url)) from None

        await _retry_until(
            self.stop_event, f"registering Avro schemas at {mask_credentials(config.schema_registry_url)}",
            lambda: asyncio.to_thread(register),
        )
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(self.memory.run(), name="memory")]
        if config.test_leak_bytes_per_s > 0:
            log.warning("TEST ONLY: retaining %.0f bytes/s on purpose (K2_TEST_LEAK_BYTES_PER_SECOND)",
                        config.test_leak_bytes_per_s)
            tasks.append(asyncio.create_task(self.memory.run_test_leak(), name="test-leak"))
        discovery: Discovery | None = None
        symbols: list[str] | None = select((), selector, config.shard) if isinstance(selector, Explicit) else None
        if symbols is None:
            discovery = Discovery(config, selector, self.rest)
            symbols = await _retry_until(
                self.stop_event, f"reading the symbol list from {mask_credentials(discovery.url)}", discovery.first
            )
        if not self.stop_event.is_set() and symbols is not None:
            mode = initial_mode(config)
            if mode != config.start_mode:
                log.warning("resuming in %s mode as recorded in %s before this instance restarted "
                            "(K2_START_MODE=%s applies to a new container only)", mode, config.handover_mode_file,
                            config.start_mode)
            self.pipeline = Pipeline(
                self.tracker, serializer, sink, standby=mode == "standby",
                standby_buffer_max=config.handover_buffer_messages,
                expected_keys=len(symbols) * len(config.streams), metrics=self.metrics,
                hold_s=config.gap_repair_hold_s,
            )
            if config.gap_repair and any(KINDS[stream].history is not None for stream in config.streams):
                tasks.append(asyncio.create_task(self._start_repairs(self.pipeline).run(), name="gap-repair"))
            if DEPTH_SNAPSHOT.name in config.records:
                tasks.append(asyncio.create_task(self._start_books(self.pipeline).run(), name="depth-snapshots"))
            parser = FrameParser(config.instance, config.max_frame_bytes)
            self.source = Pool(config, parser, self.tracker, self.pipeline.deliver, self.metrics,
                               BackPressure(sink.buffered, config.max_buffered_messages, self.metrics),
                               AttemptBudget(config.connection_attempts_per_window,
                                             config.connection_attempt_window_s),
                               symbols)
            tasks.append(asyncio.create_task(self.source.run(), name="source"))
            if discovery is not None:
                discovery.apply = self.source.change
                tasks.append(asyncio.create_task(discovery.run(), name="symbol-discovery"))
            tasks.append(asyncio.create_task(self._report_gaps(), name="gap-reporter"))
        await self.stop_event.wait()
        return await self._shutdown(tasks)

    def _start_repairs(self, pipeline: Pipeline) -> Repairer:
        config = self.config
        repairer = self.repairer = Repairer(
            self.rest, pipeline.produce_repaired, pipeline.release_held, self.tracker.last_id, config.instance,
            config.gap_repair_deadline_s, config.rest_retry_s, metrics=self.metrics)
        repairer.paused = pipeline.standby  # a standby instance learns at its release what is its to repair
        pipeline.attach_repairer(repairer)
        self.metrics.set_function(self.metrics.gap_repair_pending, repairer.pending)
        return repairer

    def _start_books(self, pipeline: Pipeline) -> Snapshotter:
        books = BookSync(self.config.instance)
        snapshotter = Snapshotter(books, self.rest, pipeline.produce_snapshot, self.config.depth_snapshot_limit,
                                  self.config.rest_retry_s, self.metrics)
        pipeline.attach_books(books, snapshotter)
        self.metrics.follow_books(books.in_sync, books.out_of_sync,
                                  lambda: books.oldest_out_of_sync_s(time.monotonic()), books.resyncs)
        return snapshotter

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self.stop_event.is_set():
            log.info("%s received: stopping", sig.name)
            self.stop_event.set()

    async def _report_gaps(self) -> None:
        """Log sequence gaps as they appear (the counters carry them too). A gap nobody repairs is lost data:
        ERROR; one under repair is a WARNING (the repairer reports at ERROR what it cannot repair)."""
        seen = (0, 0)
        while True:
            await asyncio.sleep(1.0)
            totals = self.tracker.totals()
            now = (totals["gaps"], totals["missing"])
            if now != seen and self.tracker.last_gap is not None:
                key, first, count = self.tracker.last_gap
                stream = self.tracker.states[key].stream
                repaired = self.repairer is not None and self.repairer.can_repair(stream)
                log.log(
                    logging.WARNING if repaired else logging.ERROR,
                    "sequence gap: %d gap(s), %d message(s) missing in total; latest %s from id %d (%d)%s",
                    now[0], now[1], key, first, count, " (under repair)" if repaired else "",
                )
            seen = now

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> int:
        config = self.config
        began = time.monotonic()
        if self.source is not None:
            await self.source.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.repairer is not None:
            self.repairer.give_up_all("the streamer stopped before they were repaired")
        await self.rest.close()
        flushed = True
        if self.sink is not None:
            flushed = await self.sink.wait_delivered(config.shutdown_flush_timeout_s)
            if not flushed:
                log.error("shutdown: Kafka did not acknowledge %d message(s) within %.1f s; they are lost",
                          self.sink.buffered(), config.shutdown_flush_timeout_s)
            self.sink.close()
        totals = self.tracker.totals()
        summary = {
            "received": totals["accepted"],
            "duplicates_dropped": totals["duplicates"],
            "gaps": totals["gaps"],
            "missing": totals["missing"],
            "repaired": self.repairer.repaired if self.repairer else 0,
            "unrepaired": self.repairer.unrepaired if self.repairer else 0,
            "produced": self.pipeline.produced if self.pipeline else 0,
            "delivered": self.sink.delivered if self.sink else 0,
            "produce_errors": self.sink.errors if self.sink else 0,
            "unacknowledged": self.sink.buffered() if self.sink else 0,
            "rotations": self.source.rotations if self.source else 0,
            "reconnects": self.source.reconnects if self.source else 0,
            "last_received": {k: s.last_id for k, s in self.tracker.states.items()},
            "shutdown_seconds": round(time.monotonic() - began, 3),
        }
        log.info("%s", format_summary(summary))
        await self.health.stop()
        return 0


async def run(config: StreamerConfig) -> int:
    streamer = Streamer(config)
    setup_logging(config, streamer.metrics)
    return await streamer.run()
