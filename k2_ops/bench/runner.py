"""Runs the whole benchmark: its own Kafka and simulator, every phase, then JSON and Markdown."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from k2_ops.bench import machine, phases, report
from k2_ops.bench.config import BenchConfig
from k2_ops.bench.procs import SimulatorProxy, pin_process
from k2_ops.paths import REPO_ROOT
from k2_ops.stack import KafkaService

log = logging.getLogger("k2_ops.bench")


def simulator_settings(config: BenchConfig) -> dict[str, Any]:
    return {
        "symbols": config.symbols,
        "rate_per_symbol": 0.0,
        "control_port": None,
        # Binance's keepalive and rules stay on (pings every 20 s, 5 incoming frames/s); only the slow-reader
        # bound is raised so a full-speed backlog is not cut off while it is being measured.
        "max_send_buffer_bytes": 512 * 1024 * 1024,
        "use_uvloop": config.simulator_uvloop,
    }


def market_simulator_settings(config: BenchConfig, symbols: int) -> dict[str, Any]:
    """A whole-market run's simulator: `symbols` synthetic USDT symbols (listed by exchangeInfo)."""
    return {**simulator_settings(config), "symbols": phases.market_symbols(symbols), "tick_interval_s": 0.05}


@contextmanager
def market_simulator(config: BenchConfig, symbols: int) -> Iterator[SimulatorProxy]:
    """A whole-market simulator of `symbols` symbols for one phase, stopped after it."""
    market = SimulatorProxy(market_simulator_settings(config, symbols),
                            config.simulator_cpu if config.pin else None).start()
    try:
        yield market
    finally:
        market.stop()


def whole_market_phase(config: BenchConfig, bench: phases.Bench) -> dict[str, Any]:
    log.info("phase 4b: whole market, %d symbols x %s over connections of %d at %g msg/s", config.market_symbols,
             ",".join(config.market_streams), config.market_streams_per_connection, config.memory_rate)
    with market_simulator(config, config.market_symbols) as market:
        result = phases.whole_market(bench, market)
    log.info("whole market: %s connections open in %s s, %.1f µs/msg, steady RSS %.1f MB", result["connections"],
             result["pool_open_s"], result["cpu_us_per_msg"] or 0.0, result["steady_rss_mb"] or 0.0)
    return result


def book_sync_phase(config: BenchConfig, bench: phases.Bench) -> dict[str, Any]:
    log.info("phase 6b: whole-market book sync, %d symbols x depth at the default REST settings", config.book_symbols)
    with market_simulator(config, config.book_symbols) as market:
        result = phases.book_sync(bench, market)
    log.info("book sync: %d books in sync %.1f s after the streamer started (%d snapshots, max weight used %s)",
             result["symbols"], result["in_sync_s"], result["snapshots"], result["max_weight_used"])
    return result


def run_market_only(config: BenchConfig) -> dict[str, Any]:
    """The whole-market figure and the 8-stream memory run it is compared with (same total rate); nothing
    else. Writes market.json in the run's log folder; the published table needs a full run."""
    work = config.work_dir
    log_dir = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}-market"
    log_dir.mkdir(parents=True, exist_ok=True)
    kafka_dir = Path(tempfile.mkdtemp(prefix="k2-bench-kafka-"))
    kafka = KafkaService(kafka_dir, name="kafka-bench")
    simulator: SimulatorProxy | None = None
    try:
        kafka.start()
        simulator = SimulatorProxy(simulator_settings(config), config.simulator_cpu if config.pin else None).start()
        bench = phases.Bench(config, kafka.bootstrap_servers, simulator, log_dir)
        bench.calibrate()
        raw = {"memory": phases.memory(bench)}
        simulator.stop()
        simulator = None
        raw["whole_market"] = whole_market_phase(config, bench)
    finally:
        if simulator is not None:
            simulator.stop()
        kafka.stop()
        shutil.rmtree(kafka_dir, ignore_errors=True)
    raw["whole_market"]["ratio_cpu_to_8_streams"] = (
        raw["whole_market"]["cpu_us_per_msg"] / raw["memory"]["cpu_us_per_msg"]
        if raw["whole_market"]["cpu_us_per_msg"] and raw["memory"]["cpu_us_per_msg"] else None)
    raw["memory"].pop("series_mb", None)
    report.write_json(log_dir / "market.json", raw)
    return raw


def pinning_note(config: BenchConfig) -> str:
    if not config.pin:
        return "none (--no-pin)"
    kafka = "not pinned" if config.kafka_cpu is None else f"CPU {config.kafka_cpu}"
    return (f"os.sched_setaffinity: simulator on CPU {config.simulator_cpu}, the client under test (floor client "
            f"or streamer with its librdkafka threads) on CPU {config.client_cpu}, Kafka {kafka}")


def run(config: BenchConfig) -> dict[str, Any]:
    started = time.time()
    description = machine.describe()
    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = work / f"run-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    kafka_dir = Path(tempfile.mkdtemp(prefix="k2-bench-kafka-"))
    kafka = KafkaService(kafka_dir, name="kafka-bench")
    simulator: SimulatorProxy | None = None
    raw: dict[str, Any] = {}
    try:
        log.info("starting Kafka (temporary, %s)", kafka_dir)
        kafka.start()
        if config.pin and config.kafka_cpu is not None and kafka._process is not None and kafka._process._proc:
            pin_process(kafka._process._proc.pid, config.kafka_cpu)
        simulator = SimulatorProxy(simulator_settings(config), config.simulator_cpu if config.pin else None).start()
        bench = phases.Bench(config, kafka.bootstrap_servers, simulator, log_dir)
        per_trade = bench.calibrate()
        log.info("simulator: %.2f messages per trade on the subscribed streams", per_trade)
        log.info("phase 1+2: floor and streamer at full speed (%d repeats)", config.repeats)
        raw["throughput"] = phases.throughput(bench)
        raw["latency"] = {}
        for key, rate, linger in report.latency_runs(config.latency_rates, config.latency_lingers_s):
            log.info("phase 3: latency at %g msg/s (linger %s)", rate, "default" if linger is None else linger)
            raw["latency"][key] = phases.latency(bench, rate, linger)
        log.info("phase 4: memory at %g msg/s for %.0f s", config.memory_rate, config.memory_s)
        raw["memory"] = phases.memory(bench)
        raw["whole_market"] = whole_market_phase(config, bench)
        log.info("phase 5: resilience (%d rotations, stalls, drops, handovers)", config.rotations)
        raw["rotations"] = phases.rotations(bench)
        raw["faults"] = phases.faults(bench)
        raw["handover"] = phases.handover(bench)
        log.info("phase 6: gap repair (%d silent holes of %d messages)", config.repair_gaps, config.repair_skip)
        raw["repairs"] = phases.repairs(bench)
        raw["book_sync"] = book_sync_phase(config, bench)
        if config.profile:
            log.info("profile: cProfile of the streamer's event loop at full speed")
            raw["profile"] = phases.profile(bench, log_dir / "streamer.prof")
        notes = {
            "pinning": pinning_note(config),
            "traffic": f"{config.messages_note}, {per_trade:.2f} messages per trade",
            "messages_per_trade": per_trade,
            "load": bench.loads,
            "logs": str(log_dir),
            "revision": machine.source_revision(config.streamer_source or REPO_ROOT),
        }
    finally:
        if simulator is not None:
            simulator.stop()
        kafka.stop()
        shutil.rmtree(kafka_dir, ignore_errors=True)
    description["load_average_at_end"] = machine.load_average()
    result = report.build_result(raw, description, config.as_dict(), notes, started)
    report.write_json(log_dir / "performance.json", result)
    report.write_json(config.out_json, result)
    report.update_markdown(config.out_markdown, report.render_table(result))
    return result
