"""`k2 bench`: the streamer benchmark on a temporary local stack (see k2_ops/bench/__init__.py).

    k2 bench                 # full run, under 10 minutes; writes docs/performance.json and the table in
                             # docs/performance.md (and a copy under .run/bench/run-*/)
    k2 bench --quick         # CI-sized windows: checks the harness, numbers mean little
    k2 bench --memory-seconds 600 --repeats 5 --profile
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from k2_ops.bench.config import BenchConfig, BenchConfigError, quick
from k2_ops.paths import run_dir
from k2_ops.stack.process import signals_interrupt


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the streamer on a temporary local stack",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="CI-sized run (about a minute; writes to <work dir>/quick/, not docs/)")
    parser.add_argument("--repeats", type=int, help="repeats per figure (default 3; --quick 1)")
    parser.add_argument("--window-seconds", type=float, help="full-speed measuring window per repeat")
    parser.add_argument("--warmup-seconds", type=float, help="warm-up before each measuring window")
    parser.add_argument("--latency-rates", help="comma list of msg/s, e.g. 1000,10000")
    parser.add_argument("--latency-window-seconds", type=float)
    parser.add_argument("--latency-lingers", help="comma list of extra K2_KAFKA_LINGER_SECONDS values for the "
                        "latency runs (default 0; 'none' for no extra runs)")
    parser.add_argument("--memory-seconds", type=float, help="length of the memory run")
    parser.add_argument("--memory-rate", type=float, help="msg/s during the memory run")
    parser.add_argument("--rotations", type=int, help="rotations counted for loss and duplicates")
    parser.add_argument("--rotation-lifetime-seconds", type=float)
    parser.add_argument("--health-timeout-seconds", type=float)
    parser.add_argument("--market-only", action="store_true",
                        help="only the whole-market figure (a pool for --market-symbols x trade,bookTicker) and the "
                        "8-stream memory run it is compared with; JSON beside the logs, docs untouched")
    parser.add_argument("--market-symbols", type=int, help="symbols of the whole-market run (default 2000)")
    parser.add_argument("--market-seconds", type=float, help="length of the whole-market run")
    parser.add_argument("--repair-gaps", type=int, help="silent holes made for the gap repair figures (default 20)")
    parser.add_argument("--book-symbols", type=int,
                        help="depth symbols of the whole-market book sync run (default 1500)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--kafka-cpu", help="pin Kafka to this CPU, or 'none' (default: the simulator's CPU 0)")
    parser.add_argument("--simulator-uvloop", action="store_true", help="run the simulator on uvloop")
    parser.add_argument("--profile", action="store_true", help="add a cProfile run of the streamer")
    parser.add_argument("--streamer-source", type=Path, metavar="DIR",
                        help="benchmark the streamer/ package in DIR (e.g. a worktree of an older commit)")
    parser.add_argument("--baseline-source", type=Path, metavar="DIR",
                        help="also measure the streamer/ package in DIR at full speed in every throughput repeat, "
                        "taking turns with this one (before/after in one run)")
    parser.add_argument("--json", type=Path, help="where the JSON goes (default docs/performance.json; --quick "
                        "or --streamer-source: <work dir>/quick|other-source/)")
    parser.add_argument("--markdown", type=Path, help="Markdown file to update (default docs/performance.md; "
                        "--quick or --streamer-source: beside the JSON)")
    parser.add_argument("--work-dir", type=Path, help="logs and per-run copies (default .run/bench)")
    parser.set_defaults(func=main)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    changes: dict[str, Any] = {}
    for attr, field_name in (("repeats", "repeats"), ("window_seconds", "window_s"), ("warmup_seconds", "warmup_s"),
                             ("latency_window_seconds", "latency_window_s"), ("memory_seconds", "memory_s"),
                             ("memory_rate", "memory_rate"), ("rotations", "rotations"),
                             ("rotation_lifetime_seconds", "rotation_lifetime_s"),
                             ("health_timeout_seconds", "health_timeout_s"),
                             ("market_symbols", "market_symbols"), ("market_seconds", "market_s"),
                             ("repair_gaps", "repair_gaps"), ("book_symbols", "book_symbols"),
                             ("streamer_source", "streamer_source"), ("baseline_source", "baseline_source"),
                             ("json", "out_json"),
                             ("markdown", "out_markdown"), ("work_dir", "work_dir")):
        value = getattr(args, attr)
        if value is not None:
            changes[field_name] = value
    if args.latency_rates:
        try:
            changes["latency_rates"] = tuple(float(x) for x in args.latency_rates.split(",") if x.strip())
        except ValueError:
            raise BenchConfigError(
                f"--latency-rates={args.latency_rates!r}: expected numbers like 1000,10000") from None
    if args.kafka_cpu is not None:
        text = args.kafka_cpu.strip().lower()
        if text != "none" and not text.isdigit():
            raise BenchConfigError(f"--kafka-cpu={args.kafka_cpu!r}: expected a CPU number or none")
        changes["kafka_cpu"] = None if text == "none" else int(text)
    if args.latency_lingers:
        text = args.latency_lingers.strip().lower()
        try:
            changes["latency_lingers_s"] = () if text == "none" else tuple(
                float(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise BenchConfigError(
                f"--latency-lingers={args.latency_lingers!r}: expected seconds like 0.001,0.002 or none") from None
    if args.no_pin:
        changes["pin"] = False
    if args.simulator_uvloop:
        changes["simulator_uvloop"] = True
    if args.profile:
        changes["profile"] = True
    if args.json is None and args.markdown is None and (args.quick or args.streamer_source is not None):
        # Only a full run of this checkout updates docs/performance.*: a quick or other-source run goes beside
        # its logs, so it never replaces the published table.
        folder = Path(changes.get("work_dir") or run_dir() / "bench") / ("quick" if args.quick else "other-source")
        changes["out_json"] = folder / "performance.json"
        changes["out_markdown"] = folder / "performance.md"
    if args.quick:
        return quick(**changes)
    return BenchConfig(**changes)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except BenchConfigError as exc:
        print(f"k2 bench: {exc}", file=sys.stderr)
        return 2
    from k2_ops.bench.runner import run, run_market_only

    # SIGTERM as Ctrl-C: the runners' `finally` stops the Kafka, simulator and streamers they started.
    try:
        with signals_interrupt(signal.SIGINT, signal.SIGTERM):
            result = run_market_only(config) if args.market_only else run(config)
    except KeyboardInterrupt:
        print("k2 bench: interrupted; what it started is stopped", file=sys.stderr)
        return 130
    if args.market_only:
        market, memory = result["whole_market"], result["memory"]
        print(f"k2 bench --market-only: {market['streams']} streams over {market['connections']:.0f} connections, "
              f"pool open in {market['pool_open_s']} s; {market['rate_msg_per_s']:.0f} msg/s: "
              f"{market['cpu_us_per_msg']:.1f} µs/msg (8 streams at the same rate: "
              f"{memory['cpu_us_per_msg']:.1f} µs/msg, "
              f"ratio {market['ratio_cpu_to_8_streams']:.2f}); steady RSS {market['steady_rss_mb']:.1f} MB "
              f"(8 streams: {memory['steady_rss_mb']:.1f} MB); missing {market['missing']:.0f}")
        return 0
    missed = [t for t in result["targets"] if t["met"] is False]
    print(f"k2 bench: wrote {config.out_json} and the table in {config.out_markdown}")
    for target in result["targets"]:
        state = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        print(f"  {target['figure']:<40} median {target['median']!s:>12}  target {target['target']:<26} {state}")
    # Targets are reported, not enforced: a missed target is information, not a failed command.
    print(f"k2 bench: {len(missed)} target(s) missed" if missed else "k2 bench: every target met")
    return 0
