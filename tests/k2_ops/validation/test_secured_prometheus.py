"""A real Prometheus behind its own --web.config.file (basic auth + TLS from a per-run CA): the daily
validation and a soak read it with the K2_PROMETHEUS_* settings; a wrong password or an untrusted
certificate is a clear error that never quotes the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from dagster_project.resources import AlertmanagerResource
from k2_ops.http_endpoint import Endpoint, EndpointConfigError
from k2_ops.simulator import BackgroundSimulator, SimulatorConfig
from k2_ops.stack import AlertmanagerService, PrometheusService
from k2_ops.stack.tls_proxy import TlsProxyService
from k2_ops.validation import periods
from k2_ops.validation.backfill import create_blocks
from k2_ops.validation.profiles import get_profile
from k2_ops.validation.prometheus import (
    AlertmanagerClient,
    AlertmanagerError,
    PrometheusClient,
    PrometheusUnauthorized,
    PrometheusUnreachable,
)
from k2_ops.validation.soak import SoakConfig, SoakRunner
from k2_ops.validation.synthetic import SyntheticHistory, generate, history_days
from tests.conftest import remember_secret

USER = "k2-validator"
PASSWORD = remember_secret("Prom-s3cret-9f1c")  # searched for in every file the run wrote (tests/conftest.py)
SCRAPE_SECONDS = 60.0


@dataclass
class SecuredPrometheus:
    service: PrometheusService
    ca_file: Path
    secrets_dir: Path
    day_start: float

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        auth_file = self.secrets_dir / f"auth-{len(password)}-{password[:2]}"
        auth_file.write_text(f"{USER}:{password}\n")
        return {"K2_PROMETHEUS_BASIC_AUTH_FILE": str(auth_file), "K2_PROMETHEUS_CA_FILE": str(self.ca_file)}


def _web_config(root: Path) -> tuple[dict[str, Any], Path]:
    """--web.config.file content (TLS from a per-run CA, basic auth with a bcrypt hash) and the CA file."""
    ca = trustme.CA(organization_name="K2 test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = root / "ca.pem", root / "server.pem", root / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert_file))
    server.private_key_pem.write_to_path(str(key_file))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return ({"tls_server_config": {"cert_file": str(cert_file), "key_file": str(key_file)},
             "basic_auth_users": {USER: hashed}}, ca_file)


@pytest.fixture(scope="module")
def secured_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPrometheus]:
    root = tmp_path_factory.mktemp("secured-prometheus")
    web_config, ca_file = _web_config(root)
    day_start = history_days(1)
    history = SyntheticHistory(day_start, 1, "secured-day", scrape_interval=SCRAPE_SECONDS)
    service = PrometheusService(root, retention="3650d", web_config=web_config)
    service.client_endpoint = Endpoint(service.url, basic_auth=f"{USER}:{PASSWORD}", ca_file=str(ca_file))
    create_blocks(generate(history), service.data_dir, root / "openmetrics")
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    try:  # a start that fails its readiness wait leaves the process running: stopped here too
        service.start()
        yield SecuredPrometheus(service, ca_file, secrets_dir, day_start)
    finally:
        service.stop()


def test_daily_validation_reads_a_prometheus_with_basic_auth_and_tls(secured_prometheus: SecuredPrometheus) -> None:
    endpoint = Endpoint.from_env(secured_prometheus.service.url, "prometheus", secured_prometheus.env())
    client = PrometheusClient(secured_prometheus.service.url, endpoint=endpoint)
    assert client.url.startswith("https://") and client.ready()
    assert client.scrape_interval() is not None
    day = periods.validate_day(client, secured_prometheus.day_start, instance="secured-day",
                               scrape_interval=SCRAPE_SECONDS)
    assert day.checks and day.passed, day.failed()


def test_plain_http_client_without_credentials_is_refused(secured_prometheus: SecuredPrometheus) -> None:
    # The same server, no credentials: Prometheus answers 401 and the client says what to set.
    endpoint = Endpoint(secured_prometheus.service.url, ca_file=str(secured_prometheus.ca_file))
    with pytest.raises(PrometheusUnauthorized, match=r"refused the credentials \(401.*K2_PROMETHEUS_BASIC_AUTH"):
        PrometheusClient(secured_prometheus.service.url, endpoint=endpoint).query("up")


def test_wrong_password_is_a_clear_error_without_the_password(secured_prometheus: SecuredPrometheus) -> None:
    wrong = remember_secret("not-the-password-41")
    endpoint = Endpoint.from_env(secured_prometheus.service.url, "prometheus", secured_prometheus.env(wrong))
    client = PrometheusClient(secured_prometheus.service.url, endpoint=endpoint)
    with pytest.raises(PrometheusUnauthorized) as info:
        client.query("up")
    assert info.value.status == 401 and "refused the credentials" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(client) and wrong not in repr(endpoint)
    assert not client.ready()


def test_untrusted_certificate_is_named(secured_prometheus: SecuredPrometheus) -> None:
    env = secured_prometheus.env()
    del env["K2_PROMETHEUS_CA_FILE"]  # the system trust store does not know the per-run CA
    client = PrometheusClient(secured_prometheus.service.url,
                              endpoint=Endpoint.from_env(secured_prometheus.service.url, "prometheus", env))
    with pytest.raises(PrometheusUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        client.query("up")


def test_credentials_in_the_url_become_basic_auth_and_leave_the_url(secured_prometheus: SecuredPrometheus) -> None:
    port = secured_prometheus.service.port
    url = f"https://{USER}:{PASSWORD}@127.0.0.1:{port}/"
    env = {"K2_PROMETHEUS_CA_FILE": str(secured_prometheus.ca_file)}
    client = PrometheusClient(url, endpoint=Endpoint.from_env(url, "prometheus", env))
    assert client.url == f"https://127.0.0.1:{port}" and PASSWORD not in repr(client)
    assert client.query_value("vector(1)") == 1.0


def test_endpoint_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(EndpointConfigError, match="K2_PROMETHEUS_BASIC_AUTH='\\*\\*\\*' is malformed"):
        Endpoint.from_env("https://p:9090", "prometheus", {"K2_PROMETHEUS_BASIC_AUTH": "no-colon-secret"})
    with pytest.raises(EndpointConfigError, match="K2_ALERTMANAGER_CA_FILE='/nonexistent' is not a file"):
        Endpoint.from_env("https://a:9093", "alertmanager", {"K2_ALERTMANAGER_CA_FILE": "/nonexistent"})
    with pytest.raises(EndpointConfigError, match="K2_PROMETHEUS_HEADERS: 'X Bad' is malformed"):
        Endpoint.from_env("https://p:9090", "prometheus", {"K2_PROMETHEUS_HEADERS": "X Bad=1"})
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    endpoint = Endpoint.from_env("https://p:9090", "prometheus", {
        "K2_PROMETHEUS_BEARER_TOKEN_FILE": str(token), "K2_PROMETHEUS_HEADERS": "X-Scope-OrgID=tenant-1"})
    request = endpoint.request("/api/v1/query")
    assert request.get_header("Authorization") == "Bearer tok-123"
    assert request.get_header("X-scope-orgid") == "tenant-1"
    with pytest.raises(EndpointConfigError, match="basic auth and a bearer token are both set"):
        Endpoint.from_env("https://u:p@p:9090", "prometheus", {"K2_PROMETHEUS_BEARER_TOKEN_FILE": str(token)})


@pytest.mark.slow
def test_a_soak_reads_the_secured_prometheus(
    secured_prometheus: SecuredPrometheus, kafka: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short soak of a spawned streamer, scraped by the secured Prometheus, judged from it as well: the soak
    finds the credentials and the CA in K2_PROMETHEUS_* like `k2 soak` in production."""
    for name, value in secured_prometheus.env().items():
        monkeypatch.setenv(name, value)
    service = secured_prometheus.service
    instance = f"soak-{uuid.uuid4().hex[:6]}"
    config = SimulatorConfig(symbols=("btcusdt", "ethusdt"), rate_per_symbol=50.0, workdir=tmp_path / "sim")
    with BackgroundSimulator(config) as sim:
        soak = SoakConfig(
            get_profile("ci"), tmp_path / "soak", duration_seconds=20.0, criteria="12h", instance=instance,
            streamer_env={
                "K2_BINANCE_WS_URL": f"{sim.ws_base_url}/stream", "K2_SSL_CA_FILE": str(sim.ca_file),
                "K2_BINANCE_SYMBOLS": "btcusdt,ethusdt", "K2_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "K2_KAFKA_TOPIC_PREFIX": f"soak.{uuid.uuid4().hex[:8]}",
                "K2_SCHEMA_REGISTRY_URL": f"mock://{uuid.uuid4().hex[:8]}",
            },
            prometheus_url=service.url, prometheus_scrape_interval=service.scrape_interval_s,
        )
        result = SoakRunner(
            soak, progress=lambda _: None,
            on_ready=lambda host_port: service.add_scrape_target(instance, host_port, {"instance": instance}),
            on_finished=lambda: service.remove_scrape_target(instance),
        ).run()
    from_prometheus = [check for check in result.checks if check.name.startswith("prometheus_")]
    assert from_prometheus and "prometheus_evaluation" not in {check.name for check in from_prometheus}
    assert result.passed, [(c.name, c.evidence) for c in result.checks if not c.passed]


def test_alertmanager_clients_read_a_secured_alertmanager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sensors' Alertmanager resource and the validations' client, through K2_ALERTMANAGER_*."""
    web_config, ca_file = _web_config(tmp_path)
    service = AlertmanagerService(tmp_path, web_config=web_config)
    service.client_endpoint = Endpoint(service.url, basic_auth=f"{USER}:{PASSWORD}", ca_file=str(ca_file))
    try:
        service.start()
        auth_file = tmp_path / "auth-alertmanager"  # a secret file (tests/conftest.py SECRET_HOLDERS)
        auth_file.write_text(f"{USER}:{PASSWORD}\n")
        monkeypatch.setenv("K2_ALERTMANAGER_BASIC_AUTH_FILE", str(auth_file))
        monkeypatch.setenv("K2_ALERTMANAGER_CA_FILE", str(ca_file))
        assert service.url.startswith("https://")
        assert AlertmanagerClient(service.url).ready() and AlertmanagerClient(service.url).alerts() == []
        assert AlertmanagerResource(url=service.url).firing_alerts() == []  # what the alert sensors call
        wrong = remember_secret("am-wrong-password-5e")
        auth_file.write_text(f"{USER}:{wrong}\n")
        with pytest.raises(AlertmanagerError, match="answered 401") as info:
            AlertmanagerClient(service.url).alerts()
        assert wrong not in str(info.value) and PASSWORD not in str(info.value)
    finally:
        service.stop()


def test_bearer_token_and_tenant_header_through_a_gateway(tmp_path: Path) -> None:
    """Prometheus behind a Mimir/Grafana-Cloud-like gateway (nginx): a bearer token from a file and an
    X-Scope-OrgID header from K2_PROMETHEUS_HEADERS; without the header the gateway refuses (403)."""
    token = remember_secret(f"glc_{uuid.uuid4().hex}")
    upstream = PrometheusService(tmp_path / "upstream")
    gateway = TlsProxyService(tmp_path / "gateway", upstream.url, {}, bearer_token=token,
                              required_headers={"X-Scope-OrgID": "k2"})
    try:
        upstream.start()
        gateway.start()
        token_file = tmp_path / "token-secret"
        token_file.write_text(token + "\n")
        env = {"K2_PROMETHEUS_BEARER_TOKEN_FILE": str(token_file), "K2_PROMETHEUS_CA_FILE": str(gateway.ca_file),
               "K2_PROMETHEUS_HEADERS": "X-Scope-OrgID=k2"}
        client = PrometheusClient(gateway.url, endpoint=Endpoint.from_env(gateway.url, "prometheus", env))
        assert client.query_value("vector(7)") == 7.0
        no_tenant = {k: v for k, v in env.items() if k != "K2_PROMETHEUS_HEADERS"}
        with pytest.raises(PrometheusUnauthorized, match=r"\(403"):
            PrometheusClient(gateway.url, endpoint=Endpoint.from_env(gateway.url, "prometheus", no_tenant)).query("up")
        token_file.write_text("glc_wrong-token-0000\n")
        with pytest.raises(PrometheusUnauthorized, match=r"\(401") as info:
            PrometheusClient(gateway.url, endpoint=Endpoint.from_env(gateway.url, "prometheus", env)).query("up")
        assert token not in str(info.value)
    finally:
        gateway.stop()
        upstream.stop()
