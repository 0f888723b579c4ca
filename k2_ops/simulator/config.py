"""The simulator's one configuration object, validated when it is built.

Every interval is a float in seconds so tests can compress Binance's clock (20 s pings, 60 s pong
deadline, 24 h lifetime, 5 min connection-attempt window). `None` turns a rule off.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CERT_MODES = ("valid", "wrong_host", "unknown_ca")
REPLAY_STARTS = ("first_subscriber", "immediately")
# Lowercase letters of any script and digits, as Binance's stream names carry its symbols (some listings have
# non-ASCII names, e.g. 币安人生usdt); `valid_symbol` adds the lowercase rule.
SYMBOL_RE = re.compile(r"^[^\W_]{2,30}$")


def valid_symbol(symbol: object) -> bool:
    return isinstance(symbol, str) and bool(SYMBOL_RE.match(symbol)) and symbol == symbol.lower()


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting."""


@dataclass(frozen=True)
class SimulatorConfig:
    symbols: tuple[str, ...] = ("btcusdt",)
    # Trade messages per second per symbol; aggTrade/bookTicker/depth rates follow from the trades.
    rate_per_symbol: float = 50.0
    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = True
    cert_mode: str = "valid"
    # Names the valid certificate covers besides localhost and 127.0.0.1 (a compose service name, say).
    tls_hostnames: tuple[str, ...] = ()
    # Binance's documented rules (web-socket-streams.md, 2026), each configurable; None = rule off.
    server_ping_interval_s: float | None = 20.0
    pong_timeout_s: float | None = 60.0
    max_lifetime_s: float | None = 86400.0
    max_incoming_per_s: int | None = 5
    incoming_window_s: float = 1.0
    max_streams_per_connection: int = 1024
    # Binance refuses handshake URLs over about 8,000 characters (HTTP 414); None = any length.
    max_url_chars: int | None = 8000
    max_connection_attempts: int | None = 300
    connection_attempt_window_s: float = 300.0
    # Replay a recording in the btcusdt_20240808.gz format instead of generating; speed 0 = full speed.
    replay_file: Path | str | None = None
    replay_speed: float = 1.0
    # "first_subscriber": the recording starts when the first connection subscribes to a stream, so a
    # full-speed replay is not over before anyone listens.
    replay_start: str = "first_subscriber"
    control_port: int | None = 0
    workdir: Path | str | None = None
    # Generation: one tick produces everything due since the previous tick and sends it in one batch.
    tick_interval_s: float = 0.01
    burst_multiplier: float = 1.0
    burst_every_s: float | None = None
    burst_duration_s: float = 1.0
    seed: int = 0
    # The exchange's clock minus this host's, seconds: event times (E, T) are stamped this far ahead (negative:
    # behind), as a real exchange's clock differs from the consumer's (the recordings show 1.27 s).
    clock_offset_s: float = 0.0
    # Bounds for long runs (see ground_truth.py and server.py).
    ground_truth_max_per_series: int = 2_000_000
    max_closed_connections_kept: int = 10_000
    max_send_buffer_bytes: int = 64 * 1024 * 1024
    max_incoming_message_bytes: int = 1024 * 1024
    close_timeout_s: float = 2.0
    # REST (rest.py): trades and aggTrades kept per symbol for historicalTrades / aggTrades (0 keeps none; about
    # 32 bytes per trade plus 48 per aggTrade), and Binance's REQUEST_WEIGHT budget: `rest_weight_limit` per window of
    # `rest_weight_window_s` (aligned on the exchange clock; None = no budget), 429 beyond it, a ban (418) for
    # `rest_ban_s` after `rest_violations_before_ban` requests sent before a 429's Retry-After (None = no bans).
    rest_history_per_symbol: int = 10_000
    rest_weight_limit: int | None = 6000
    rest_weight_window_s: float = 60.0
    rest_violations_before_ban: int | None = 2
    rest_ban_s: float = 120.0
    # Faster event loop when installed (a dagster-webserver dependency); plain asyncio otherwise.
    use_uvloop: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.symbols, str) or not isinstance(self.symbols, tuple | list):
            raise ConfigError(f"SimulatorConfig.symbols must be a tuple of lowercase symbols, got {self.symbols!r}")
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "tls_hostnames", tuple(self.tls_hostnames))
        if self.replay_file is not None:
            object.__setattr__(self, "replay_file", Path(self.replay_file))
        if self.workdir is not None:
            object.__setattr__(self, "workdir", Path(self.workdir))
        validate(self)

    def replace(self, **changes: Any) -> SimulatorConfig:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise ConfigError(f"SimulatorConfig has no setting(s) {sorted(unknown)}")
        values.update(changes)
        return SimulatorConfig(**values)


def _positive(config: SimulatorConfig, name: str, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        none = " or None" if allow_none else ""
        raise ConfigError(f"SimulatorConfig.{name} must be a finite number {bound}{none}, got {value!r}")


def _integer(config: SimulatorConfig, name: str, *, minimum: int, allow_none: bool = False) -> None:
    value = getattr(config, name)
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        none = " or None" if allow_none else ""
        raise ConfigError(f"SimulatorConfig.{name} must be an integer >= {minimum}{none}, got {value!r}")


def validate(config: SimulatorConfig) -> None:
    replaying = config.replay_file is not None
    if not config.symbols and not replaying:
        raise ConfigError("SimulatorConfig.symbols must name at least one symbol (or set replay_file)")
    for symbol in config.symbols:
        if not valid_symbol(symbol):
            raise ConfigError(
                f"SimulatorConfig.symbols: {symbol!r} is not a lowercase symbol like 'btcusdt' "
                "(Binance stream names use lowercase symbols)"
            )
    if len(set(config.symbols)) != len(config.symbols):
        raise ConfigError(f"SimulatorConfig.symbols has duplicates: {config.symbols!r}")
    _positive(config, "rate_per_symbol", allow_zero=True)
    if not isinstance(config.clock_offset_s, int | float) or not -3600 <= config.clock_offset_s <= 3600:
        raise ConfigError(
            f"SimulatorConfig.clock_offset_s must be -3600 .. 3600 seconds, got {config.clock_offset_s!r}")
    if not isinstance(config.host, str) or not config.host:
        raise ConfigError(f"SimulatorConfig.host must be a host name or address, got {config.host!r}")
    _integer(config, "port", minimum=0)
    if config.port > 65535:
        raise ConfigError(f"SimulatorConfig.port must be <= 65535, got {config.port}")
    if config.cert_mode not in CERT_MODES:
        raise ConfigError(f"SimulatorConfig.cert_mode must be one of {CERT_MODES}, got {config.cert_mode!r}")
    if config.cert_mode != "valid" and not config.tls:
        raise ConfigError("SimulatorConfig.cert_mode other than 'valid' needs tls=True")
    for name in ("server_ping_interval_s", "pong_timeout_s", "max_lifetime_s", "burst_every_s"):
        _positive(config, name, allow_none=True)
    for name in ("incoming_window_s", "connection_attempt_window_s", "tick_interval_s", "burst_duration_s"):
        _positive(config, name)
    _positive(config, "close_timeout_s")
    _positive(config, "burst_multiplier")
    _positive(config, "replay_speed", allow_zero=True)
    _integer(config, "max_incoming_per_s", minimum=1, allow_none=True)
    _integer(config, "max_streams_per_connection", minimum=1)
    _integer(config, "max_url_chars", minimum=16, allow_none=True)
    _integer(config, "max_connection_attempts", minimum=1, allow_none=True)
    _integer(config, "ground_truth_max_per_series", minimum=10)
    _integer(config, "max_closed_connections_kept", minimum=0)
    _integer(config, "max_send_buffer_bytes", minimum=1024)
    _integer(config, "max_incoming_message_bytes", minimum=1024)
    _integer(config, "seed", minimum=0)
    _integer(config, "rest_history_per_symbol", minimum=0)
    _integer(config, "rest_weight_limit", minimum=1, allow_none=True)
    _integer(config, "rest_violations_before_ban", minimum=1, allow_none=True)
    _positive(config, "rest_weight_window_s")
    _positive(config, "rest_ban_s")
    if config.control_port is not None:
        _integer(config, "control_port", minimum=0)
        if config.control_port > 65535:
            raise ConfigError(f"SimulatorConfig.control_port must be <= 65535, got {config.control_port}")
    if config.replay_start not in REPLAY_STARTS:
        raise ConfigError(f"SimulatorConfig.replay_start must be one of {REPLAY_STARTS}, got {config.replay_start!r}")
    if replaying:
        path = Path(config.replay_file)  # type: ignore[arg-type]
        if not path.is_file():
            raise ConfigError(f"SimulatorConfig.replay_file: no such file {path}")
