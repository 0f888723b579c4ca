"""Binance spot WebSocket market-streams simulator (wss://stream.binance.com:9443 look-alike).

Contract used by the streamer's tests (see /work/team/SIMULATOR_CONTRACT.md):

    from k2_ops.simulator import SimulatorConfig, BackgroundSimulator

    config = SimulatorConfig(symbols=("btcusdt", "ethusdt"), rate_per_symbol=50.0,
                             server_ping_interval_s=20.0, pong_timeout_s=60.0, ...)
    with BackgroundSimulator(config) as sim:
        sim.ws_base_url   # "wss://localhost:PORT"
        sim.ca_file       # CA to trust
        sim.control_url   # "http://127.0.0.1:CPORT"
        sim.drop_connections(); sim.generated_ids("btcusdt", "trade"); ...

Modules: config (settings), certs (per-run CA), market (generators, kept history, book), replay (recordings),
protocol (stream names, paths, control messages), rest (REST endpoints, weights, 429/418, REST faults), frames,
ground_truth, connection, server (asyncio server, fan-out, rules), faults, control (HTTP endpoint), background
(thread wrapper), cli.
"""

from .background import BackgroundSimulator, SimulatorError
from .certs import client_ssl_context
from .config import CERT_MODES, ConfigError, SimulatorConfig
from .connection import ConnectionInfo
from .market import STREAM_KINDS

__all__ = [
    "CERT_MODES",
    "STREAM_KINDS",
    "BackgroundSimulator",
    "ConfigError",
    "ConnectionInfo",
    "SimulatorConfig",
    "SimulatorError",
    "client_ssl_context",
]
