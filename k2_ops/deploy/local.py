"""Settings shared by both colors of a local (process backend) deployment."""

from __future__ import annotations

from pathlib import Path


def streamer_common_env(
    kafka_bootstrap_servers: str,
    ws_url: str,
    *,
    ca_file: Path | str | None = None,
    topic_prefix: str = "market.crypto.binance",
    symbols: str = "btcusdt,ethusdt",
    schema_registry_url: str = "mock://k2-local",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment every color shares; `K2_INSTANCE`, port and start mode are added per color."""
    env = {
        "K2_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "K2_BINANCE_WS_URL": ws_url,
        "K2_BINANCE_SYMBOLS": symbols,
        "K2_KAFKA_TOPIC_PREFIX": topic_prefix,
        "K2_SCHEMA_REGISTRY_URL": schema_registry_url,
    }
    if ca_file:
        env["K2_SSL_CA_FILE"] = str(ca_file)
    env.update(extra or {})
    return env


def trades_topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.trades"
