"""`k2 simulator`: run the Binance exchange simulator standalone until SIGINT/SIGTERM.

k2 simulator --symbols btcusdt,ethusdt --rate 50 --port 9443
k2 simulator --replay ../shared/binance_samples/btcusdt_20240808.gz --speed 10
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .background import BackgroundSimulator, SimulatorError
from .config import CERT_MODES, ConfigError, SimulatorConfig


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "off") else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SimulatorConfig()
    parser.add_argument("--symbols", default=",".join(d.symbols), help="comma-separated lowercase symbols")
    parser.add_argument("--synthetic-symbols", type=int, metavar="N",
                        help="also list N synthetic USDT symbols s0000usdt, s0001usdt, ... (a whole market)")
    parser.add_argument("--max-url-chars", type=_optional_int, default=d.max_url_chars,
                        help="refuse longer handshake URLs with HTTP 414 ('off' disables)")
    parser.add_argument("--rate", type=float, default=d.rate_per_symbol, help="trade messages/s per symbol")
    parser.add_argument("--host", default=d.host)
    parser.add_argument("--port", type=int, default=d.port, help="0 = a free port")
    parser.add_argument("--no-tls", action="store_true", help="serve plain ws:// instead of wss://")
    parser.add_argument("--cert-mode", choices=CERT_MODES, default=d.cert_mode)
    parser.add_argument("--tls-hostname", action="append", default=[], metavar="NAME",
                        help="another name the valid certificate covers (repeatable), e.g. a compose service")
    parser.add_argument("--replay", metavar="FILE", help="replay a recording (btcusdt_20240808.gz format)")
    parser.add_argument("--speed", type=float, default=d.replay_speed, help="replay speed; 0 = full speed")
    parser.add_argument("--control-port", type=_optional_int, default=d.control_port, help="'off' disables")
    parser.add_argument("--workdir", help="where the CA file goes (a temporary folder if not set)")
    parser.add_argument("--ping-interval", type=_optional_float, default=d.server_ping_interval_s)
    parser.add_argument("--pong-timeout", type=_optional_float, default=d.pong_timeout_s)
    parser.add_argument("--lifetime", type=_optional_float, default=d.max_lifetime_s, help="seconds")
    parser.add_argument("--max-incoming", type=_optional_int, default=d.max_incoming_per_s)
    parser.add_argument("--max-streams", type=int, default=d.max_streams_per_connection)
    parser.add_argument("--max-attempts", type=_optional_int, default=d.max_connection_attempts)
    parser.add_argument("--attempt-window", type=float, default=d.connection_attempt_window_s)
    parser.add_argument("--burst-multiplier", type=float, default=d.burst_multiplier)
    parser.add_argument("--burst-every", type=_optional_float, default=d.burst_every_s)
    parser.add_argument("--burst-duration", type=float, default=d.burst_duration_s)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--rest-history", type=int, default=d.rest_history_per_symbol, metavar="N",
                        help="trades and aggTrades kept per symbol for historicalTrades / aggTrades")
    parser.add_argument("--rest-weight-limit", type=_optional_int, default=d.rest_weight_limit,
                        help="REST request weight per window ('off' disables the budget)")
    parser.add_argument("--rest-weight-window", type=float, default=d.rest_weight_window_s, help="seconds")
    parser.add_argument("--rest-violations-before-ban", type=_optional_int, default=d.rest_violations_before_ban,
                        help="requests before a 429's Retry-After that earn a 418 ban ('off': never banned)")
    parser.add_argument("--rest-ban", type=float, default=d.rest_ban_s, help="418 ban length, seconds")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if it is installed")


def synthetic_symbols(count: int) -> tuple[str, ...]:
    """N synthetic USDT symbols for a whole-market simulator: s0000usdt, s0001usdt, ..."""
    return tuple(f"s{i:04d}usdt" for i in range(count))


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip())
        + synthetic_symbols(args.synthetic_symbols or 0),
        max_url_chars=args.max_url_chars,
        rate_per_symbol=args.rate,
        host=args.host,
        port=args.port,
        tls=not args.no_tls,
        cert_mode=args.cert_mode,
        tls_hostnames=tuple(args.tls_hostname),
        replay_file=args.replay,
        replay_speed=args.speed,
        control_port=args.control_port,
        workdir=args.workdir,
        server_ping_interval_s=args.ping_interval,
        pong_timeout_s=args.pong_timeout,
        max_lifetime_s=args.lifetime,
        max_incoming_per_s=args.max_incoming,
        max_streams_per_connection=args.max_streams,
        max_connection_attempts=args.max_attempts,
        connection_attempt_window_s=args.attempt_window,
        burst_multiplier=args.burst_multiplier,
        burst_every_s=args.burst_every,
        burst_duration_s=args.burst_duration,
        seed=args.seed,
        rest_history_per_symbol=args.rest_history,
        rest_weight_limit=args.rest_weight_limit,
        rest_weight_window_s=args.rest_weight_window,
        rest_violations_before_ban=args.rest_violations_before_ban,
        rest_ban_s=args.rest_ban,
        use_uvloop=args.uvloop,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"k2 simulator: bad setting: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim = BackgroundSimulator(config)
    try:
        sim.start()
    except SimulatorError as exc:
        print(f"k2 simulator: {exc}", file=sys.stderr)
        return 1
    try:
        symbols = config.symbols if config.replay_file is None else ("btcusdt",)
        example = "/".join(f"{s}@trade" for s in symbols)
        print("K2 Binance exchange simulator running", flush=True)
        print(f"  url:     {sim.ws_base_url}", flush=True)
        print(f"  ca:      {sim.ca_file if config.tls else '(no TLS)'}", flush=True)
        if config.control_port is not None:
            print(f"  control: {sim.control_url}", flush=True)
        print(f"  example: {sim.ws_base_url}/stream?streams={example}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
        print("k2 simulator: stopping", flush=True)
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulator",
        help="run the Binance exchange simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="k2 simulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
