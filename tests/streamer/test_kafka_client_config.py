"""Kafka client settings: one declaration per setting, every client built from them, guarantees not
overridable, secrets never in a message, topic settings applied by a real Kafka."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from streamer.config import (
    PROTECTED_CLIENT_SETTINGS,
    ConfigError,
    SaslMechanism,
    SecurityProtocol,
    load_config,
    load_kafka_client_config,
)
from streamer.redact import mask_credentials
from streamer.sink import client_config, ensure_topics, producer_config, topic_config
from tests.conftest import remember_secret

SECRET = remember_secret("s3cret-Pa55word")
TOPIC_SETTING = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    client = ca.issue_cert("k2-client")
    files = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


def test_default_is_plaintext_and_the_guarantees_are_set() -> None:
    client = load_config({}).kafka_client
    assert client.security_protocol is SecurityProtocol.PLAINTEXT
    conf = producer_config("127.0.0.1:9", "blue", "lz4", 1000, 1.0, 0.002, client=client)
    assert conf["security.protocol"] == "PLAINTEXT"
    assert (conf["enable.idempotence"], conf["acks"], conf["message.timeout.ms"]) == (True, "all", 0)


def test_sasl_ssl_with_a_password_file(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")  # a Docker/Kubernetes secret often ends with a newline
    env = {
        "K2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "K2_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "K2_KAFKA_SASL_USERNAME": "k2-streamer", "K2_KAFKA_SASL_PASSWORD_FILE": str(secret_file),
        "K2_KAFKA_SSL_CA_LOCATION": str(tls_files["ca"]),
    }
    client = load_config(env).kafka_client
    assert client.sasl_mechanism is SaslMechanism.SCRAM_SHA_512
    conf = client_config("127.0.0.1:9", client)
    assert conf["sasl.password"] == SECRET
    assert (conf["security.protocol"], conf["sasl.username"], conf["ssl.ca.location"]) == (
        "SASL_SSL", "k2-streamer", str(tls_files["ca"]))
    # The same environment configures the other clients (audit, bench, Dagster).
    assert load_kafka_client_config(env) == client
    assert SECRET not in repr(client) and SECRET not in client.describe() and SECRET not in repr(load_config(env))


def test_mtls_client_certificate(tls_files: dict[str, Path]) -> None:
    client = load_kafka_client_config({
        "K2_KAFKA_SECURITY_PROTOCOL": "SSL", "K2_KAFKA_SSL_CA_LOCATION": str(tls_files["ca"]),
        "K2_KAFKA_SSL_CERTIFICATE_LOCATION": str(tls_files["cert"]), "K2_KAFKA_SSL_KEY_LOCATION": str(tls_files["key"]),
    })
    conf = client.librdkafka()
    assert conf["ssl.certificate.location"] == str(tls_files["cert"])
    assert conf["ssl.key.location"] == str(tls_files["key"])


def test_pass_through_from_env_and_yaml(tmp_path: Path) -> None:
    path = tmp_path / "streamer.yaml"
    path.write_text("K2_KAFKA_CLIENT:\n  socket.keepalive.enable: true\n  reconnect.backoff.max.ms: 5000\n")
    env = {"K2_CONFIG_FILE": str(path), "K2_KAFKA_CLIENT_RECONNECT_BACKOFF_MAX_MS": "3000",
           "K2_KAFKA_CLIENT_CLIENT_RACK": "use1-az1"}
    client = load_kafka_client_config(env)
    assert dict(client.extra) == {"socket.keepalive.enable": "true", "reconnect.backoff.max.ms": "3000",
                                  "client.rack": "use1-az1"}  # the environment wins over the file
    conf = producer_config("127.0.0.1:9", "blue", "lz4", 1000, 1.0, 0.002, client=client)
    assert conf["socket.keepalive.enable"] == "true" and conf["client.rack"] == "use1-az1"
    # The producer's own reconnect settings stay last, the pass-through feeds everything else.
    assert load_config(env).kafka_client == client


@pytest.mark.parametrize("name", ["enable.idempotence", "acks", "message.timeout.ms", "max.in.flight",
                                  "queue.buffering.max.messages", "sasl.password"])
def test_pass_through_refuses_what_a_guarantee_needs(name: str, tmp_path: Path) -> None:
    env_name = "K2_KAFKA_CLIENT_" + name.upper().replace(".", "_")
    with pytest.raises(ConfigError) as info:
        load_config({env_name: "1"})
    assert env_name in str(info.value) and "cannot be overridden" in str(info.value)
    assert PROTECTED_CLIENT_SETTINGS[name] in str(info.value)
    path = tmp_path / "s.yaml"
    path.write_text(f"K2_KAFKA_CLIENT:\n  {name}: 1\n")
    with pytest.raises(ConfigError, match=f"K2_KAFKA_CLIENT.{name}: {name} cannot be overridden"):
        load_kafka_client_config({"K2_CONFIG_FILE": str(path)})


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"K2_KAFKA_SECURITY_PROTOCOL": "TLS"}, "K2_KAFKA_SECURITY_PROTOCOL='TLS' is out of range; allowed: "
                                                "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"K2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "K2_KAFKA_SASL_MECHANISM": "GSSAPI"},
         "K2_KAFKA_SASL_MECHANISM='GSSAPI' is out of range; allowed: unset, or with a SASL_* protocol: PLAIN, "
         "SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"K2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "K2_KAFKA_SASL_MECHANISM": "PLAIN",
          "K2_KAFKA_SASL_USERNAME": "u"}, "needs K2_KAFKA_SASL_MECHANISM, K2_KAFKA_SASL_USERNAME and"),
        ({"K2_KAFKA_SASL_USERNAME": "u", "K2_KAFKA_SASL_PASSWORD": SECRET},
         "K2_KAFKA_SASL_USERNAME, K2_KAFKA_SASL_PASSWORD(_FILE) set but K2_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"K2_KAFKA_SSL_CA_LOCATION": __file__},
         "K2_KAFKA_SSL_CA_LOCATION set but K2_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"K2_KAFKA_SECURITY_PROTOCOL": "SSL", "K2_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
         "K2_KAFKA_SSL_CA_LOCATION='/nonexistent/ca.pem' is out of range"),
        ({"K2_KAFKA_SECURITY_PROTOCOL": "SSL", "K2_KAFKA_SSL_CA_LOCATION": __file__},
         "K2_KAFKA_SSL_CA_LOCATION: librdkafka refused it"),
        ({"K2_KAFKA_SECURITY_PROTOCOL": "SSL", "K2_KAFKA_SSL_CERTIFICATE_LOCATION": __file__},
         "K2_KAFKA_SSL_CERTIFICATE_LOCATION and K2_KAFKA_SSL_KEY_LOCATION go together"),
        ({"K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLEE": "true"},
         "K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLEE: librdkafka refused it: No such configuration property"),
        ({"K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLE": "maybe"}, "K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLE: librdkafka"),
        ({"K2_KAFKA_REPLICATION_FACTOR": "2", "K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "3"},
         "K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS=3 is above K2_KAFKA_REPLICATION_FACTOR=2"),
        ({"K2_KAFKA_TOPIC_RETENTION_HOURS": "-2"}, "K2_KAFKA_TOPIC_RETENTION_HOURS=-2.0 is out of range; allowed: 0"),
        ({"K2_SCHEMA_REGISTRY_BASIC_AUTH": SECRET}, "K2_SCHEMA_REGISTRY_BASIC_AUTH='***' is out of range; allowed: "
                                                    "unset or user:password"),
    ],
)
def test_bad_settings_name_the_setting_and_never_the_secret(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)


def test_password_and_password_file_are_exclusive_and_the_file_must_hold_one_line(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET)
    base = {"K2_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "K2_KAFKA_SASL_MECHANISM": "PLAIN",
            "K2_KAFKA_SASL_USERNAME": "u"}
    with pytest.raises(ConfigError, match="K2_KAFKA_SASL_PASSWORD and K2_KAFKA_SASL_PASSWORD_FILE are both set"):
        load_config({**base, "K2_KAFKA_SASL_PASSWORD": SECRET, "K2_KAFKA_SASL_PASSWORD_FILE": str(secret_file)})
    secret_file.write_text(f"{SECRET}\nsecond line\n")
    with pytest.raises(ConfigError, match=r"K2_KAFKA_SASL_PASSWORD_FILE=.*exactly one non-empty line") as info:
        load_config({**base, "K2_KAFKA_SASL_PASSWORD_FILE": str(secret_file)})
    assert SECRET not in str(info.value)


def test_the_streamer_exits_2_naming_the_setting() -> None:
    env = {"PATH": "/usr/bin:/bin", "K2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "K2_KAFKA_SASL_MECHANISM": "PLAIN",
           "K2_KAFKA_SASL_USERNAME": "u", "K2_KAFKA_SASL_PASSWORD": SECRET, "K2_KAFKA_CLIENT_ACKS": "1"}
    result = subprocess.run([sys.executable, "-m", "streamer"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "K2_KAFKA_CLIENT_ACKS: acks cannot be overridden" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_mask_credentials() -> None:
    assert mask_credentials(f"https://k2:{SECRET}@registry:8081/apis") == "https://k2:***@registry:8081/apis"
    assert mask_credentials(f"failed: GET http://tok{SECRET}@h/x and https://a:b:c@h2/") == \
        "failed: GET http://***@h/x and https://a:***@h2/"
    assert mask_credentials("http://127.0.0.1:8081/apis/ccompat/v7") == "http://127.0.0.1:8081/apis/ccompat/v7"


def test_registry_credentials_in_the_url_become_basic_auth_and_leave_the_url() -> None:
    config = load_config({"K2_SCHEMA_REGISTRY_URL": f"https://k2%40team:{SECRET}@registry.example:8443/apis/ccompat/v7"})
    assert config.schema_registry_url == "https://registry.example:8443/apis/ccompat/v7"
    assert config.schema_registry.client_conf() == {"basic.auth.user.info": f"k2@team:{SECRET}"}
    assert load_config({"K2_SCHEMA_REGISTRY_URL": "http://localhost:8081"}).schema_registry.basic_auth is None
    with pytest.raises(ConfigError) as refused:
        load_config({"K2_SCHEMA_REGISTRY_URL": f"https://k2:{SECRET}@registry:8081",
                     "K2_SCHEMA_REGISTRY_BASIC_AUTH": f"k2:{SECRET}"})
    assert "K2_SCHEMA_REGISTRY_BASIC_AUTH" in str(refused.value) and SECRET not in str(refused.value)


def test_no_logger_writes_a_url_password(capsys: pytest.CaptureFixture[str]) -> None:
    """The streamer's log set-up masks records of any logger: a library logging a URL with its password (as
    httpx does on every request) writes it masked."""
    from streamer.app import setup_logging
    from streamer.integrity import SequenceTracker
    from streamer.metrics import StreamerMetrics

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(load_config({}), StreamerMetrics("blue", SequenceTracker()))
        logging.getLogger("confluent_kafka.schema_registry").warning(
            "HTTP Request: POST %s 503", f"https://k2:{SECRET}@registry:8081/subjects")
        logging.getLogger("streamer").error("failed: %s", f"https://k2:{SECRET}@registry:8081")
    finally:
        root.handlers, level = saved
        root.setLevel(level)
    written = capsys.readouterr().err
    assert "HTTP Request: POST https://k2:***@registry:8081/subjects 503" in written
    assert "failed: https://k2:***@registry:8081" in written and SECRET not in written


def test_topics_get_min_insync_replicas_and_retention(kafka: Any) -> None:
    topic = f"k2-test-config-{uuid.uuid4().hex[:8]}"
    created = ensure_topics(kafka.bootstrap_servers, [topic], 2, 1, config=topic_config(1, 1.5),
                            client=load_kafka_client_config({}))
    assert created == [topic]
    admin = AdminClient(client_config(kafka.bootstrap_servers, None))
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    assert entries["min.insync.replicas"].value == "1"
    assert entries["min.insync.replicas"].source == TOPIC_SETTING  # set on the topic, not the broker default
    assert entries["retention.ms"].value == str(int(1.5 * 3_600_000))
    forever = f"{topic}-forever"
    ensure_topics(kafka.bootstrap_servers, [forever], 1, 1, config=topic_config(0, -1))
    resource = ConfigResource(ConfigResource.Type.TOPIC, forever)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    assert entries["retention.ms"].value == "-1" and entries["min.insync.replicas"].source != TOPIC_SETTING


def test_a_soaked_streamer_inherits_only_the_kafka_client_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from k2_ops.validation.soak import StreamerProcess

    monkeypatch.setenv("K2_INSTANCE", "operator-shell")
    monkeypatch.setenv("K2_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("K2_KAFKA_SASL_PASSWORD_FILE", "/run/secrets/kafka")
    monkeypatch.setenv("K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLE", "true")
    env = StreamerProcess(["true"], {"K2_INSTANCE": "soak"}, tmp_path / "log").env
    assert env["K2_INSTANCE"] == "soak"
    assert env["K2_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["K2_KAFKA_SASL_PASSWORD_FILE"] == "/run/secrets/kafka"
    assert env["K2_KAFKA_CLIENT_SOCKET_KEEPALIVE_ENABLE"] == "true"
