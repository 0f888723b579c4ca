"""The streamer against the real Schema Registry behind TLS + basic auth (Debian's nginx as the reverse
proxy): it registers its schemas and streams; a wrong password is a clear, retried error that never shows
the password, and once the credentials match, everything is delivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k2_ops.stack.registry import CCOMPAT_PATH
from k2_ops.stack.tls_proxy import TlsProxyService
from tests.conftest import remember_secret
from tests.streamer.conftest import wait_for
from tests.streamer.test_rotation_and_faults import settle_and_compare

pytestmark = pytest.mark.slow

USER = "k2-streamer"
PASSWORD = remember_secret("Registry-s3cret-77b2")  # searched for in every file the run wrote (tests/conftest.py)
WRONG = remember_secret("Registry-wrong-0c1d")


@pytest.fixture
def registry_proxy(schema_registry: Any, tmp_path: Path) -> Iterator[TlsProxyService]:
    proxy = TlsProxyService(tmp_path / "proxy", schema_registry.base_url, {USER: PASSWORD})
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


def _registry_env(proxy: TlsProxyService, folder: Path, password: str) -> dict[str, str]:
    secret = folder / "registry-auth"
    secret.write_text(f"{USER}:{password}\n")
    return {"K2_SCHEMA_REGISTRY_URL": proxy.url + CCOMPAT_PATH, "K2_SCHEMA_REGISTRY_BASIC_AUTH_FILE": str(secret),
            "K2_SCHEMA_REGISTRY_CA_LOCATION": str(proxy.ca_file)}


def test_streamer_uses_a_registry_behind_tls_and_basic_auth(
    make_simulator: Any, make_streamer: Any, kafka: Any, registry_proxy: TlsProxyService, tmp_path: Path
) -> None:
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers, **_registry_env(registry_proxy, tmp_path, PASSWORD))
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 100, 30, "deliveries")
    result = settle_and_compare(streamer, sim, kafka.bootstrap_servers)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0
    subjects = registry_proxy.endpoint(USER).get(CCOMPAT_PATH + "/subjects", 5).read().decode()
    assert streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades-value" in subjects
    assert PASSWORD not in streamer.log_text()


def test_credentials_in_the_registry_url_work_and_never_reach_the_log(
    make_simulator: Any, make_streamer: Any, kafka: Any, registry_proxy: TlsProxyService
) -> None:
    """`https://user:password@host` in K2_SCHEMA_REGISTRY_URL: the streamer registers and streams, and the
    password is in no log line at DEBUG (the registry client's HTTP library logs every request with its URL)."""
    sim = make_simulator()
    url = registry_proxy.url.replace("https://", f"https://{USER}:{PASSWORD}@", 1) + CCOMPAT_PATH
    streamer = make_streamer(sim, kafka.bootstrap_servers, K2_SCHEMA_REGISTRY_URL=url, K2_LOG_LEVEL="DEBUG",
                             K2_SCHEMA_REGISTRY_CA_LOCATION=str(registry_proxy.ca_file))
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 100, 30, "deliveries")
    subjects = registry_proxy.endpoint(USER).get(CCOMPAT_PATH + "/subjects", 5).read().decode()
    assert streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades-value" in subjects
    assert PASSWORD not in streamer.log_text()


def test_wrong_registry_password_is_named_retried_and_nothing_is_lost_after_the_fix(
    make_simulator: Any, make_streamer: Any, kafka: Any, registry_proxy: TlsProxyService, tmp_path: Path
) -> None:
    sim = make_simulator()
    streamer = make_streamer(sim, kafka.bootstrap_servers, **_registry_env(registry_proxy, tmp_path, WRONG))
    wait_for(lambda: streamer.log_text().count("refused the credentials (HTTP 401)") >= 2, 30,
             "the 401 reported and retried")
    log = streamer.log_text()
    assert "check K2_SCHEMA_REGISTRY_BASIC_AUTH or K2_SCHEMA_REGISTRY_BASIC_AUTH_FILE" in log
    assert WRONG not in log and PASSWORD not in log
    status, body = streamer.get("/readyz")
    assert status == 503 and body["ready"] is False
    # The fix, on the server side: the registry now accepts the password the streamer was deployed with.
    registry_proxy.set_users({USER: WRONG})
    streamer.wait_ready(timeout_s=60)
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 100, 30, "deliveries after the fix")
    result = settle_and_compare(streamer, sim, kafka.bootstrap_servers)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0
    assert WRONG not in streamer.log_text()


def test_untrusted_registry_certificate_is_named(
    make_simulator: Any, make_streamer: Any, kafka: Any, registry_proxy: TlsProxyService, tmp_path: Path
) -> None:
    env = _registry_env(registry_proxy, tmp_path, PASSWORD)
    del env["K2_SCHEMA_REGISTRY_CA_LOCATION"]
    streamer = make_streamer(make_simulator(), kafka.bootstrap_servers, **env)
    wait_for(lambda: "its TLS certificate is not trusted" in streamer.log_text(), 30, "the untrusted CA reported")
    assert "set K2_SCHEMA_REGISTRY_CA_LOCATION" in streamer.log_text()
