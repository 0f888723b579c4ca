"""Prometheus and Alertmanager from the Debian packages, on free loopback ports with their own data dirs.

Streamer instances are scrape targets through `file_sd`: one JSON file per instance in
`<run>/prometheus/targets/`, so instances (blue, green, a soak's streamer) come and go without a restart.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from k2_ops.http_endpoint import Endpoint
from k2_ops.paths import rules_dir
from k2_ops.stack.http import http_json, http_ok
from k2_ops.stack.process import ServiceError, SupervisedService

STREAMER_JOB = "k2-streamer"


def _binary(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    raise ServiceError(
        f"{' or '.join(names)} not found (run `make setup`: apt-get install prometheus prometheus-alertmanager)"
    )


def prometheus_config(
    targets_dir: Path,
    rule_files: Sequence[Path],
    alertmanager_address: str | None,
    scrape_interval_s: float,
    evaluation_interval_s: float,
) -> dict[str, object]:
    config: dict[str, object] = {
        "global": {
            "scrape_interval": f"{scrape_interval_s:g}s",
            "evaluation_interval": f"{evaluation_interval_s:g}s",
            "scrape_timeout": f"{min(scrape_interval_s, 10):g}s",
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": STREAMER_JOB,
                # The streamer labels its own series with instance=<color>; keep that rather than host:port.
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}],
            }
        ],
    }
    if alertmanager_address:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_address]}]}]}
    return config


def scrape_targets_dir(run_dir: Path) -> Path:
    """The file_sd folder of the Prometheus of the stack in `run_dir`."""
    return run_dir / "prometheus" / "targets"


def write_scrape_target(targets_dir: Path, name: str, host_port: str, labels: dict[str, str] | None = None) -> Path:
    """Register a target (e.g. a streamer's metrics port). `labels` usually holds instance=<color>."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    # Write then rename: Prometheus watches the folder and must never read a half-written file.
    tmp.write_text(json.dumps([{"targets": [host_port], "labels": labels or {}}]))
    tmp.replace(path)
    return path


def remove_scrape_target(targets_dir: Path, name: str) -> None:
    (targets_dir / f"{name}.json").unlink(missing_ok=True)


def alertmanager_config(webhook_url: str | None = None, group_wait_s: float = 1.0) -> dict[str, object]:
    receiver: dict[str, object] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "instance"],
            "group_wait": f"{group_wait_s:g}s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    }


def _web_config_args(web_config: dict[str, Any] | None, home: Path) -> list[str]:
    """--web.config.file for Prometheus or Alertmanager (same exporter-toolkit format), written to `home`."""
    if web_config is None:
        return []
    path = home / "web.yml"
    path.write_text(yaml.safe_dump(web_config, sort_keys=False))
    return [f"--web.config.file={path}"]


def _ready(health_url: str, endpoint: Endpoint | None) -> bool:
    """/-/ready answers 2xx; through `endpoint` (credentials, CA) when the service requires them."""
    if endpoint is None:
        return http_ok(health_url)
    try:
        with endpoint.get("/-/ready", 2.0) as response:
            return 200 <= response.status < 300
    except OSError:  # URLError and HTTPError included
        return False


@dataclass
class AlertmanagerService(SupervisedService):
    run_dir: Path
    port: int = 0
    webhook_url: str | None = None
    ready_timeout_s: float = 30.0
    name: str = "alertmanager"
    # Alertmanager's --web.config.file (basic_auth_users, tls_server_config) and how we reach it then.
    web_config: dict[str, Any] | None = None
    client_endpoint: Endpoint | None = field(default=None, repr=False)
    start_seconds: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._allocate_ports("port")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if (self.web_config or {}).get("tls_server_config") else "http"
        return f"{scheme}://{self.address}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/-/ready"

    def start(self) -> float:
        began = time.monotonic()
        home = self.run_dir / "alertmanager"
        (home / "data").mkdir(parents=True, exist_ok=True)
        config_path = home / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(alertmanager_config(self.webhook_url)))
        binary = _binary("prometheus-alertmanager", "alertmanager")
        web_config = _web_config_args(self.web_config, home)
        self._launch(lambda: [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address={self.address}",
            # An empty cluster address turns gossip off, so nothing listens beyond our loopback port.
            "--cluster.listen-address=",
            *web_config,
        ], interval_s=0.1)
        self.start_seconds = time.monotonic() - began
        return self.start_seconds

    def firing_alerts(self) -> list[dict[str, object]]:
        alerts = http_json(f"{self.url}/api/v2/alerts?active=true&silenced=false&inhibited=false")
        return [alert for alert in alerts if alert.get("status", {}).get("state") == "active"]

    def is_ready(self) -> bool:
        return _ready(self.health_url, self.client_endpoint)


@dataclass
class PrometheusService(SupervisedService):
    run_dir: Path
    port: int = 0
    scrape_interval_s: float = 1.0
    evaluation_interval_s: float = 1.0
    alertmanager_address: str | None = None
    rule_files: list[Path] = field(default_factory=lambda: sorted(rules_dir().glob("*.yml")))
    retention: str = "15d"
    ready_timeout_s: float = 60.0
    name: str = "prometheus"
    # Prometheus' --web.config.file (basic_auth_users, tls_server_config) and how we reach it then.
    web_config: dict[str, Any] | None = None
    client_endpoint: Endpoint | None = field(default=None, repr=False)
    start_seconds: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._allocate_ports("port")

    @property
    def home(self) -> Path:
        return self.run_dir / "prometheus"

    @property
    def targets_dir(self) -> Path:
        return scrape_targets_dir(self.run_dir)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def url(self) -> str:
        scheme = "https" if (self.web_config or {}).get("tls_server_config") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/-/ready"

    def write_config(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        config = prometheus_config(self.targets_dir, self.rule_files, self.alertmanager_address,
                                   self.scrape_interval_s, self.evaluation_interval_s)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> float:
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        binary = _binary("prometheus")
        web_config = _web_config_args(self.web_config, self.home)
        self._launch(lambda: [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after rule or config changes
            # Firing alerts are re-sent at this period; the default (1 m) would hide, for a minute, any alert
            # that first fired before Alertmanager discovery settled (it takes ~5 s after start).
            f"--rules.alert.resend-delay={self.evaluation_interval_s:g}s",
            *web_config,
        ], interval_s=0.1)
        self.start_seconds = time.monotonic() - began
        return self.start_seconds

    def add_scrape_target(self, name: str, host_port: str, labels: dict[str, str] | None = None) -> Path:
        return write_scrape_target(self.targets_dir, name, host_port, labels)

    def remove_scrape_target(self, name: str) -> None:
        remove_scrape_target(self.targets_dir, name)

    def set_rule_files(self, rule_files: Sequence[Path]) -> None:
        self.rule_files = list(rule_files)
        self.write_config()
        self.reload()

    def reload(self) -> None:
        http_json(f"{self.url}/-/reload", method="POST")

    def query(self, promql: str) -> list[dict[str, object]]:
        from urllib.parse import urlencode

        answer = http_json(f"{self.url}/api/v1/query?{urlencode({'query': promql})}")
        if answer.get("status") != "success":
            raise ServiceError(f"Prometheus query failed: {answer}")
        # The HTTP API's instant query answer: {"status": "success", "data": {"result": [{...}, ...]}}.
        return cast(list[dict[str, object]], answer["data"]["result"])

    def active_targets(self) -> list[dict[str, object]]:
        answer = http_json(f"{self.url}/api/v1/targets?state=active")
        # {"status": "success", "data": {"activeTargets": [{...}, ...]}}
        return cast(list[dict[str, object]], answer["data"]["activeTargets"])

    def is_ready(self) -> bool:
        return _ready(self.health_url, self.client_endpoint)
