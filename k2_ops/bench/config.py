"""The benchmark's one settings object: every duration and rate is a parameter (seconds, floats).

`BenchConfig()` is the full run (under 10 minutes on the 2-core machine); `quick()` is CI-sized (about a
minute): the same figures from tiny windows, useful to check the harness, never for numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from k2_ops.paths import REPO_ROOT, run_dir

ALL_STREAMS = ("trade", "aggTrade", "bookTicker", "depth")


class BenchConfigError(ValueError):
    """A benchmark setting is out of range; the message names it."""


@dataclass(frozen=True)
class BenchConfig:
    repeats: int = 3
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt")
    # Every kind, so every message the simulator generates is delivered (no generation wasted).
    streams: tuple[str, ...] = ALL_STREAMS
    # Full-speed figures: offered trades per second per symbol, far beyond what anything here sustains
    # (the simulator then delivers as fast as it can), a warm-up and a measured window per repeat.
    full_speed_trades_per_symbol: float = 50_000.0
    warmup_s: float = 2.0
    window_s: float = 6.0
    # Latency at fixed total message rates; one streamer per rate, `repeats` windows of latency_window_s.
    latency_rates: tuple[float, ...] = (1_000.0, 10_000.0)
    latency_window_s: float = 6.0
    # Extra latency runs per rate with K2_KAFKA_LINGER_SECONDS set to each of these (the default run uses the
    # streamer's own default, 2 ms): the producer's batching delay is most of the latency at low rates.
    latency_lingers_s: tuple[float, ...] = (0.0,)
    # Memory: steady RSS at memory_rate over memory_s, sampled every memory_sample_s after memory_warmup_s.
    memory_rate: float = 1_000.0
    memory_s: float = 180.0
    memory_warmup_s: float = 20.0
    memory_sample_s: float = 1.0
    # Whole market (reported, not asserted): a pool of connections for market_symbols x market_streams at the
    # memory run's total rate (memory_rate), so its CPU per message compares with the 8-stream figure; RSS
    # sampled over market_s after market_warmup_s; the pool's open time read from the streamer's start log.
    market_symbols: int = 2000
    market_streams: tuple[str, ...] = ("trade", "bookTicker")
    market_streams_per_connection: int = 200
    market_s: float = 90.0
    market_warmup_s: float = 20.0
    # Resilience: message rate, rotations counted for loss/duplicates, the connection lifetime that makes
    # them, the health timeout for stalls, and how many stalls, drops and handovers.
    resilience_rate: float = 1_000.0
    rotations: int = 20
    rotation_lifetime_s: float = 1.0
    health_timeout_s: float = 2.0
    settle_s: float = 1.0
    # Gap repair: repair_gaps silent holes of repair_skip messages each (the simulator skips them without a
    # disconnect), on trade and aggTrade streams in turn, settle_s apart, at resilience_rate; each is repaired
    # from the simulator's REST history, and its latency is measured from Kafka (see phases.repairs).
    repair_gaps: int = 20
    repair_skip: int = 5
    # Book sync: a streamer subscribing <symbol>@depth@100ms for book_symbols symbols (Binance lists about
    # 1,500 USDT pairs) with every REST and depth setting at its default; the time until every book is in sync.
    book_symbols: int = 1500
    # CPUs: the simulator on one core, the client under test (floor client or streamer, with its librdkafka
    # threads) on the other. Kafka shares the simulator's core (None = not pinned): unpinned, the JVM takes
    # 5-20 % of the streamer's core at full speed and the streamer's figures then measure the sharing.
    pin: bool = True
    simulator_cpu: int = 0
    client_cpu: int = 1
    kafka_cpu: int | None = 0
    simulator_uvloop: bool = False
    # Optional cProfile of the streamer's event-loop thread during one extra full-speed window.
    profile: bool = False
    # A directory holding another `streamer` package to benchmark instead of this checkout's (e.g. a git
    # worktree of an older commit, for before/after figures). None: this checkout.
    streamer_source: Path | None = None
    # Another `streamer` package measured at full speed in every throughput repeat, taking turns with this one
    # in going first (the same floor, the same minute): before/after figures of a change from one run. None: no
    # baseline.
    baseline_source: Path | None = None
    out_json: Path = field(default_factory=lambda: REPO_ROOT / "docs" / "performance.json")
    out_markdown: Path = field(default_factory=lambda: REPO_ROOT / "docs" / "performance.md")
    work_dir: Path = field(default_factory=lambda: run_dir() / "bench")
    quick: bool = False

    def __post_init__(self) -> None:
        validate(self)

    @property
    def messages_note(self) -> str:
        return f"{len(self.symbols)} symbols x {len(self.streams)} streams ({', '.join(self.streams)})"

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def with_changes(self, **changes: Any) -> BenchConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise BenchConfigError(f"unknown benchmark setting(s): {sorted(unknown)}")
        return replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def quick(**changes: Any) -> BenchConfig:
    """CI-sized: one repeat of tiny windows. Checks the harness end to end; its numbers mean little."""
    base = BenchConfig(
        repeats=1,
        warmup_s=1.0,
        window_s=1.5,
        latency_rates=(1_000.0,),
        latency_window_s=2.0,
        memory_s=6.0,
        memory_warmup_s=1.0,
        memory_sample_s=0.5,
        market_symbols=200,
        market_s=6.0,
        market_warmup_s=1.0,
        rotations=3,
        rotation_lifetime_s=0.75,
        repair_gaps=4,
        book_symbols=100,
        health_timeout_s=1.0,
        settle_s=0.5,
        quick=True,
    )
    return base.with_changes(**changes) if changes else base


def _positive(config: BenchConfig, name: str, minimum: float = 0.0, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= minimum if allow_zero else value > minimum)
    if not ok:
        raise BenchConfigError(f"bench setting {name}={value!r} must be a finite number > {minimum}")


def validate(config: BenchConfig) -> None:
    if not isinstance(config.repeats, int) or config.repeats < 1:
        raise BenchConfigError(f"bench setting repeats={config.repeats!r} must be an integer >= 1")
    if not isinstance(config.rotations, int) or config.rotations < 1:
        raise BenchConfigError(f"bench setting rotations={config.rotations!r} must be an integer >= 1")
    for name in ("full_speed_trades_per_symbol", "window_s", "latency_window_s", "memory_rate", "memory_s",
                 "memory_sample_s", "resilience_rate", "health_timeout_s", "settle_s"):
        _positive(config, name)
    for name, low, high in (("repair_gaps", 1, 1_000), ("repair_skip", 1, 1_000), ("book_symbols", 1, 10_000)):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise BenchConfigError(f"bench setting {name}={value!r} must be an integer {low} .. {high}")
    if not isinstance(config.market_symbols, int) or not 1 <= config.market_symbols <= 10_000:
        raise BenchConfigError(f"bench setting market_symbols={config.market_symbols!r} must be 1 .. 10000")
    per_connection = config.market_streams_per_connection
    if not isinstance(per_connection, int) or not 1 <= per_connection <= 1024:
        raise BenchConfigError(f"bench setting market_streams_per_connection={config.market_streams_per_connection!r} "
                               "must be 1 .. 1024")
    if config.market_warmup_s >= config.market_s:
        raise BenchConfigError(
            f"bench setting market_warmup_s={config.market_warmup_s} must be below market_s={config.market_s}")
    for name in ("warmup_s", "memory_warmup_s"):
        _positive(config, name, allow_zero=True)
    if config.memory_warmup_s >= config.memory_s:
        raise BenchConfigError(
            f"bench setting memory_warmup_s={config.memory_warmup_s} must be below memory_s={config.memory_s}")
    # The streamer's own lower bounds (K2_CONNECTION_MAX_LIFETIME_SECONDS, K2_HEALTH_CHECK_TIMEOUT_SECONDS).
    if not config.rotation_lifetime_s >= 0.5:
        raise BenchConfigError(f"bench setting rotation_lifetime_s={config.rotation_lifetime_s} must be >= 0.5")
    if not config.health_timeout_s >= 0.1:
        raise BenchConfigError(f"bench setting health_timeout_s={config.health_timeout_s} must be >= 0.1")
    if not config.latency_rates or any(not (r > 0 and math.isfinite(r)) for r in config.latency_rates):
        raise BenchConfigError(f"bench setting latency_rates={config.latency_rates!r} must be positive rates")
    if any(not (0 <= x <= 1) for x in config.latency_lingers_s):
        raise BenchConfigError(
            f"bench setting latency_lingers_s={config.latency_lingers_s!r}: each must be 0 .. 1 seconds")
    for name in ("streamer_source", "baseline_source"):
        source = getattr(config, name)
        if source is not None and not (Path(source) / "streamer").is_dir():
            raise BenchConfigError(f"bench setting {name}={source}: no streamer/ package there")
    if not config.symbols or not config.streams:
        raise BenchConfigError("bench settings symbols and streams must not be empty")
    unknown = [s for s in config.streams if s not in ALL_STREAMS]
    if unknown:
        raise BenchConfigError(f"bench setting streams: unknown {unknown}; allowed {ALL_STREAMS}")
    if not {"trade", "aggTrade"} & set(config.streams):
        raise BenchConfigError("bench setting streams must include trade or aggTrade (the gap repair phase's holes)")
    cpus = os.cpu_count() or 1
    for name in ("simulator_cpu", "client_cpu"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 0:
            raise BenchConfigError(f"bench setting {name}={value!r} must be a CPU number >= 0")
    if config.kafka_cpu is not None and (not isinstance(config.kafka_cpu, int) or config.kafka_cpu < 0):
        raise BenchConfigError(f"bench setting kafka_cpu={config.kafka_cpu!r} must be a CPU number or None")
    if config.pin:
        for name in ("simulator_cpu", "client_cpu", "kafka_cpu"):
            value = getattr(config, name)
            if value is not None and value >= cpus:
                raise BenchConfigError(
                    f"bench setting {name}={value} but this machine has CPUs 0..{cpus - 1}; use --no-pin")
