"""One function per benchmark figure. Each returns plain JSON-able data; the runner owns the processes."""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from k2_ops.bench import stages, stats
from k2_ops.bench.config import BenchConfig
from k2_ops.bench.kafka_io import Rec, create_topics, read_records
from k2_ops.bench.machine import load_average
from k2_ops.bench.procs import SimulatorProxy, StreamerRun, poll, run_floor_client
from streamer.kinds import KINDS, stream_key, stream_keys
from streamer.memory import theil_sen
from streamer.summary import summary_from_log

log = logging.getLogger("k2_ops.bench")

MB = 2**20


@dataclass
class Bench:
    """What every phase needs: settings, Kafka, the simulator, where logs go."""

    config: BenchConfig
    bootstrap: str
    simulator: SimulatorProxy
    log_dir: Path
    messages_per_trade: float = 4.0
    runs: int = 0
    loads: list[dict[str, Any]] = field(default_factory=list)
    # The handover phase's streamers and its client share this token (POST /handover/* require one).
    handover_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    # ---- simulator rate ----------------------------------------------------------------------------
    def calibrate(self, trades_per_symbol: float = 500.0, seconds: float = 2.0) -> float:
        """Messages per trade of the subscribed streams (the simulator's rate knob is trades/s/symbol)."""
        sim = self.simulator
        sim.call("set_rate", trades_per_symbol)
        before = sim.call("status")["generated"]
        time.sleep(seconds)
        after = sim.call("status")["generated"]
        sim.call("set_rate", 0.0)
        wanted = stream_keys(self.config.symbols, self.config.streams)
        delivered = sum(after.get(key, 0) - before.get(key, 0) for key in wanted)
        trades = sum(after.get(key, 0) - before.get(key, 0)
                     for key in (stream_key(s, "trade") for s in self.config.symbols))
        if trades > 0 and delivered > 0:
            self.messages_per_trade = delivered / trades
        return self.messages_per_trade

    def set_message_rate(self, messages_per_s: float) -> None:
        per_symbol = messages_per_s / self.messages_per_trade / len(self.config.symbols)
        self.simulator.call("set_rate", per_symbol)

    def note_load(self, phase: str) -> None:
        self.loads.append({"phase": phase, "time": round(time.time(), 1), "load_average": load_average()})

    # ---- streamer ----------------------------------------------------------------------------------
    def streamer_env(self, prefix: str, instance: str, extra: dict[str, str]) -> dict[str, str]:
        """Its environment but for K2_METRICS_PORT, which StreamerRun.start sets to the port it gets."""
        config = self.config
        env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
        env.update({
            "K2_BINANCE_WS_URL": self.simulator.ws_base_url + "/stream",
            "K2_SSL_CA_FILE": self.simulator.ca_file,
            "K2_BINANCE_SYMBOLS": ",".join(config.symbols),
            "K2_BINANCE_STREAMS": ",".join(config.streams),
            "K2_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "K2_KAFKA_TOPIC_PREFIX": prefix,
            # The in-process registry: the cache is warmed at start-up, so no registry call per message.
            "K2_SCHEMA_REGISTRY_URL": "mock://k2-bench",
            "K2_INSTANCE": instance,
            "K2_LOG_LEVEL": "INFO",
            "K2_HANDOVER_TOKEN": self.handover_token,
        })
        env.update(extra)
        return env

    def new_prefix(self, phase: str) -> str:
        self.runs += 1
        prefix = f"bench.{phase}.{uuid.uuid4().hex[:6]}"
        create_topics(self.bootstrap, prefix, self.config.streams)
        return prefix

    def streamer(self, name: str, prefix: str, instance: str = "blue", source: Path | None = None, /,
                 **extra: str) -> StreamerRun:
        """A streamer of this checkout (or config.streamer_source), or of the `streamer` package in `source`."""
        cpu = self.config.client_cpu if self.config.pin else None
        env = self.streamer_env(prefix, instance, extra)
        run = StreamerRun(name, env, self.log_dir / f"{name}.log", cpu=cpu)
        source = source or self.config.streamer_source
        if source is not None:
            run.cwd = Path(source)
            env["PYTHONPATH"] = str(run.cwd)
        return run

    @contextmanager
    def running(self, name: str, prefix: str, instance: str = "blue", source: Path | None = None, /,
                **extra: str) -> Iterator[StreamerRun]:
        run = self.streamer(name, prefix, instance, source, **extra)
        try:
            yield run.start()
        finally:
            code = run.stop()
            if code not in (0, None):
                log.warning("streamer %s exited with %s; log %s", name, code, run.log_path)

    def records(self, prefix: str) -> list[Rec]:
        return read_records(self.bootstrap, prefix, self.config.streams)


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


# ---- 1 + 2: floor and streamer end to end at full speed --------------------------------------------------


def throughput(bench: Bench) -> dict[str, Any]:
    """Per repeat: the floor client, then the streamer, at the same full-speed offer (ratios pair up); with
    config.baseline_source also the baseline streamer in the same repeat."""
    config, sim = bench.config, bench.simulator
    cpu = config.client_cpu if config.pin else None
    url = sim.ws_base_url + "/stream?streams=" + "/".join(stream_keys(config.symbols, config.streams))
    floors: list[dict[str, Any]] = []
    e2es: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    for repeat in range(config.repeats):
        bench.note_load(f"throughput {repeat + 1}")
        sim.call("set_rate", config.full_speed_trades_per_symbol)
        sim_cpu: dict[str, tuple[float, float]] = {}

        def mark(edge: str, into: dict[str, tuple[float, float]] = sim_cpu) -> None:
            into[edge] = (sim.call("cpu_seconds"), time.monotonic())

        # A record of the bench report: cpu_us_per_msg is None when no message came.
        floor: dict[str, Any] = run_floor_client(url, sim.ca_file, cpu, config.warmup_s, config.window_s, mark)
        floor["msg_per_s"] = floor["messages"] / floor["elapsed_s"]
        floor["cpu_us_per_msg"] = floor["cpu_s"] / floor["messages"] * 1e6 if floor["messages"] else None
        floor["cpu_share"] = floor["cpu_s"] / floor["elapsed_s"]
        (s0, w0), (s1, w1) = sim_cpu["start"], sim_cpu["end"]
        floor["simulator_cpu_share"] = (s1 - s0) / (w1 - w0)
        floors.append(floor)
        sim.call("set_rate", 0.0)
        # With a baseline, the two streamers take turns going first, so neither always runs right after the floor.
        baseline_first = config.baseline_source is not None and repeat % 2 == 1
        base = _full_speed(bench, f"baseline-{repeat + 1}", config.baseline_source) if baseline_first else None
        e2e = _full_speed(bench, f"e2e-{repeat + 1}")
        if config.baseline_source is not None and base is None:
            base = _full_speed(bench, f"baseline-{repeat + 1}", config.baseline_source)
        e2e["ratio_cpu_to_floor"] = stats.ratio(e2e["cpu_us_per_msg"], floor["cpu_us_per_msg"])
        e2e["ratio_rate_to_floor"] = stats.ratio(e2e["msg_per_s"], floor["msg_per_s"])
        e2e["one_core_capacity_msg_per_s"] = 1e6 / e2e["cpu_us_per_msg"] if e2e["cpu_us_per_msg"] else None
        e2es.append(e2e)
        if base is not None:
            base["ratio_cpu_to_floor"] = stats.ratio(base["cpu_us_per_msg"], floor["cpu_us_per_msg"])
            base["ratio_cpu_to_this"] = stats.ratio(base["cpu_us_per_msg"], e2e["cpu_us_per_msg"])
            baselines.append(base)
            log.info("throughput %d: baseline %.0f msg/s %.1f us/msg", repeat + 1, base["msg_per_s"],
                     base["cpu_us_per_msg"] or 0)
        log.info("throughput %d: floor %.0f msg/s %.1f us/msg; streamer %.0f msg/s %.1f us/msg", repeat + 1,
                 floor["msg_per_s"], floor["cpu_us_per_msg"] or 0, e2e["msg_per_s"], e2e["cpu_us_per_msg"] or 0)
    result: dict[str, Any] = {"floor_runs": floors, "e2e_runs": e2es}
    if baselines:
        result["baseline_runs"] = baselines
    return result


def _full_speed(bench: Bench, name: str, source: Path | None = None) -> dict[str, Any]:
    """One streamer (this checkout's, or the package in `source`) at the simulator's full speed: its window's
    rate, CPU per message (all threads and per thread group) and RSS."""
    config, sim = bench.config, bench.simulator
    prefix = bench.new_prefix("e2e")
    with bench.running(name, prefix, "blue", source) as run:
        sim.call("set_rate", config.full_speed_trades_per_symbol)
        time.sleep(config.warmup_s)
        m0, c0, th0, s0, t0 = run.metrics(), run.cpu_seconds(), run.thread_cpu(), sim.call("cpu_seconds"), \
            time.monotonic()
        time.sleep(config.window_s)
        m1, c1, th1, s1, t1 = run.metrics(), run.cpu_seconds(), run.thread_cpu(), sim.call("cpu_seconds"), \
            time.monotonic()
        rss = run.process.memory_info().rss
        sim.call("set_rate", 0.0)
    elapsed = t1 - t0
    received = m1["binance_messages_received_total"] - m0["binance_messages_received_total"]
    acked = m1["kafka_messages_produced_total"] - m0["kafka_messages_produced_total"]
    cpu_s = c1 - c0
    e2e: dict[str, Any] = {
        "received": received,
        "acked": acked,
        "elapsed_s": elapsed,
        "msg_per_s": acked / elapsed,
        "received_per_s": received / elapsed,
        "cpu_s": cpu_s,
        "cpu_us_per_msg": cpu_s / received * 1e6 if received else None,
        "cpu_share": cpu_s / elapsed,
        "simulator_cpu_share": (s1 - s0) / elapsed,
        "rss_mb": rss / MB,
        "backpressure": m1.get("streamer_backpressure_active", 0.0),
        "produce_errors": m1.get("kafka_produce_errors_total", 0.0),
        "thread_us_per_msg": {
            k: (th1[k] - th0[k]) / received * 1e6 if received else None for k in th1
        },
    }
    return e2e


# The streamer under cProfile with the main thread's CPU clock as the profiler's timer (wall time would
# charge whatever Python function was running with the time the Kafka threads took the shared core).
PROFILE_RUNNER = """\
import cProfile, runpy, sys, time
out = sys.argv.pop(1)  # the streamer refuses arguments
profiler = cProfile.Profile(time.thread_time)
profiler.enable()
try:
    runpy.run_module("streamer", run_name="__main__", alter_sys=True)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def profile(bench: Bench, out_path: Path, top: int = 30) -> dict[str, Any]:
    """cProfile of the streamer's event-loop thread (its CPU clock) over one full-speed window, each
    function's own time attributed to a stage (k2_ops.bench.stages). The Kafka poll thread and librdkafka's
    threads are not in it; the per-thread CPU split of the throughput figure covers them."""
    import pstats

    config, sim = bench.config, bench.simulator
    prefix = bench.new_prefix("profile")
    run = bench.streamer("profile", prefix)
    run.command = [run.command[0], "-c", PROFILE_RUNNER, str(out_path)]
    run.start()
    try:
        sim.call("set_rate", config.full_speed_trades_per_symbol)
        time.sleep(config.warmup_s + config.window_s)
        sim.call("set_rate", 0.0)
    finally:
        run.stop()
    poll(out_path.exists, 30, f"profile written to {out_path}")
    stream = _Text()
    stats_obj = pstats.Stats(str(out_path), stream=stream)  # type: ignore[arg-type]
    stats_obj.sort_stats("tottime").print_stats(top)
    totals = stages.attribute(stats_obj.stats)  # type: ignore[attr-defined]
    return {"path": str(out_path), "top_by_tottime": stream.text, "clock": "thread_time",
            "stage_seconds": {stage.name: seconds for stage, seconds in totals.items()}}


class _Text:
    def __init__(self) -> None:
        self.text = ""

    def write(self, chunk: str) -> int:
        self.text += chunk
        return len(chunk)


# ---- 3: latency at fixed rates ------------------------------------------------------------------------


def latency(bench: Bench, rate: float, linger_s: float | None = None) -> dict[str, Any]:
    """Exchange event time (E, ms) -> Kafka LogAppendTime (ms), per window of `latency_window_s`.
    `linger_s` sets K2_KAFKA_LINGER_SECONDS (None: the streamer's default)."""
    config = bench.config
    name = f"latency-{rate:g}" + ("" if linger_s is None else f"-linger{linger_s * 1000:g}ms")
    bench.note_load(name)
    prefix = bench.new_prefix(f"lat{int(rate)}")
    windows: list[tuple[float, float]] = []
    cpu: list[float] = []
    extra = {} if linger_s is None else {"K2_KAFKA_LINGER_SECONDS": f"{linger_s}"}
    with bench.running(name, prefix, **extra) as run:
        bench.set_message_rate(rate)
        time.sleep(config.warmup_s)
        for _ in range(config.repeats):
            c0, w0 = run.cpu_seconds(), time.time()
            time.sleep(config.latency_window_s)
            c1, w1 = run.cpu_seconds(), time.time()
            windows.append((w0, w1))
            cpu.append((c1 - c0) / (w1 - w0))
        bench.simulator.call("set_rate", 0.0)
    records = bench.records(prefix)
    return {"target_rate": rate, "linger_s": linger_s,
            "windows": [_latency_window(records, w0, w1) | {"cpu_share": share}
                                             for (w0, w1), share in zip(windows, cpu, strict=True)]}


def _latency_window(records: list[Rec], w0: float, w1: float) -> dict[str, Any]:
    lo, hi = w0 * 1000, w1 * 1000
    inside = [r for r in records if r.event_time is not None and lo <= r.event_time < hi]
    in_window = sum(1 for r in records if lo <= r.ingestion_time < hi)
    total = [r.append_time - r.event_time for r in inside]  # type: ignore[operator]
    receive = [r.ingestion_time - r.event_time for r in inside]  # type: ignore[operator]
    kafka = [r.append_time - r.ingestion_time for r in inside]
    return {
        "msg_per_s": in_window / (w1 - w0),
        "samples": len(inside),
        "event_to_append_ms": stats.distribution(total),
        "event_to_receive_ms": stats.distribution(receive),
        "receive_to_append_ms": stats.distribution(kafka),
    }


# ---- 4: memory ----------------------------------------------------------------------------------------


def memory(bench: Bench) -> dict[str, Any]:
    config = bench.config
    bench.note_load("memory")
    prefix = bench.new_prefix("memory")
    samples: list[tuple[float, float]] = []
    with bench.running("memory", prefix) as run:
        bench.set_message_rate(config.memory_rate)
        process = run.process
        m0, c0 = run.metrics(), run.cpu_seconds()
        start = time.monotonic()
        next_at = start
        while next_at - start <= config.memory_s:
            _sleep_until(next_at)
            samples.append((time.monotonic() - start, process.memory_info().rss / MB))
            next_at += config.memory_sample_s
        m1, c1 = run.metrics(), run.cpu_seconds()
        elapsed = time.monotonic() - start
        bench.simulator.call("set_rate", 0.0)
    steady = [(t, rss) for t, rss in samples if t >= config.memory_warmup_s]
    received = m1["binance_messages_received_total"] - m0["binance_messages_received_total"]
    parts = [steady[i * len(steady) // config.repeats:(i + 1) * len(steady) // config.repeats]
             for i in range(config.repeats)]
    thinned = steady if len(steady) <= 300 else steady[:: max(1, len(steady) // 300)]
    slope_per_s, _ = theil_sen(thinned)
    return {
        "rate_msg_per_s": received / elapsed,
        "seconds": elapsed,
        "warmup_s": config.memory_warmup_s,
        "samples": len(samples),
        "rss_mb_first": samples[0][1] if samples else None,
        "window_medians_mb": [stats.summary([rss for _, rss in part])["median"] for part in parts if part],
        "steady_rss_mb": stats.summary([rss for _, rss in steady])["median"],
        "steady_rss_max_mb": max((rss for _, rss in steady), default=None),
        "slope_mb_per_hour_theil_sen": slope_per_s * 3600,
        "slope_mb_per_hour_least_squares": stats.least_squares_slope(steady) * 3600,
        "cpu_share": (c1 - c0) / elapsed,
        "cpu_us_per_msg": (c1 - c0) / received * 1e6 if received else None,
        "series_mb": [[round(t, 2), round(rss, 2)] for t, rss in samples],
    }


def market_symbols(count: int) -> tuple[str, ...]:
    """Synthetic USDT symbols for the whole-market run: s0000usdt, s0001usdt, ..."""
    return tuple(f"s{i:04d}usdt" for i in range(count))


def market_streamer_env(config: BenchConfig, simulator: SimulatorProxy, streams: tuple[str, ...]) -> dict[str, str]:
    """A streamer of every USDT symbol `simulator` lists (its WebSocket and REST), `streams` of each, over
    connections of config.market_streams_per_connection."""
    return {
        "K2_BINANCE_WS_URL": simulator.ws_base_url + "/stream",
        "K2_SSL_CA_FILE": simulator.ca_file,
        "K2_BINANCE_REST_URL": simulator.ws_base_url.replace("wss://", "https://"),
        "K2_BINANCE_SYMBOLS": "quote:USDT",
        "K2_BINANCE_STREAMS": ",".join(streams),
        "K2_STREAMS_PER_CONNECTION": str(config.market_streams_per_connection),
        "K2_HEALTH_CHECK_TIMEOUT_SECONDS": "120",
    }


def whole_market(bench: Bench, simulator: SimulatorProxy) -> dict[str, Any]:
    """A streamer with K2_BINANCE_SYMBOLS=quote:USDT against `simulator` (listing config.market_symbols
    symbols): its pool's open time, then CPU per message and steady RSS at the memory run's total rate."""
    config = bench.config
    bench.note_load("whole_market")
    symbols = market_symbols(config.market_symbols)
    streams = config.market_streams
    # Messages per trade of these streams, as Bench.calibrate does for the 8-stream run.
    simulator.call("set_rate", 5.0)
    before = simulator.call("status")["generated"]
    time.sleep(2.0)
    after = simulator.call("status")["generated"]
    simulator.call("set_rate", 0.0)
    delivered = sum(after.get(k, 0) - before.get(k, 0) for k in stream_keys(symbols, streams))
    trades = sum(after.get(k, 0) - before.get(k, 0) for k in (stream_key(s, "trade") for s in symbols))
    per_trade = delivered / trades if trades and delivered else 2.0
    prefix = bench.new_prefix("market")
    extra = market_streamer_env(config, simulator, streams)
    samples: list[tuple[float, float]] = []
    with bench.running("whole_market", prefix, **extra) as run:
        simulator.call("set_rate", config.memory_rate / per_trade / len(symbols))
        opened = log_times(run.log_text(), "pool open:")
        open_line = next((line for line in run.log_text().splitlines() if "pool open:" in line), "")
        open_s = float(open_line.rsplit(" in ", 1)[1].split()[0]) if " in " in open_line else None
        connections = run.metrics().get("binance_connection_slots")
        process = run.process
        start = time.monotonic()
        _sleep_until(start + config.market_warmup_s)
        m0, c0, t0 = run.metrics(), run.cpu_seconds(), time.monotonic()
        next_at = t0
        while next_at - start <= config.market_s:
            _sleep_until(next_at)
            samples.append((time.monotonic() - start, process.memory_info().rss / MB))
            next_at += config.memory_sample_s
        m1, c1, t1 = run.metrics(), run.cpu_seconds(), time.monotonic()
        simulator.call("set_rate", 0.0)
    received = m1["binance_messages_received_total"] - m0["binance_messages_received_total"]
    return {
        "symbols": len(symbols),
        "streams": len(symbols) * len(streams),
        "connections": connections,
        "messages_per_trade": per_trade,
        "pool_open_s": open_s,
        "pool_open_logged": bool(opened),
        "rate_msg_per_s": received / (t1 - t0),
        "seconds": t1 - t0,
        "cpu_us_per_msg": (c1 - c0) / received * 1e6 if received else None,
        "steady_rss_mb": stats.summary([rss for _, rss in samples])["median"],
        "steady_rss_max_mb": max((rss for _, rss in samples), default=None),
        "gaps": m1.get("binance_sequence_gaps_total", 0.0),
        "missing": m1.get("binance_missing_messages_total", 0.0),
        "reconnects": m1.get("binance_reconnects_total", 0.0),
    }


# ---- 5: resilience ------------------------------------------------------------------------------------


def _accounting(bench: Bench, records: list[Rec], instances: set[str] | None = None) -> dict[str, Any]:
    """Lost / duplicated ids per stream key between the first and last id Kafka holds, against the
    simulator's ground truth."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for r in records:
        if instances is None or r.instance in instances:
            by_key.setdefault((r.symbol, r.stream), []).append(r.ident)
    keys: dict[str, Any] = {}
    for (symbol, stream), seen in sorted(by_key.items()):
        lo, hi = min(seen), max(seen)
        truth = [i for i in bench.simulator.call("generated_ids", symbol, stream) if lo <= i <= hi]
        keys[f"{symbol}@{stream}"] = stats.id_accounting(truth, seen)
    return {
        "keys": keys,
        "lost": sum(k["lost"] for k in keys.values()),
        "duplicated": sum(k["duplicated"] for k in keys.values()),
        "records": sum(k["seen"] for k in keys.values()),
    }


def rotations(bench: Bench) -> dict[str, Any]:
    """Scheduled make-before-break rotations every `rotation_lifetime_s`: nothing may be lost or doubled."""
    config = bench.config
    bench.note_load("rotations")
    prefix = bench.new_prefix("rotations")
    bench.set_message_rate(config.resilience_rate)
    began = time.monotonic()
    with bench.running("rotations", prefix, K2_CONNECTION_MAX_LIFETIME_SECONDS=f"{config.rotation_lifetime_s}") as run:
        poll(lambda: run.metrics()["binance_connection_rotations_total"] >= config.rotations,
             config.rotations * config.rotation_lifetime_s * 4 + 60, f"{config.rotations} rotations", 0.1)
        final = run.metrics()
    bench.simulator.call("set_rate", 0.0)
    summary = _streamer_summary(run)
    records = bench.records(prefix)
    result = _accounting(bench, records)
    result.update({
        "rotations": int(final["binance_connection_rotations_total"]),
        "seconds": time.monotonic() - began,
        "lifetime_s": config.rotation_lifetime_s,
        "streamer_gaps": summary.get("gaps"),
        "streamer_missing": summary.get("missing"),
        "streamer_duplicates_dropped": summary.get("duplicates_dropped"),
        "reconnects": summary.get("reconnects"),
    })
    return result


def _streamer_summary(run: StreamerRun) -> dict[str, Any]:
    return summary_from_log(run.log_text()) or {}


def log_times(text: str, needle: str) -> list[float]:
    """Unix times of the streamer log lines containing `needle` (its format starts with logging's asctime,
    local time with milliseconds: "2026-01-31 12:00:00,123 WARNING ...")."""
    out = []
    for line in text.splitlines():
        if needle in line and len(line) > 23 and line[19] == ",":
            try:
                whole = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                out.append(whole + int(line[20:23]) / 1000)
            except ValueError:
                continue
    return out


def _new_connection(bench: Bench, known: set[int], timeout_s: float) -> Any:
    def opened() -> Any:
        fresh = [c for c in bench.simulator.call("connections") if c.id not in known]
        return fresh[0] if fresh else None

    return poll(opened, timeout_s, "a new connection from the streamer", 0.01)


def _first_delivery(bench: Bench, records: list[Rec], connection_id: int) -> float | None:
    """Ingestion time (s) of the first record the streamer received on one connection (trade streams)."""
    firsts = []
    by_id = {(r.symbol, r.stream, r.ident): r for r in records}
    for symbol in bench.config.symbols:
        for stream in bench.config.streams:
            sent = bench.simulator.call("sent_ids", symbol, stream, connection_id)
            for ident in sent[:5]:
                record = by_id.get((symbol, stream, ident))
                if record is not None:
                    firsts.append(record.ingestion_time / 1000)
                    break
    return min(firsts) if firsts else None


def faults(bench: Bench) -> dict[str, Any]:
    """Stalls (data stops, socket stays open) and abrupt drops (TCP RST), `repeats` of each."""
    config, sim = bench.config, bench.simulator
    bench.note_load("faults")
    prefix = bench.new_prefix("faults")
    bench.set_message_rate(config.resilience_rate)
    stalls: list[dict[str, Any]] = []
    drops: list[dict[str, Any]] = []
    wait_s = config.health_timeout_s * 3 + 30
    with bench.running("faults", prefix, K2_HEALTH_CHECK_TIMEOUT_SECONDS=f"{config.health_timeout_s}") as run:
        for _ in range(config.repeats):
            time.sleep(config.settle_s)
            known = {c.id for c in sim.call("connections")}
            base = run.metrics().get("binance_reconnects_total{reason=health_timeout}", 0.0)
            t0 = time.time()
            sim.call("stall", None)

            def stall_detected(b: float = base) -> bool:
                return run.metrics().get("binance_reconnects_total{reason=health_timeout}", 0.0) > b

            poll(stall_detected, wait_s, "stall detected (health timeout)", 0.01)
            t_detect = time.time()
            new = _new_connection(bench, known, wait_s)

            def stall_replaced(n: Any = new) -> Any:
                return sim.call("sent_ids", config.symbols[0], config.streams[0], n.id)

            poll(stall_replaced, wait_s, "data on the replacement connection", 0.01)
            stalls.append({"t0": t0, "t_detect": t_detect, "connection": new.id, "opened_at": new.opened_at})
        for _ in range(config.repeats):
            time.sleep(config.settle_s)
            known = {c.id for c in sim.call("connections")}
            t0 = time.time()
            sim.call("drop_connections")
            new = _new_connection(bench, known, wait_s)

            def drop_replaced(n: Any = new) -> Any:
                return sim.call("sent_ids", config.symbols[0], config.streams[0], n.id)

            poll(drop_replaced, wait_s, "data on the replacement connection", 0.01)
            drops.append({"t0": t0, "connection": new.id, "opened_at": new.opened_at})
        time.sleep(config.settle_s)
    sim.call("set_rate", 0.0)
    records = bench.records(prefix)
    # The streamer logs the health timeout the moment its watchdog fires (ms resolution); the metrics poll
    # that noticed it (t_detect above) is up to a poll interval plus a scrape later.
    fired = log_times(run.log_text(), "(health timeout)")
    for item in stalls:
        first = _first_delivery(bench, records, item["connection"])
        logged = [t for t in fired if t >= item["t0"]]
        if logged:
            item["t_detect_polled"] = item["t_detect"]
            item["t_detect"] = logged[0]
        item["detect_s"] = item["t_detect"] - item["t0"]
        item["replaced_s"] = item["opened_at"] - item["t0"]
        item["data_after_detect_s"] = None if first is None else first - item["t_detect"]
        item["stall_to_data_s"] = None if first is None else first - item["t0"]
    for item in drops:
        first = _first_delivery(bench, records, item["connection"])
        item["reconnected_s"] = item["opened_at"] - item["t0"]
        item["data_flowing_s"] = None if first is None else first - item["t0"]
    return {"health_timeout_s": config.health_timeout_s, "stalls": stalls, "drops": drops}


# ---- 6: nothing missed --------------------------------------------------------------------------------

REPAIRED_KINDS = tuple(name for name, kind in KINDS.items() if kind.history is not None)


def repairs(bench: Bench) -> dict[str, Any]:
    """Silent holes: `repair_gaps` times, the simulator skips `repair_skip` messages of one stream without a
    disconnect (trade and aggTrade streams in turn, `settle_s` apart). Each must be repaired from REST, nothing
    lost or doubled against the ground truth; latency per hole is measured from Kafka (see repair_latencies)."""
    config, sim = bench.config, bench.simulator
    bench.note_load("repairs")
    prefix = bench.new_prefix("repairs")
    bench.set_message_rate(config.resilience_rate)
    targets = [stream_key(s, kind) for kind in REPAIRED_KINDS if kind in config.streams for s in config.symbols]
    expected = config.repair_gaps * config.repair_skip
    began = time.monotonic()
    with bench.running("repairs", prefix) as run:
        for i in range(config.repair_gaps):
            time.sleep(config.settle_s)
            sim.call("skip_messages", [targets[i % len(targets)]], config.repair_skip)

        def repaired() -> bool:
            m = run.metrics()
            return (m.get("binance_gap_repaired_messages_total", 0.0) >= expected
                    and m.get("binance_gap_repair_pending_messages", 0.0) == 0)

        poll(repaired, 120, f"{expected} ids repaired", 0.1)
        time.sleep(config.settle_s)
        final = run.metrics()
    sim.call("set_rate", 0.0)
    records = [r for r in bench.records(prefix) if r.stream in REPAIRED_KINDS]
    latencies = repair_latencies(records)
    result = _accounting(bench, records)
    result.update({
        "seconds": time.monotonic() - began,
        "holes_made": config.repair_gaps,
        "holes_repaired": len(latencies),
        "repaired_records": sum(1 for r in records if r.repaired),
        "latency_s": stats.distribution(latencies),
        "streamer_repaired": final.get("binance_gap_repaired_messages_total", 0.0),
        "streamer_unrepaired": final.get("binance_gap_unrepaired_messages_total", 0.0),
        "rest_requests": final.get("binance_rest_requests_total", 0.0),
    })
    return result


def repair_latencies(records: list[Rec]) -> list[float]:
    """Seconds per hole of repaired records (k2-source: rest) between live ones of a stream: from the streamer
    receiving the first live record after the hole (its ingestion_time: the moment it saw the jump) to the last
    repaired id of the hole appended to Kafka (LogAppendTime, the same clock). A hole with no live record after
    it is left out (its jump was never seen)."""
    by_key: dict[tuple[str, str], list[Rec]] = {}
    for r in records:
        by_key.setdefault((r.symbol, r.stream), []).append(r)
    latencies: list[float] = []
    for recs in by_key.values():
        hole_appended: int | None = None  # the latest append time of the open hole's repaired records
        for r in sorted(recs, key=lambda r: (r.ident, r.repaired)):
            if r.repaired:
                hole_appended = max(hole_appended or 0, r.append_time)
            elif hole_appended is not None:
                latencies.append((hole_appended - r.ingestion_time) / 1000)
                hole_appended = None
    return latencies


def book_sync(bench: Bench, simulator: SimulatorProxy) -> dict[str, Any]:
    """A streamer of <symbol>@depth@100ms for each of `simulator`'s config.book_symbols symbols
    (K2_BINANCE_SYMBOLS=quote:USDT), every REST and depth setting at its default: seconds from its start until
    every book is in sync from its own snapshot, the snapshots taken and the highest REST weight it saw used."""
    config = bench.config
    bench.note_load("book_sync")
    symbols = market_symbols(config.book_symbols)
    prefix = bench.new_prefix("books")
    extra = market_streamer_env(config, simulator, ("depth",))
    # A book is followed from its first diff: every symbol trades, at the memory run's total rate.
    simulator.call("set_rate", config.memory_rate / len(symbols))
    weights: list[float] = []

    def all_in_sync(run: StreamerRun) -> bool:
        m = run.metrics()
        weights.append(m.get("binance_rest_weight_used", 0.0))
        return m.get("binance_depth_books_in_sync", 0.0) >= len(symbols)

    began = time.monotonic()
    with bench.running("book_sync", prefix, **extra) as run:
        # At Binance's defaults a snapshot of 100 levels weighs 5 and the budget is 3,000 a minute: 10 a second.
        poll(lambda: all_in_sync(run), len(symbols) / 10 * 3 + 120, f"{len(symbols)} books in sync", 0.25)
        in_sync_s = time.monotonic() - began
        final = run.metrics()
    simulator.call("set_rate", 0.0)
    return {
        "symbols": len(symbols),
        "in_sync_s": in_sync_s,
        "snapshots": final.get("binance_depth_snapshots_total{outcome=produced}", 0.0),
        "snapshot_attempts": final.get("binance_depth_snapshots_total", 0.0),
        "resyncs": final.get("binance_depth_resyncs_total", 0.0),
        "max_weight_used": max(weights, default=None),
        "rest_429": final.get("binance_rest_requests_total{code=429}", 0.0),
    }


def handover(bench: Bench) -> dict[str, Any]:
    """Blue-green handovers back and forth: the gap between the last record the old instance appended and
    the first the new one appended, and loss / duplicates across all of them."""
    from k2_ops.deploy.handover import enter_standby, release

    config = bench.config
    bench.note_load("handover")
    prefix = bench.new_prefix("handover")
    bench.set_message_rate(config.resilience_rate)
    events: list[dict[str, Any]] = []
    with bench.running("handover-blue", prefix, "blue") as blue, \
            bench.running("handover-green", prefix, "green", K2_START_MODE="standby") as green:
        active, standby = (blue, "blue"), (green, "green")
        for _ in range(config.repeats):
            time.sleep(config.settle_s)
            t0 = time.time()
            handed = enter_standby(active[0].base_url, 30.0, bench.handover_token)
            t1 = time.time()
            release(standby[0].base_url, handed.positions, bench.handover_token, repairs=handed.repairs)
            t2 = time.time()
            events.append({"from": active[1], "to": standby[1], "t0": t0, "standby_s": t1 - t0,
                           "release_s": t2 - t1})
            active, standby = standby, active
        time.sleep(config.settle_s)
    bench.simulator.call("set_rate", 0.0)
    records = bench.records(prefix)
    for i, event in enumerate(events):
        lo = event["t0"] * 1000
        hi = events[i + 1]["t0"] * 1000 if i + 1 < len(events) else float("inf")
        old = [r.append_time for r in records if r.instance == event["from"] and r.append_time < hi]
        new = [r.append_time for r in records if r.instance == event["to"] and lo <= r.append_time < hi]
        event["gap_ms"] = (min(new) - max(old)) if old and new else None
        # For scale: the largest gap between consecutive appends of the old instance in normal flow (the
        # simulator sends in 10 ms ticks, so appends come in bursts even without a handover).
        before = sorted(t for t in old if t >= lo - config.settle_s * 1000)
        event["normal_max_gap_ms"] = max((b - a for a, b in pairwise(before)), default=None)
    result = _accounting(bench, records)
    result["handovers"] = events
    return result
