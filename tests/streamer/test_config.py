"""Config: the issue's defaults, env over YAML, messages that name the setting and its range."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config import SETTINGS, ConfigError, describe_settings, load_config
from streamer.integrity import SequenceTracker
from streamer.metrics import StreamerMetrics
from streamer.parse import FrameParser
from streamer.source import Source


def test_defaults_match_the_contract_table() -> None:
    config = load_config({})
    assert config.ws_url == "wss://stream.binance.com:9443/stream"
    assert config.symbols == ("btcusdt", "ethusdt")
    assert config.streams == ("trade",)
    assert config.ssl_verify is True
    assert config.ssl_ca_file is None
    assert config.connection_max_lifetime_s == 14_400.0
    assert config.ping_interval_s == 180.0
    assert config.ping_timeout_s == 10.0
    assert config.health_timeout_s == 30.0
    assert config.memory_sample_interval_s == 30.0
    assert config.serializer_cache_max_size == 10
    assert config.kafka_bootstrap_servers == "localhost:9092"
    assert config.kafka_topic_prefix == "market.crypto.binance"
    assert config.schema_registry_url == "http://localhost:8081"
    assert config.max_buffered_messages == 100_000
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 8000)
    assert config.instance == "blue"
    assert config.test_leak_bytes_per_s == 0.0
    assert config.rotation_after_s == 14_400.0 and config.rotation_reason == "scheduled"


def test_intervals_are_float_seconds() -> None:
    config = load_config(
        {
            "K2_CONNECTION_MAX_LIFETIME_SECONDS": "2.5",
            "K2_PING_INTERVAL_SECONDS": "0.5",
            "K2_PING_TIMEOUT_SECONDS": "0.2",
            "K2_HEALTH_CHECK_TIMEOUT_SECONDS": "1.5",
        }
    )
    assert config.rotation_after_s == 2.5
    assert (config.ping_interval_s, config.ping_timeout_s, config.health_timeout_s) == (0.5, 0.2, 1.5)


def test_rotation_never_waits_for_the_exchange_limit() -> None:
    config = load_config({"K2_CONNECTION_MAX_LIFETIME_SECONDS": "80000", "K2_SERVER_MAX_LIFETIME_SECONDS": "600"})
    assert config.rotation_after_s == pytest.approx(570.0)
    assert config.rotation_reason == "server_limit"


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("K2_PING_INTERVAL_SECONDS", "0", "0.25 .. 3600 seconds"),
        ("K2_PING_INTERVAL_SECONDS", "abc", "0.25 .. 3600 seconds"),
        ("K2_HEALTH_CHECK_TIMEOUT_SECONDS", "-1", "0.1 .. 3600 seconds"),
        ("K2_CONNECTION_MAX_LIFETIME_SECONDS", "90000", "0.5 .. 86000 seconds"),
        ("K2_SERIALIZER_CACHE_MAX_SIZE", "0", "1 .. 10000"),
        ("K2_SERIALIZER_CACHE_MAX_SIZE", "2.5", "1 .. 10000"),
        ("K2_BINANCE_STREAMS", "trade,kline", "trade, aggTrade, bookTicker, depth"),
        ("K2_BINANCE_SYMBOLS", "BTCUSDT", "lowercase"),
        ("K2_BINANCE_SYMBOLS", "", "lowercase"),
        ("K2_SSL_VERIFY", "maybe", "true or false"),
        ("K2_SSL_CA_FILE", "/nonexistent/ca.pem", "existing PEM file"),
        ("K2_BINANCE_WS_URL", "https://example.com", "a wss:// URL (ws:// only with K2_SSL_VERIFY=false)"),
        ("K2_METRICS_PORT", "70000", "0 .. 65535"),
        ("K2_SCHEMA_REGISTRY_URL", "ftp://x", "mock://"),
        ("K2_KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("K2_INSTANCE", "Blue Green", "[a-z0-9_-]"),
        ("K2_MAX_BUFFERED_MESSAGES", "nan", "10 .. 10000000"),
        ("K2_TEST_LEAK_BYTES_PER_SECOND", "inf", "0 .. 100000000"),
    ],
)
def test_bad_values_name_the_setting_and_the_allowed_range(env: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({env: value})
    message = str(info.value)
    assert env in message and fragment in message and "allowed" in message


def test_relations_between_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"K2_PING_TIMEOUT_SECONDS=.*K2_PING_INTERVAL_SECONDS"):
        load_config({"K2_PING_INTERVAL_SECONDS": "1", "K2_PING_TIMEOUT_SECONDS": "2"})
    with pytest.raises(ConfigError, match="K2_BACKOFF_INITIAL_SECONDS"):
        load_config({"K2_BACKOFF_INITIAL_SECONDS": "30", "K2_BACKOFF_MAX_SECONDS": "10"})
    symbols = ",".join(f"sym{i:03d}" for i in range(300))
    # 1,200 streams over connections of 200: a pool of 6 (one connection held at most 1,024).
    config = load_config({"K2_BINANCE_SYMBOLS": symbols, "K2_BINANCE_STREAMS": "trade,aggTrade,bookTicker,depth"})
    assert len(config.symbols) == 300 and config.streams_per_connection == 200
    with pytest.raises(ConfigError, match=r"1200 streams need 120 connections of K2_STREAMS_PER_CONNECTION=10; "
                                          r"allowed: at most K2_CONNECTION_ATTEMPTS_PER_WINDOW=100"):
        load_config({"K2_BINANCE_SYMBOLS": symbols, "K2_BINANCE_STREAMS": "trade,aggTrade,bookTicker,depth",
                     "K2_STREAMS_PER_CONNECTION": "10"})
    for bad in ("0", "1025"):
        with pytest.raises(ConfigError, match=rf"K2_STREAMS_PER_CONNECTION={bad} is out of range; allowed: "
                                              r"1 \.\. 1024"):
            load_config({"K2_STREAMS_PER_CONNECTION": bad})
    with pytest.raises(ConfigError, match=r"K2_CONNECTION_ATTEMPTS_PER_WINDOW=301 is out of range; allowed: 1 \.\. "):
        load_config({"K2_CONNECTION_ATTEMPTS_PER_WINDOW": "301"})
    with pytest.raises(ConfigError, match=r"K2_BINANCE_REST_URL=http://127\.0\.0\.1:9 is not encrypted"):
        load_config({"K2_BINANCE_REST_URL": "http://127.0.0.1:9"})


def test_symbols_accept_what_binance_lists_and_a_quote_selector() -> None:
    from streamer.symbols import Explicit, Quote

    # Real listings with non-ASCII names pass; what breaks a stream name, a URL or a topic key does not.
    config = load_config({"K2_BINANCE_SYMBOLS": "btcusdt,币安人生usdt,1000satsusdt"})
    assert config.selector == Explicit(("btcusdt", "币安人生usdt", "1000satsusdt"))
    assert load_config({"K2_BINANCE_SYMBOLS": "quote:usdt"}).selector == Quote("USDT")
    for bad in ("btc@usdt", "btc/usdt", "btc usdt", "btc\u0000usdt", 'btc"usdt', "btc#usdt", "BTCUSDT",
                "quote:", "quote:USDT,btcusdt", "x"):
        with pytest.raises(ConfigError, match=r"K2_BINANCE_SYMBOLS=.*allowed: a comma list"):
            load_config({"K2_BINANCE_SYMBOLS": bad})


def test_plaintext_is_never_a_silent_downgrade() -> None:
    with pytest.raises(ConfigError, match=r"K2_BINANCE_WS_URL=ws://127.0.0.1:9/stream is not encrypted"):
        load_config({"K2_BINANCE_WS_URL": "ws://127.0.0.1:9/stream"})
    config = load_config({"K2_BINANCE_WS_URL": "ws://127.0.0.1:9/stream", "K2_SSL_VERIFY": "false"})
    source = Source(config, FrameParser("blue"), SequenceTracker(), lambda event: None,
                    metrics := StreamerMetrics("blue", SequenceTracker()))
    assert source.dialer.ssl_context is None
    assert metrics.registry.get_sample_value("binance_ssl_verify_enabled", {"instance": "blue"}) == 0
    verified = load_config({})
    Source(verified, FrameParser("blue"), SequenceTracker(), lambda event: None,
           metrics := StreamerMetrics("blue", SequenceTracker()))
    assert metrics.registry.get_sample_value("binance_ssl_verify_enabled", {"instance": "blue"}) == 1


def test_yaml_file_is_read_and_env_wins(tmp_path: Path) -> None:
    path = tmp_path / "streamer.yaml"
    path.write_text(
        "K2_PING_INTERVAL_SECONDS: 30\nhealth_check_timeout_seconds: 12.5\nbinance_symbols: [solusdt, bnbusdt]\n"
    )
    config = load_config({"K2_CONFIG_FILE": str(path), "K2_PING_INTERVAL_SECONDS": "45"})
    assert config.ping_interval_s == 45.0  # env wins
    assert config.health_timeout_s == 12.5  # from the file
    assert config.symbols == ("solusdt", "bnbusdt")


def test_yaml_errors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("K2_PING_INTERVAL_SECONDS: [1, 2\n")
    with pytest.raises(ConfigError, match=r"K2_CONFIG_FILE=.*not valid YAML"):
        load_config({"K2_CONFIG_FILE": str(path)})
    path.write_text("K2_NO_SUCH_SETTING: 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'K2_NO_SUCH_SETTING'"):
        load_config({"K2_CONFIG_FILE": str(path)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({"K2_CONFIG_FILE": str(tmp_path / "missing.yaml")})
    path.write_text("K2_PING_TIMEOUT_SECONDS: -3\n")
    with pytest.raises(ConfigError, match=r"K2_PING_TIMEOUT_SECONDS=-3\.0 is out of range"):
        load_config({"K2_CONFIG_FILE": str(path)})


def test_describe_settings_covers_every_setting() -> None:
    described = describe_settings()
    assert [d["env"] for d in described] == [s.env for s in SETTINGS]
    by_env = {d["env"]: d for d in described}
    assert by_env["K2_PING_INTERVAL_SECONDS"]["default"] == "180"
    assert by_env["K2_BINANCE_SYMBOLS"]["default"] == "btcusdt,ethusdt"
    assert by_env["K2_SSL_CA_FILE"]["default"] == "unset"
    assert by_env["K2_TEST_LEAK_BYTES_PER_SECOND"]["meaning"].startswith("TEST ONLY")
    for entry in described:
        assert entry["meaning"] and entry["allowed"] and entry["type"]
    # Every default itself passes validation.
    load_config({})
