"""K2 streamer: Binance WebSocket market data → Avro → Kafka, with rotation, heartbeat and full metrics."""

import importlib.metadata

DISTRIBUTION = "k2-platform"
try:
    # The one version: the one pyproject.toml declares, as installed (k2_ops and both commands use this).
    __version__ = importlib.metadata.version(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:
    __version__ = "unknown (not installed: pip install -e .)"
