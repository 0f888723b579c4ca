"""The streamer's one configuration object: environment variables, optionally a YAML file, validated at start.

Sources, strongest first: the process environment, then the YAML mapping in the file named by
`K2_CONFIG_FILE` (keys are the env names, e.g. `K2_PING_INTERVAL_SECONDS: 30`, or the same names without
the `K2_` prefix in any case), then the defaults below. Every setting is declared once in `SETTINGS`; the
config reference doc is generated from `describe_settings()`. A bad value raises `ConfigError` naming the
setting and its allowed range; `python -m streamer` turns that into a message and exit code 2.

Kafka client settings (security protocol, SASL, TLS files, and the librdkafka pass-through
`K2_KAFKA_CLIENT_<NAME>` / YAML `K2_KAFKA_CLIENT: {name: value}`) are loaded into one `KafkaClientConfig`
by `load_kafka_client_config()`: the streamer and every other Kafka client of the project (deploy audit,
bench, soak, Dagster) read the same settings. Invariants: a pass-through never overrides a setting a
guarantee depends on (`PROTECTED_CLIENT_SETTINGS`: acks=all, idempotence, no message expiry, ...); a
password never appears in a message, a repr or a log line.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from streamer.kinds import DEPTH_SNAPSHOT, STREAM_KINDS
from streamer.redact import mask_credentials, split_credentials
from streamer.rest import BINANCE_WEIGHT_PER_MINUTE
from streamer.shards import MAX_SHARDS, Shard
from streamer.symbols import Explicit, Selector, parse_selector, select

# Binance closes every connection after 24 h, allows 1024 streams on one connection and 300 connection
# attempts per 5 minutes per IP.
BINANCE_MAX_CONNECTION_SECONDS = 86_400.0
BINANCE_MAX_STREAMS_PER_CONNECTION = 1024
BINANCE_MAX_ATTEMPTS_PER_IP = 300
# The process's default share of them: a third, in Binance's 5-minute window.
ATTEMPT_WINDOW_S = 300.0
MAX_ATTEMPTS_PER_WINDOW = 100


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range. The message names the setting."""


@dataclass(frozen=True)
class Setting:
    field: str
    env: str
    default: Any
    kind: str  # "str" | "int" | "float" | "bool" | "list" | "path"
    allowed: str  # the allowed range, in words, for messages and docs
    meaning: str
    check: Callable[[Any], bool] | None = None
    secret: bool = False  # messages name the setting, never the value

    def shown(self, value: Any) -> str:
        if self.secret:
            return "'***'"
        return repr(",".join(value) if isinstance(value, tuple) else value)


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


def _positive(limit_low: float, limit_high: float) -> Callable[[Any], bool]:
    return lambda v: limit_low <= v <= limit_high


_INSTANCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

def _optional_file(value: str | None) -> bool:
    return value is None or Path(value).is_file()


# Every Kafka client of the project (streamer producer and admin, deploy audit, bench, soak, Dagster) is
# configured by these, through load_kafka_client_config().
KAFKA_CLIENT_SETTINGS: tuple[Setting, ...] = (
    Setting("kafka_security_protocol", "K2_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "str",
            ", ".join(p.value for p in SecurityProtocol), "security.protocol of every Kafka client",
            lambda v: v in {p.value for p in SecurityProtocol}),
    Setting("kafka_sasl_mechanism", "K2_KAFKA_SASL_MECHANISM", None, "str",
            "unset, or with a SASL_* protocol: " + ", ".join(m.value for m in SaslMechanism),
            "sasl.mechanism (SCRAM for MSK and Aiven, PLAIN for Confluent Cloud API keys)",
            lambda v: v is None or v in {m.value for m in SaslMechanism}),
    Setting("kafka_sasl_username", "K2_KAFKA_SASL_USERNAME", None, "str", "unset or 1..255 characters",
            "sasl.username (Confluent Cloud: the API key)", lambda v: v is None or 1 <= len(v) <= 255),
    Setting("kafka_sasl_password", "K2_KAFKA_SASL_PASSWORD", None, "str",
            "unset or 1..1024 characters (never logged)",
            "sasl.password; prefer K2_KAFKA_SASL_PASSWORD_FILE so it is not in the environment",
            lambda v: v is None or 1 <= len(v) <= 1024, secret=True),
    Setting("kafka_sasl_password_file", "K2_KAFKA_SASL_PASSWORD_FILE", None, "path",
            "unset or a readable file (one line: the password; a trailing newline is ignored)",
            "sasl.password read from a file (a Docker or Kubernetes secret)", _optional_file),
    Setting("kafka_ssl_ca_location", "K2_KAFKA_SSL_CA_LOCATION", None, "path",
            "unset (the system's trust store) or an existing PEM file; SSL and SASL_SSL only",
            "ssl.ca.location: the CA that signed the brokers' certificates", _optional_file),
    Setting("kafka_ssl_certificate_location", "K2_KAFKA_SSL_CERTIFICATE_LOCATION", None, "path",
            "unset or an existing PEM file, together with K2_KAFKA_SSL_KEY_LOCATION",
            "ssl.certificate.location: client certificate for mutual TLS (mTLS)", _optional_file),
    Setting("kafka_ssl_key_location", "K2_KAFKA_SSL_KEY_LOCATION", None, "path",
            "unset or an existing PEM file (unencrypted key), together with K2_KAFKA_SSL_CERTIFICATE_LOCATION",
            "ssl.key.location: the client certificate's private key (mTLS)", _optional_file),
)

# librdkafka settings the pass-through refuses, with the reason (the guarantee, or the K2 setting to use).
_OWN = "set by its own K2 setting (docs/configuration.md)"
PROTECTED_CLIENT_SETTINGS: dict[str, str] = {
    "enable.idempotence": "always true: retries never duplicate or reorder",
    "acks": "always all: a message is delivered once every in-sync replica has it",
    "request.required.acks": "always all: a message is delivered once every in-sync replica has it",
    "max.in.flight.requests.per.connection": "idempotent ordering needs at most 5 (librdkafka's default)",
    "max.in.flight": "idempotent ordering needs at most 5 (librdkafka's default)",
    "message.timeout.ms": "always 0: a message never expires while Kafka is away (back-pressure, not loss)",
    "delivery.timeout.ms": "always 0: a message never expires while Kafka is away (back-pressure, not loss)",
    "message.send.max.retries": "retries stay unlimited so no message is given up",
    "retries": "retries stay unlimited so no message is given up",
    "enable.gapless.guarantee": "the project's delivery guarantee is idempotence with unlimited retries",
    "queue.buffering.max.messages": "sized from K2_MAX_BUFFERED_MESSAGES (the back-pressure bound)",
    "queue.buffering.max.kbytes": "sized from K2_MAX_BUFFERED_MESSAGES (the back-pressure bound)",
    "bootstrap.servers": _OWN + ": K2_KAFKA_BOOTSTRAP_SERVERS",
    "metadata.broker.list": _OWN + ": K2_KAFKA_BOOTSTRAP_SERVERS",
    "security.protocol": _OWN + ": K2_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": _OWN + ": K2_KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": _OWN + ": K2_KAFKA_SASL_MECHANISM",
    "sasl.username": _OWN + ": K2_KAFKA_SASL_USERNAME",
    "sasl.password": _OWN + ": K2_KAFKA_SASL_PASSWORD or K2_KAFKA_SASL_PASSWORD_FILE",
    "ssl.ca.location": _OWN + ": K2_KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": _OWN + ": K2_KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": _OWN + ": K2_KAFKA_SSL_KEY_LOCATION",
    "compression.type": _OWN + ": K2_KAFKA_COMPRESSION",
    "compression.codec": _OWN + ": K2_KAFKA_COMPRESSION",
    "linger.ms": _OWN + ": K2_KAFKA_LINGER_SECONDS",
    "queue.buffering.max.ms": _OWN + ": K2_KAFKA_LINGER_SECONDS",
    "statistics.interval.ms": _OWN + ": K2_KAFKA_STATS_INTERVAL_SECONDS (Kafka reachability for /readyz)",
    "client.id": "set per client (k2-streamer-<instance>, the audit's, the bench's)",
    "group.id": "the audit and bench read with throw-away groups",
    "enable.auto.commit": "the audit and bench never commit offsets",
    "enable.ssl.certificate.verification": "a broker certificate is always verified",
    "ssl.endpoint.identification.algorithm": "the broker's host name is always verified (https)",
}
KAFKA_CLIENT_ENV_PREFIX = "K2_KAFKA_CLIENT_"
KAFKA_CLIENT_YAML_KEY = "K2_KAFKA_CLIENT"
_LIBRDKAFKA_NAME = re.compile(r"^[a-z][a-z0-9]*(\.[a-z0-9]+)*$")


SETTINGS: tuple[Setting, ...] = (
    Setting("ws_url", "K2_BINANCE_WS_URL", "wss://stream.binance.com:9443/stream", "str",
            "a wss:// URL (ws:// only with K2_SSL_VERIFY=false)", "base URL of Binance combined streams",
            lambda v: v.startswith(("wss://", "ws://"))),
    Setting("symbols", "K2_BINANCE_SYMBOLS", ("btcusdt", "ethusdt"), "list",
            "a comma list of lowercase symbols as Binance lists them (2..40 letters of any script or digits; "
            "no @ / , whitespace or quotes), or one selector quote:<ASSET> (e.g. quote:USDT)",
            "symbols to stream; quote:USDT = every TRADING symbol quoted in USDT, read from exchangeInfo at "
            "K2_BINANCE_REST_URL and refreshed every K2_SYMBOL_REFRESH_SECONDS",
            lambda v: not isinstance(parse_selector(v), str)),
    Setting("streams", "K2_BINANCE_STREAMS", ("trade",), "list",
            "comma list of " + ", ".join(STREAM_KINDS), "streams per symbol",
            lambda v: len(v) >= 1 and all(s in STREAM_KINDS for s in v) and len(set(v)) == len(v)),
    Setting("rest_url", "K2_BINANCE_REST_URL", None, "str",
            "unset, or an https:// URL (http:// only with K2_SSL_VERIFY=false)",
            "Binance REST base URL: exchangeInfo for a quote: selector, the history gap repairs read (same TLS "
            "settings as the WebSocket). Unset: https://api.binance.com for a binance.com WebSocket, else the "
            "WebSocket's own host and port (an exchange simulator serves both)",
            lambda v: v is None or v.startswith(("https://", "http://"))),
    Setting("symbol_refresh_s", "K2_SYMBOL_REFRESH_SECONDS", 300.0, "float", "0.1 .. 86400 seconds",
            "how often a quote: selector re-reads exchangeInfo (new listings subscribed, delistings "
            "unsubscribed)", _positive(0.1, 86_400.0)),
    Setting("binance_api_key", "K2_BINANCE_API_KEY", None, "str", "unset or 1..256 characters (never logged)",
            "Binance API key, sent as X-MBX-APIKEY with REST requests (historicalTrades needs one on the real "
            "exchange); prefer the _FILE form", lambda v: v is None or 1 <= len(v) <= 256, secret=True),
    Setting("binance_api_key_file", "K2_BINANCE_API_KEY_FILE", None, "path", "unset or a readable file",
            "the Binance API key from a file (a Docker or Kubernetes secret)", _optional_file),
    Setting("rest_weight_limit", "K2_BINANCE_REST_WEIGHT_LIMIT", BINANCE_WEIGHT_PER_MINUTE, "int", "1 .. 1000000",
            "the exchange's request-weight limit per window (Binance spot: REQUEST_WEIGHT 6,000 per minute, "
            "listed by exchangeInfo)", _positive(1, 1_000_000)),
    Setting("rest_weight_share", "K2_BINANCE_REST_WEIGHT_SHARE", 0.5, "float", "0.01 .. 1",
            "the share of that limit this process may spend (discovery, gap repairs and depth snapshots "
            "together); with N processes on one IP, at most 1/N each", _positive(0.01, 1.0)),
    Setting("rest_weight_window_s", "K2_BINANCE_REST_WEIGHT_WINDOW_SECONDS", 60.0, "float",
            "0.1 .. 3600 seconds", "the window of K2_BINANCE_REST_WEIGHT_LIMIT (Binance: the minute)",
            _positive(0.1, 3600.0)),
    Setting("rest_timeout_s", "K2_BINANCE_REST_TIMEOUT_SECONDS", 10.0, "float", "0.1 .. 300 seconds",
            "how long one REST request may take (connect, send, answer)", _positive(0.1, 300.0)),
    Setting("gap_repair", "K2_GAP_REPAIR", True, "bool", "true or false",
            "repair trade and aggTrade gaps from Binance's REST history (historicalTrades, aggTrades); the "
            "repaired records carry the Kafka header k2-source: rest"),
    Setting("gap_repair_deadline_s", "K2_GAP_REPAIR_DEADLINE_SECONDS", 600.0, "float", "1 .. 86400 seconds",
            "ids still missing this long after their gap was seen are given up and reported unrepaired",
            _positive(1.0, 86_400.0)),
    Setting("gap_repair_hold_s", "K2_GAP_REPAIR_HOLD_SECONDS", 2.0, "float", "0 .. 300 seconds (0 = no hold)",
            "while a stream has a gap under repair its newer live records wait this long at most, so the "
            "repaired ids reach Kafka first (ids in order per key); a slower repair lands out of order",
            _positive(0.0, 300.0)),
    Setting("rest_retry_s", "K2_BINANCE_REST_RETRY_SECONDS", 1.0, "float", "0.01 .. 60 seconds",
            "the first wait after a failed gap-repair or depth-snapshot request (REST error, bad answer); it "
            "doubles up to 30 s", _positive(0.01, 60.0)),
    Setting("depth_sync", "K2_DEPTH_SYNC", True, "bool", "true or false",
            "for every depth stream, produce order-book snapshots to <prefix>.depth_snapshots (GET /api/v3/depth, "
            "Binance's local book procedure): a snapshot and the diffs after it rebuild the exchange's book"),
    Setting("depth_snapshot_limit", "K2_DEPTH_SNAPSHOT_LIMIT", 100, "int", "1 .. 5000",
            "price levels per side of a depth snapshot; its weight grows with it (Binance: 5 up to 100, 25 up to "
            "500, 50 up to 1000, 250 beyond), and levels deeper than it are in the rebuilt book only once a diff "
            "touches them", _positive(1, 5000)),
    Setting("streams_per_connection", "K2_STREAMS_PER_CONNECTION", 200, "int",
            f"1 .. {BINANCE_MAX_STREAMS_PER_CONNECTION} (Binance's limit per connection)",
            "streams per connection of the pool: symbols x streams are spread over connections of at most "
            "this many, each subscribed with SUBSCRIBE messages", _positive(1, BINANCE_MAX_STREAMS_PER_CONNECTION)),
    Setting("connection_attempts_per_window", "K2_CONNECTION_ATTEMPTS_PER_WINDOW", MAX_ATTEMPTS_PER_WINDOW, "int",
            f"1 .. {BINANCE_MAX_ATTEMPTS_PER_IP}",
            "connection attempts the whole pool may make in K2_CONNECTION_ATTEMPT_WINDOW_SECONDS: this "
            "process's share of Binance's 300 per 5 min per IP (with N processes on one IP, at most 300/N each)",
            _positive(1, BINANCE_MAX_ATTEMPTS_PER_IP)),
    Setting("connection_attempt_window_s", "K2_CONNECTION_ATTEMPT_WINDOW_SECONDS", ATTEMPT_WINDOW_S, "float",
            "0.1 .. 3600 seconds", "the window of K2_CONNECTION_ATTEMPTS_PER_WINDOW (Binance: 5 minutes)",
            _positive(0.1, 3600.0)),
    Setting("ssl_verify", "K2_SSL_VERIFY", True, "bool", "true or false",
            "verify the server certificate and host name (false only with a loud warning)"),
    Setting("ssl_ca_file", "K2_SSL_CA_FILE", None, "path", "unset or an existing PEM file",
            "extra CA bundle to trust (the simulator's CA in tests)",
            lambda v: v is None or Path(v).is_file()),
    Setting("connection_max_lifetime_s", "K2_CONNECTION_MAX_LIFETIME_SECONDS", 14_400.0, "float",
            "0.5 .. 86000 seconds", "rotate each connection (make-before-break) after this long",
            _positive(0.5, 86_000.0)),
    Setting("server_max_lifetime_s", "K2_SERVER_MAX_LIFETIME_SECONDS", BINANCE_MAX_CONNECTION_SECONDS,
            "float", "1 .. 86400 seconds",
            "the exchange's own connection limit; we rotate at 95 % of it at the latest",
            _positive(1.0, BINANCE_MAX_CONNECTION_SECONDS)),
    Setting("rotation_overlap_timeout_s", "K2_ROTATION_OVERLAP_TIMEOUT_SECONDS", 10.0, "float",
            "0.1 .. 300 seconds",
            "how long a replacement connection may take to overlap the old one before we switch anyway",
            _positive(0.1, 300.0)),
    Setting("ping_interval_s", "K2_PING_INTERVAL_SECONDS", 180.0, "float", "0.25 .. 3600 seconds",
            "client ping period (stays within Binance's 5 client frames per second)",
            _positive(0.25, 3600.0)),
    Setting("ping_timeout_s", "K2_PING_TIMEOUT_SECONDS", 10.0, "float", "0.05 .. 600 seconds",
            "pong deadline; a missed pong replaces the connection", _positive(0.05, 600.0)),
    Setting("health_timeout_s", "K2_HEALTH_CHECK_TIMEOUT_SECONDS", 30.0, "float", "0.1 .. 3600 seconds",
            "replace the connection after this long without a data message", _positive(0.1, 3600.0)),
    Setting("backoff_initial_s", "K2_BACKOFF_INITIAL_SECONDS", 1.0, "float", "0.01 .. 60 seconds",
            "first reconnect backoff step (exponential, full jitter)", _positive(0.01, 60.0)),
    Setting("backoff_max_s", "K2_BACKOFF_MAX_SECONDS", 60.0, "float", "0.01 .. 60 seconds",
            "reconnect backoff cap", _positive(0.01, 60.0)),
    Setting("max_frame_bytes", "K2_MAX_FRAME_BYTES", 1_048_576, "int", "1024 .. 16777216 bytes",
            "frames larger than this are counted as oversized and skipped (over 4x: refused unread, connection "
            "replaced)", _positive(1024, 16_777_216)),
    Setting("memory_sample_interval_s", "K2_MEMORY_SAMPLE_INTERVAL_SECONDS", 30.0, "float",
            "0.05 .. 3600 seconds", "RSS sampling period", _positive(0.05, 3600.0)),
    Setting("memory_window_s", "K2_MEMORY_WINDOW_SECONDS", 3600.0, "float", "1 .. 2592000 seconds",
            "sliding window of RSS samples the leak score fits a trend to", _positive(1.0, 2_592_000.0)),
    Setting("memory_warmup_s", "K2_MEMORY_WARMUP_SECONDS", 300.0, "float", "0 .. 86400 seconds",
            "RSS samples younger than this after start are ignored by the leak score",
            _positive(0.0, 86_400.0)),
    Setting("leak_reference_mb_per_hour", "K2_LEAK_REFERENCE_MB_PER_HOUR", 10.0, "float",
            "0.001 .. 1000000 MB/h",
            "steady RSS growth that scores 0.5 (5x scores ~1); scale by 86400/N on a compressed N-second day",
            _positive(0.001, 1e6)),
    Setting("tracemalloc", "K2_TRACEMALLOC", False, "bool", "true or false",
            "start tracemalloc at start-up (otherwise when the leak score first passes 0.5)"),
    Setting("test_leak_bytes_per_s", "K2_TEST_LEAK_BYTES_PER_SECOND", 0.0, "float", "0 .. 100000000",
            "TEST ONLY: retain this many bytes per second on purpose", _positive(0.0, 1e8)),
    Setting("serializer_cache_max_size", "K2_SERIALIZER_CACHE_MAX_SIZE", 10, "int", "1 .. 10000",
            "LRU bound of Avro serializers cached per subject", _positive(1, 10_000)),
    Setting("kafka_bootstrap_servers", "K2_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "str",
            "host:port[,host:port...]", "Kafka bootstrap servers",
            lambda v: all(re.match(r"^[^\s:,]+:\d{1,5}$", p.strip()) for p in v.split(","))),
    Setting("kafka_topic_prefix", "K2_KAFKA_TOPIC_PREFIX", "market.crypto.binance", "str",
            "1..200 chars of [a-zA-Z0-9._-]", "topics <prefix>.trades, .aggtrades, .bookticker, .depth",
            lambda v: bool(re.match(r"^[a-zA-Z0-9._-]{1,200}$", v))),
    Setting("kafka_topic_partitions", "K2_KAFKA_TOPIC_PARTITIONS", 3, "int", "1 .. 1000",
            "partitions of topics the streamer creates (key = symbol keeps per-symbol order)",
            _positive(1, 1000)),
    Setting("kafka_replication_factor", "K2_KAFKA_REPLICATION_FACTOR", 1, "int", "1 .. 10",
            "replication factor of topics the streamer creates", _positive(1, 10)),
    Setting("kafka_compression", "K2_KAFKA_COMPRESSION", "lz4", "str", "none, gzip, snappy, lz4 or zstd",
            "producer compression codec", lambda v: v in ("none", "gzip", "snappy", "lz4", "zstd")),
    Setting("kafka_stats_interval_s", "K2_KAFKA_STATS_INTERVAL_SECONDS", 1.0, "float", "0.1 .. 60 seconds",
            "how often the producer reports broker state (Kafka reachability for /readyz)",
            _positive(0.1, 60.0)),
    Setting("kafka_admin_timeout_s", "K2_KAFKA_ADMIN_TIMEOUT_SECONDS", 10.0, "float", "0.5 .. 300 seconds",
            "how long one check or creation of the topics at start may take before it is retried (with the "
            "reconnect backoff) and the failure logged", _positive(0.5, 300.0)),
    Setting("kafka_linger_s", "K2_KAFKA_LINGER_SECONDS", 0.002, "float", "0 .. 1 seconds",
            "how long the producer waits to batch messages: longer costs latency, shorter costs CPU per "
            "message at high rates; 2 ms keeps event -> ack p99 at 5 ms at low rates for 4 % more CPU at full "
            "speed than 5 ms (docs/performance.md)", _positive(0.0, 1.0)),
    Setting("kafka_topic_min_insync_replicas", "K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS", 0, "int",
            "0 (broker default) or 1 .. K2_KAFKA_REPLICATION_FACTOR",
            "min.insync.replicas of topics the streamer creates: with acks=all a write needs this many replicas "
            "(3 replicas, 2 in sync: one broker may fail without stopping writes)", _positive(0, 10)),
    Setting("kafka_topic_retention_hours", "K2_KAFKA_TOPIC_RETENTION_HOURS", 0.0, "float",
            "0 (broker default), -1 (forever) or 0.001 .. 876000 hours",
            "retention.ms of topics the streamer creates", lambda v: v in (0.0, -1.0) or 0.001 <= v <= 876_000.0),
    *KAFKA_CLIENT_SETTINGS,
    Setting("schema_registry_url", "K2_SCHEMA_REGISTRY_URL", "http://localhost:8081", "str",
            "an http(s):// URL, or mock://<name> for tests and local mode",
            "Confluent Schema Registry (a user:password@ in it is used as basic auth, never kept in the URL)",
            lambda v: v.startswith(("http://", "https://", "mock://"))),
    Setting("schema_registry_basic_auth", "K2_SCHEMA_REGISTRY_BASIC_AUTH", None, "str",
            "unset or user:password (never logged)",
            "Schema Registry basic auth (Confluent Cloud: API key:secret); prefer the _FILE form",
            lambda v: v is None or (":" in v and v.index(":") > 0), secret=True),
    Setting("schema_registry_basic_auth_file", "K2_SCHEMA_REGISTRY_BASIC_AUTH_FILE", None, "path",
            "unset or a readable file holding user:password", "Schema Registry basic auth from a file (a secret)",
            _optional_file),
    Setting("schema_registry_ca_location", "K2_SCHEMA_REGISTRY_CA_LOCATION", None, "path",
            "unset (the system's trust store) or an existing PEM file",
            "CA that signed an https:// Schema Registry's certificate", _optional_file),
    Setting("max_buffered_messages", "K2_MAX_BUFFERED_MESSAGES", 100_000, "int", "10 .. 10000000",
            "messages awaiting Kafka delivery before reading pauses (back-pressure)",
            _positive(10, 10_000_000)),
    Setting("shutdown_flush_timeout_s", "K2_SHUTDOWN_FLUSH_TIMEOUT_SECONDS", 30.0, "float",
            "0 .. 3600 seconds", "on SIGTERM, how long to wait for Kafka to take every buffered message",
            _positive(0.0, 3600.0)),
    Setting("metrics_host", "K2_METRICS_HOST", "127.0.0.1", "str", "a host name or IP address",
            "bind address of /metrics, /healthz, /readyz", lambda v: bool(v.strip())),
    Setting("metrics_port", "K2_METRICS_PORT", 8000, "int", "0 .. 65535 (0 = any free port)",
            "port of /metrics, /healthz, /readyz", _positive(0, 65535)),
    Setting("http_request_timeout_s", "K2_HTTP_REQUEST_TIMEOUT_SECONDS", 10.0, "float", "0.1 .. 3600 seconds",
            "time a client has to send a whole request to that port (line, headers, body): 408 after it, or the "
            "connection closed when nothing came", _positive(0.1, 3600.0)),
    Setting("http_max_connections", "K2_HTTP_MAX_CONNECTIONS", 64, "int", "1 .. 10000",
            "connections that port serves at once; more are answered 503 and closed", _positive(1, 10_000)),
    Setting("instance", "K2_INSTANCE", "blue", "str", "1..32 chars [a-z0-9_-], e.g. blue or green",
            "instance label on every metric and record", lambda v: bool(_INSTANCE.match(v))),
    Setting("shard_index", "K2_SHARD_INDEX", 0, "int", f"0 .. K2_SHARD_COUNT - 1 (at most {MAX_SHARDS - 1})",
            "this streamer's shard: it streams the selected symbols whose stable hash falls in it "
            "(streamer/shards.py, docs/sharding.md)", _positive(0, MAX_SHARDS - 1)),
    Setting("shard_count", "K2_SHARD_COUNT", 1, "int", f"1 .. {MAX_SHARDS}",
            "how many streamers split the market (1 = this one streams every selected symbol)",
            _positive(1, MAX_SHARDS)),
    Setting("start_mode", "K2_START_MODE", "active", "str", "active or standby",
            "standby = connect and buffer without producing until POST /handover/release (blue-green)",
            lambda v: v in ("active", "standby")),
    Setting("handover_buffer_messages", "K2_HANDOVER_BUFFER_MESSAGES", 200_000, "int", "100 .. 10000000",
            "messages a standby instance keeps (newest) for a handover", _positive(100, 10_000_000)),
    Setting("handover_standby_max_s", "K2_HANDOVER_STANDBY_MAX_SECONDS", 1800.0, "float",
            "0 .. 604800 seconds (0 = no limit)",
            "/readyz fails once the instance has been in standby this long without a release (it produces "
            "nothing); keep it above a deployment's ready + dual-operation time", _positive(0.0, 604_800.0)),
    Setting("handover_mode_file", "K2_HANDOVER_MODE_FILE", None, "path", "unset or a path in an existing folder",
            "where the instance records its handover mode (active/standby) at every change; at start a mode "
            "recorded there wins over K2_START_MODE, so a restarted container resumes the mode it had",
            lambda v: v is None or Path(v).parent.is_dir()),
    Setting("handover_token", "K2_HANDOVER_TOKEN", None, "str", "unset, empty (= unset) or 16..1024 characters",
            "shared token the POST /handover/* endpoints require (Authorization: Bearer <token>); unset = those "
            "endpoints refuse (403). The deploy tooling sets it; prefer the _FILE form",
            lambda v: v is None or v == "" or 16 <= len(v) <= 1024, secret=True),
    Setting("handover_token_file", "K2_HANDOVER_TOKEN_FILE", None, "path", "unset or a readable file",
            "the handover token from a file (a Docker or Kubernetes secret)", _optional_file),
    Setting("log_level", "K2_LOG_LEVEL", "INFO", "str", "DEBUG, INFO, WARNING or ERROR", "log level",
            lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR")),
)

CONFIG_FILE_ENV = "K2_CONFIG_FILE"


@dataclass(frozen=True)
class StreamerConfig:
    ws_url: str
    symbols: tuple[str, ...]
    streams: tuple[str, ...]
    rest_url: str
    symbol_refresh_s: float
    binance_api_key: str | None = field(repr=False)  # K2_BINANCE_API_KEY or its _FILE; never logged
    rest_weight_limit: int
    rest_weight_share: float
    rest_weight_window_s: float
    rest_timeout_s: float
    gap_repair: bool
    gap_repair_deadline_s: float
    gap_repair_hold_s: float
    rest_retry_s: float
    depth_sync: bool
    depth_snapshot_limit: int
    streams_per_connection: int
    connection_attempts_per_window: int
    connection_attempt_window_s: float
    ssl_verify: bool
    ssl_ca_file: str | None
    connection_max_lifetime_s: float
    server_max_lifetime_s: float
    rotation_overlap_timeout_s: float
    ping_interval_s: float
    ping_timeout_s: float
    health_timeout_s: float
    backoff_initial_s: float
    backoff_max_s: float
    max_frame_bytes: int
    memory_sample_interval_s: float
    memory_window_s: float
    memory_warmup_s: float
    leak_reference_mb_per_hour: float
    tracemalloc: bool
    test_leak_bytes_per_s: float
    serializer_cache_max_size: int
    kafka_bootstrap_servers: str
    kafka_topic_prefix: str
    kafka_topic_partitions: int
    kafka_replication_factor: int
    kafka_compression: str
    kafka_stats_interval_s: float
    kafka_admin_timeout_s: float
    kafka_linger_s: float
    kafka_topic_min_insync_replicas: int
    kafka_topic_retention_hours: float
    kafka_client: KafkaClientConfig
    schema_registry_url: str
    schema_registry: RegistryAuth
    max_buffered_messages: int
    shutdown_flush_timeout_s: float
    metrics_host: str
    metrics_port: int
    http_request_timeout_s: float
    http_max_connections: int
    instance: str
    shard_index: int
    shard_count: int
    start_mode: str
    handover_buffer_messages: int
    handover_standby_max_s: float
    handover_mode_file: str | None
    handover_token: str | None = field(repr=False)  # K2_HANDOVER_TOKEN or its _FILE; never logged
    log_level: str

    @property
    def records(self) -> tuple[str, ...]:
        """The records this streamer writes (each its own topic): its streams', and depth snapshots with depth."""
        snapshots = [DEPTH_SNAPSHOT.name] if "depth" in self.streams and self.depth_sync else []
        return (*self.streams, *snapshots)

    @property
    def shard(self) -> Shard:
        return Shard(self.shard_index, self.shard_count)

    @property
    def selector(self) -> Selector:
        """K2_BINANCE_SYMBOLS as a selector (streamer/symbols.py): an explicit list or quote:<ASSET>."""
        selector = parse_selector(self.symbols)
        return selector if not isinstance(selector, str) else Explicit(self.symbols)

    @property
    def rotation_after_s(self) -> float:
        """Rotate at the configured lifetime, but always before the exchange's own limit."""
        return min(self.connection_max_lifetime_s, 0.95 * self.server_max_lifetime_s)

    @property
    def rotation_reason(self) -> str:
        scheduled = self.connection_max_lifetime_s <= 0.95 * self.server_max_lifetime_s
        return "scheduled" if scheduled else "server_limit"


@dataclass(frozen=True)
class KafkaClientConfig:
    """Connection and security settings shared by every Kafka client; `librdkafka()` is the dict to merge
    under a client's own settings. The password is kept out of repr (and so out of every log)."""

    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets (ssl.key.password)

    def librdkafka(self) -> dict[str, str]:
        conf: dict[str, str] = dict(self.extra)
        conf["security.protocol"] = self.security_protocol.value
        if self.security_protocol.uses_sasl:
            assert self.sasl_mechanism is not None and self.sasl_username and self.sasl_password
            conf.update({"sasl.mechanism": self.sasl_mechanism.value, "sasl.username": self.sasl_username,
                         "sasl.password": self.sasl_password})
        for key, value in (("ssl.ca.location", self.ssl_ca_location),
                           ("ssl.certificate.location", self.ssl_certificate_location),
                           ("ssl.key.location", self.ssl_key_location)):
            if value:
                conf[key] = value
        return conf

    def describe(self) -> str:
        """For logs: protocol, mechanism, user, TLS files; never the password."""
        parts = [self.security_protocol.value]
        if self.sasl_mechanism is not None:
            parts.append(f"{self.sasl_mechanism.value} as {self.sasl_username}")
        if self.ssl_ca_location:
            parts.append(f"CA {self.ssl_ca_location}")
        if self.ssl_certificate_location:
            parts.append(f"client certificate {self.ssl_certificate_location}")
        if self.extra:
            parts.append("extra: " + ", ".join(name for name, _ in self.extra))
        return ", ".join(parts)


@dataclass(frozen=True)
class RegistryAuth:
    """Schema Registry credentials and CA; `client_conf()` is what SchemaRegistryClient takes beside the url."""

    basic_auth: str | None = field(default=None, repr=False)
    ca_location: str | None = None

    def client_conf(self) -> dict[str, str]:
        conf: dict[str, str] = {}
        if self.basic_auth:
            conf["basic.auth.user.info"] = self.basic_auth
        if self.ca_location:
            conf["ssl.ca.location"] = self.ca_location
        return conf


def env_name(field_name: str) -> str:
    """The environment variable of a setting, by its StreamerConfig field (for tools that configure a streamer,
    so each name is written once, here)."""
    for setting in SETTINGS:
        if setting.field == field_name:
            return setting.env
    raise KeyError(f"no streamer setting for field {field_name!r}")


def describe_settings() -> list[dict[str, str]]:
    """Every setting: env name, default, allowed range, meaning (the config reference is built from it)."""
    return [
        {
            "env": s.env,
            "default": _format_default(s.default),
            "type": s.kind,
            "allowed": s.allowed,
            "meaning": s.meaning,
        }
        for s in SETTINGS
    ]


def _format_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _convert(setting: Setting, raw: Any) -> Any:
    """Turn a raw env string or YAML value into the setting's type, or raise ConfigError."""
    where = f"{setting.env}={setting.shown(raw)}"
    try:
        if setting.kind in ("str", "path"):
            if raw is None:
                return None
            text = str(raw).strip()
            if setting.kind == "path" and text == "":
                return None
            return text
        if setting.kind == "list":
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if setting.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a boolean")
        if setting.kind == "int":
            if isinstance(raw, bool):
                raise ValueError("not an integer")
            return int(str(raw).strip().replace("_", ""))
        if setting.kind == "float":
            if isinstance(raw, bool):
                raise ValueError("not a number")
            value = float(str(raw).strip())
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("not a finite number")
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; allowed: {setting.allowed}") from None
    raise AssertionError(f"unknown kind {setting.kind}")


def _read_yaml(path_text: str) -> dict[str, Any]:
    path = Path(path_text)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}={path_text!r}: cannot read the file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}={path_text!r}: not valid YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}={path_text!r}: must hold a mapping of settings")
    by_name: dict[str, Any] = {s.env: s for s in SETTINGS} | {KAFKA_CLIENT_YAML_KEY: None}
    result: dict[str, Any] = {}
    for key, value in loaded.items():
        name = str(key).upper()
        if not name.startswith("K2_"):
            name = "K2_" + name
        if name not in by_name:
            known = ", ".join(sorted(by_name))
            raise ConfigError(f"{CONFIG_FILE_ENV}={path_text!r}: unknown setting {key!r}; known: {known}")
        result[name] = value
    return result


def _value(setting: Setting, env: Mapping[str, str], from_file: Mapping[str, Any]) -> Any:
    if setting.env in env:
        value = _convert(setting, env[setting.env])
    elif setting.env in from_file:
        value = _convert(setting, from_file[setting.env])
    else:
        value = setting.default
    if setting.check is not None and not setting.check(value):
        raise ConfigError(f"{setting.env}={setting.shown(value)} is out of range; allowed: {setting.allowed}")
    return value


def _read_secret_file(env_name: str, path: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{env_name}={path!r}: cannot read the file ({exc.strerror})") from None
    text = text.rstrip("\r\n")
    if not text or "\n" in text:
        raise ConfigError(f"{env_name}={path!r}: allowed: a file holding exactly one non-empty line")
    return text


def load_config(environ: Mapping[str, str] | None = None) -> StreamerConfig:
    """Build and validate the config; raise ConfigError naming the first bad setting."""
    env = os.environ if environ is None else environ
    from_file = _read_yaml(env[CONFIG_FILE_ENV]) if env.get(CONFIG_FILE_ENV) else {}
    client_fields = {s.field for s in KAFKA_CLIENT_SETTINGS}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.field not in client_fields:
            values[setting.field] = _value(setting, env, from_file)
    values["kafka_client"] = _kafka_client_config(env, from_file)
    values["schema_registry"] = _registry_auth(values)
    values["handover_token"] = _handover_token(values)
    values["rest_url"] = values["rest_url"] or default_rest_url(values["ws_url"])
    values["binance_api_key"] = _one_secret(values.pop("binance_api_key"), values.pop("binance_api_key_file"),
                                            "K2_BINANCE_API_KEY")
    config = StreamerConfig(**values)
    _check_relations(config)
    return config


def load_kafka_client_config(environ: Mapping[str, str] | None = None) -> KafkaClientConfig:
    """The Kafka client settings alone (K2_KAFKA_SECURITY_PROTOCOL, SASL, TLS, K2_KAFKA_CLIENT_*, and the
    same keys of the K2_CONFIG_FILE YAML) for the project's other Kafka clients: audit, bench, soak, Dagster."""
    env = os.environ if environ is None else environ
    from_file = _read_yaml(env[CONFIG_FILE_ENV]) if env.get(CONFIG_FILE_ENV) else {}
    return _kafka_client_config(env, from_file)


def kafka_client_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The Kafka client settings among `environ` (K2_KAFKA_SECURITY_PROTOCOL, SASL, TLS, K2_KAFKA_CLIENT_*):
    what a tool hands to a streamer it starts with an otherwise clean K2_* environment (k2 soak)."""
    names = {s.env for s in KAFKA_CLIENT_SETTINGS}
    return {k: v for k, v in environ.items() if k in names or k.startswith(KAFKA_CLIENT_ENV_PREFIX)}


def _one_secret(inline: str | None, path: str | None, inline_env: str) -> str | None:
    """A secret given inline (`inline_env`) or in a file (`inline_env`_FILE), never both; None when neither."""
    if inline and path:
        raise ConfigError(f"{inline_env} and {inline_env}_FILE are both set; allowed: one of them")
    return _read_secret_file(f"{inline_env}_FILE", path) if path else (inline or None)


def _handover_token(values: dict[str, Any]) -> str | None:
    token = _one_secret(values.pop("handover_token"), values.pop("handover_token_file"), "K2_HANDOVER_TOKEN")
    if token is not None and not 16 <= len(token) <= 1024:
        raise ConfigError("K2_HANDOVER_TOKEN_FILE: the token is out of range; allowed: 16..1024 characters")
    return token


def _registry_auth(values: dict[str, Any]) -> RegistryAuth:
    """The registry's credentials and CA. `user:password@` inside K2_SCHEMA_REGISTRY_URL is taken out of the URL
    and used as basic auth, so no client library can log it with the URL."""
    path = values.pop("schema_registry_basic_auth_file")
    inline = _one_secret(values.pop("schema_registry_basic_auth"), path, "K2_SCHEMA_REGISTRY_BASIC_AUTH")
    ca = values.pop("schema_registry_ca_location")
    if path and inline and (":" not in inline or inline.index(":") == 0):
        raise ConfigError(f"K2_SCHEMA_REGISTRY_BASIC_AUTH_FILE={path!r}: allowed: a file holding user:password")
    values["schema_registry_url"], in_url = split_credentials(values["schema_registry_url"])
    if in_url is not None and inline is not None:
        raise ConfigError(f"K2_SCHEMA_REGISTRY_URL={mask_credentials(values['schema_registry_url'])} carries "
                          "user:password and K2_SCHEMA_REGISTRY_BASIC_AUTH(_FILE) is set too; allowed: one of them")
    return RegistryAuth(basic_auth=inline or in_url, ca_location=ca)


def _pass_through(env: Mapping[str, str], from_file: Mapping[str, Any]) -> dict[str, str]:
    """librdkafka settings from K2_KAFKA_CLIENT_<NAME> (NAME upper case, dots as underscores) and from the
    YAML map K2_KAFKA_CLIENT; the environment wins. Protected names are refused with the reason."""
    found: dict[str, tuple[str, str]] = {}  # librdkafka name -> (where, value)
    mapping = from_file.get(KAFKA_CLIENT_YAML_KEY) or {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}: {KAFKA_CLIENT_YAML_KEY} must be a mapping of librdkafka settings "
                          "(e.g. socket.keepalive.enable: true)")
    for key, value in mapping.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        found[str(key).strip().lower()] = (f"{KAFKA_CLIENT_YAML_KEY}.{key}", text)
    for key, value in env.items():
        if key.startswith(KAFKA_CLIENT_ENV_PREFIX):
            name = key.removeprefix(KAFKA_CLIENT_ENV_PREFIX).lower().replace("_", ".")
            found[name] = (key, value)
    for name, (where, _) in found.items():
        if not _LIBRDKAFKA_NAME.match(name):
            raise ConfigError(f"{where}: {name!r} is not a librdkafka setting name; allowed: lower-case words "
                              "joined by dots (env: K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLE)")
        if name in PROTECTED_CLIENT_SETTINGS:
            raise ConfigError(f"{where}: {name} cannot be overridden ({PROTECTED_CLIENT_SETTINGS[name]}); allowed: "
                              "any other librdkafka setting")
    return {name: value for name, (_, value) in sorted(found.items())}


def _kafka_client_config(env: Mapping[str, str], from_file: Mapping[str, Any]) -> KafkaClientConfig:
    raw = {s.field: _value(s, env, from_file) for s in KAFKA_CLIENT_SETTINGS}
    protocol = SecurityProtocol(raw["kafka_security_protocol"])
    mechanism = SaslMechanism(raw["kafka_sasl_mechanism"]) if raw["kafka_sasl_mechanism"] else None
    password = _one_secret(raw["kafka_sasl_password"], raw["kafka_sasl_password_file"], "K2_KAFKA_SASL_PASSWORD")
    sasl_set = [name for name, value in (("K2_KAFKA_SASL_MECHANISM", mechanism),
                                         ("K2_KAFKA_SASL_USERNAME", raw["kafka_sasl_username"]),
                                         ("K2_KAFKA_SASL_PASSWORD(_FILE)", password)) if value]
    if protocol.uses_sasl and len(sasl_set) < 3:
        raise ConfigError(f"K2_KAFKA_SECURITY_PROTOCOL={protocol.value} needs K2_KAFKA_SASL_MECHANISM, "
                          "K2_KAFKA_SASL_USERNAME and K2_KAFKA_SASL_PASSWORD or K2_KAFKA_SASL_PASSWORD_FILE; "
                          f"set: {', '.join(sasl_set) or 'none'}")
    if not protocol.uses_sasl and sasl_set:
        raise ConfigError(f"{', '.join(sasl_set)} set but K2_KAFKA_SECURITY_PROTOCOL={protocol.value}; allowed: "
                          "SASL settings only with SASL_PLAINTEXT or SASL_SSL (never silently unused)")
    tls_set = [name for name, value in (("K2_KAFKA_SSL_CA_LOCATION", raw["kafka_ssl_ca_location"]),
                                        ("K2_KAFKA_SSL_CERTIFICATE_LOCATION", raw["kafka_ssl_certificate_location"]),
                                        ("K2_KAFKA_SSL_KEY_LOCATION", raw["kafka_ssl_key_location"])) if value]
    if tls_set and not protocol.uses_tls:
        raise ConfigError(f"{', '.join(tls_set)} set but K2_KAFKA_SECURITY_PROTOCOL={protocol.value}; allowed: "
                          "TLS files only with SSL or SASL_SSL (never silently unused)")
    if bool(raw["kafka_ssl_certificate_location"]) != bool(raw["kafka_ssl_key_location"]):
        raise ConfigError("K2_KAFKA_SSL_CERTIFICATE_LOCATION and K2_KAFKA_SSL_KEY_LOCATION go together; allowed: "
                          "both (mTLS) or neither")
    config = KafkaClientConfig(
        security_protocol=protocol, sasl_mechanism=mechanism, sasl_username=raw["kafka_sasl_username"],
        sasl_password=password, ssl_ca_location=raw["kafka_ssl_ca_location"],
        ssl_certificate_location=raw["kafka_ssl_certificate_location"],
        ssl_key_location=raw["kafka_ssl_key_location"], extra=tuple(_pass_through(env, from_file).items()),
    )
    _check_with_librdkafka(config)
    return config


def _check_with_librdkafka(config: KafkaClientConfig) -> None:
    """Let librdkafka itself judge names, values and TLS files now (exit 2), not at the first connection.
    A client without bootstrap.servers opens no connection."""
    from confluent_kafka import KafkaException, Producer

    try:
        Producer({**config.librdkafka(), "log_level": 0})
    except KafkaException as exc:
        detail = exc.args[0].str() if exc.args else str(exc)
        if config.sasl_password:
            detail = detail.replace(config.sasl_password, "***")
        origin = {"security.protocol": "K2_KAFKA_SECURITY_PROTOCOL", "ssl.ca.location": "K2_KAFKA_SSL_CA_LOCATION",
                  "ssl.certificate.location": "K2_KAFKA_SSL_CERTIFICATE_LOCATION",
                  "ssl.key.location": "K2_KAFKA_SSL_KEY_LOCATION", "sasl.mechanism": "K2_KAFKA_SASL_MECHANISM"}
        origin.update({name: KAFKA_CLIENT_ENV_PREFIX + name.upper().replace(".", "_") for name, _ in config.extra})
        named = [env for name, env in origin.items() if f'"{name}"' in detail or f"{name} " in detail]
        where = " or ".join(named) if named else "the Kafka client settings"
        raise ConfigError(f"{where}: librdkafka refused it: {detail}; allowed: see librdkafka's CONFIGURATION.md"
                          ) from None


# The rules between settings that _check_relations enforces, for the configuration reference.
RELATIONS: tuple[str, ...] = (
    "the connections `K2_BINANCE_SYMBOLS` x `K2_BINANCE_STREAMS` need (streams / `K2_STREAMS_PER_CONNECTION`, "
    "rounded up) fit `K2_CONNECTION_ATTEMPTS_PER_WINDOW` (otherwise the pool could not even open)",
    "an `http://` `K2_BINANCE_REST_URL` (no TLS) only together with `K2_SSL_VERIFY=false`",
    "`K2_BACKOFF_INITIAL_SECONDS` <= `K2_BACKOFF_MAX_SECONDS`",
    "`K2_SHARD_INDEX` < `K2_SHARD_COUNT`; with an explicit `K2_BINANCE_SYMBOLS` the shard owns at least one",
    "a `ws://` `K2_BINANCE_WS_URL` (no TLS) only together with `K2_SSL_VERIFY=false`: never a silent downgrade",
    "`K2_PING_TIMEOUT_SECONDS` < `K2_PING_INTERVAL_SECONDS` (lowering the interval below 10 s needs a lower "
    "timeout too)",
    "`K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS` <= `K2_KAFKA_REPLICATION_FACTOR` (otherwise no write could succeed)",
    "`K2_KAFKA_SECURITY_PROTOCOL` SASL_PLAINTEXT or SASL_SSL needs `K2_KAFKA_SASL_MECHANISM`, "
    "`K2_KAFKA_SASL_USERNAME` and one of `K2_KAFKA_SASL_PASSWORD` / `K2_KAFKA_SASL_PASSWORD_FILE`; SASL settings "
    "with another protocol, or TLS files (`K2_KAFKA_SSL_CA_LOCATION`, `K2_KAFKA_SSL_CERTIFICATE_LOCATION`, "
    "`K2_KAFKA_SSL_KEY_LOCATION`) with PLAINTEXT or SASL_PLAINTEXT, are refused (never "
    "silently unused)",
    "`K2_KAFKA_SSL_CERTIFICATE_LOCATION` and `K2_KAFKA_SSL_KEY_LOCATION` go together (mTLS)",
    "a password and its `_FILE` form are never both set (`K2_KAFKA_SASL_PASSWORD`, "
    "`K2_SCHEMA_REGISTRY_BASIC_AUTH`)",
    "librdkafka pass-through: `K2_KAFKA_CLIENT_<NAME>` (the librdkafka name upper-cased, dots as underscores: "
    "`K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLE=true`) or, in the YAML file, a map `K2_KAFKA_CLIENT: "
    "{socket.keepalive.enable: true}` (the environment wins); applies to every Kafka client of the project; "
    "librdkafka checks names and values at start-up (exit 2); refused because a guarantee or a K2 setting owns "
    "them: " + ", ".join(f"`{name}`" for name in PROTECTED_CLIENT_SETTINGS),
)


def default_rest_url(ws_url: str) -> str:
    """The REST API of the exchange a WebSocket URL belongs to: Binance's for binance.com (stream.binance.com
    and api.binance.com are different hosts), else the same host and port (one endpoint serves both)."""
    parts = urllib.parse.urlsplit(ws_url)
    host = parts.hostname or ""
    if host == "binance.com" or host.endswith(".binance.com"):
        return "https://api.binance.com"
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def _check_relations(config: StreamerConfig) -> None:
    if config.shard_index >= config.shard_count:
        raise ConfigError(
            f"K2_SHARD_INDEX={config.shard_index} is not below K2_SHARD_COUNT={config.shard_count}; allowed: "
            f"0 .. {config.shard_count - 1}"
        )
    if isinstance(config.selector, Explicit):
        owned = select((), config.selector, config.shard)
        if not owned:
            raise ConfigError(
                f"K2_SHARD_INDEX={config.shard_index} of K2_SHARD_COUNT={config.shard_count} selects none of the "
                f"{len(config.symbols)} symbols of K2_BINANCE_SYMBOLS; allowed: a shard that owns at least one "
                "(fewer shards, or more symbols)"
            )
        streams = len(owned) * len(config.streams)
        slots = -(-streams // config.streams_per_connection)
        if slots > config.connection_attempts_per_window:
            raise ConfigError(
                f"K2_BINANCE_SYMBOLS x K2_BINANCE_STREAMS = {streams} streams need {slots} connections of "
                f"K2_STREAMS_PER_CONNECTION={config.streams_per_connection}; allowed: at most "
                f"K2_CONNECTION_ATTEMPTS_PER_WINDOW={config.connection_attempts_per_window} connections"
            )
    if config.ws_url.startswith("ws://") and config.ssl_verify:
        # Never a silent downgrade: plaintext has to be asked for as loudly as an unverified certificate.
        raise ConfigError(
            f"K2_BINANCE_WS_URL={config.ws_url} is not encrypted; allowed: a wss:// URL, or ws:// together with "
            "K2_SSL_VERIFY=false (tests only)"
        )
    if config.rest_url.startswith("http://") and config.ssl_verify:
        raise ConfigError(
            f"K2_BINANCE_REST_URL={config.rest_url} is not encrypted; allowed: an https:// URL, or http:// "
            "together with K2_SSL_VERIFY=false (tests only)"
        )
    if config.backoff_initial_s > config.backoff_max_s:
        raise ConfigError(
            f"K2_BACKOFF_INITIAL_SECONDS={config.backoff_initial_s} is above K2_BACKOFF_MAX_SECONDS="
            f"{config.backoff_max_s}; allowed: initial <= max"
        )
    if config.kafka_topic_min_insync_replicas > config.kafka_replication_factor:
        raise ConfigError(
            f"K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS={config.kafka_topic_min_insync_replicas} is above "
            f"K2_KAFKA_REPLICATION_FACTOR={config.kafka_replication_factor}; allowed: 0 .. the replication factor"
        )
    if config.ping_timeout_s >= config.ping_interval_s:
        raise ConfigError(
            f"K2_PING_TIMEOUT_SECONDS={config.ping_timeout_s} must be below K2_PING_INTERVAL_SECONDS="
            f"{config.ping_interval_s}; allowed: 0.05 .. interval"
        )


def config_as_dict(config: StreamerConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}
