"""Resources: Prometheus, Alertmanager and the blue-green deployment backend.

Every URL may be left empty: it is then read from the local stack's `stack.json` (see `stack.py`), which is
what `make run` and the tests use; production sets them explicitly.
"""


from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.resources.stack import stack_run_dir, stack_url
from k2_ops.deploy.audit import audit_ids, read_trade_ids
from k2_ops.deploy.backend import DeploymentBackend
from k2_ops.deploy.compose import ComposeBackend, ComposeProject
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.local import streamer_common_env, trades_topic
from k2_ops.deploy.orchestrator import BlueGreenDeployment
from k2_ops.deploy.process_backend import ProcessBackend


class PrometheusResource(dg.ConfigurableResource):
    url: str = Field(default="", description="Prometheus base URL; empty = the local stack's")
    run_dir: str = Field(default="", description="local stack run folder (default: K2_RUN_DIR or .run)")
    timeout_seconds: float = 30.0
    scrape_interval_seconds: float = Field(default=15.0, description="the scrape interval Prometheus uses")

    def resolved_url(self) -> str:
        return self.url or stack_url("prometheus", self.run_dir)

    def client(self) -> Any:
        from k2_ops.validation.prometheus import PrometheusClient

        return PrometheusClient(self.resolved_url(), timeout_seconds=self.timeout_seconds)


class AlertmanagerResource(dg.ConfigurableResource):
    url: str = Field(default="", description="Alertmanager base URL; empty = the local stack's")
    run_dir: str = ""
    timeout_seconds: float = 10.0

    def resolved_url(self) -> str:
        return self.url or stack_url("alertmanager", self.run_dir)

    def client(self) -> Any:
        from k2_ops.validation.prometheus import AlertmanagerClient

        return AlertmanagerClient(self.resolved_url(), timeout_seconds=self.timeout_seconds)

    def firing_alerts(self) -> list[dict[str, Any]]:
        return list(self.client().alerts(active=True, silenced=False, inhibited=False))


class DeploymentResource(dg.ConfigurableResource):
    """The blue-green backend: `process` (local, tests) or `compose` (production, through the docker CLI)."""

    backend: str = Field(default="process", description="process or compose")
    run_dir: str = Field(default="", description="local stack run folder: PID files and logs of the streamers")
    state_dir: str = Field(default="", description="deployment history and instance state (default <run>/deploy)")
    # Streamer settings both colors share (process backend); empty = from the local stack.
    kafka_bootstrap_servers: str = ""
    ws_url: str = Field(default="", description="combined-stream URL; empty = the stack's simulator")
    ca_file: str = Field(default="", description="extra CA to trust; empty = the stack's simulator CA if any")
    schema_registry_url: str = ""
    topic_prefix: str = "market.crypto.binance"
    symbols: str = "btcusdt,ethusdt"
    streamer_env: dict[str, str] = Field(default_factory=dict, description="more K2_* settings for both colors")
    blue_port: int = Field(default=0, description="metrics port of blue (0 = any free port)")
    green_port: int = 0
    register_with_prometheus: bool = True
    prometheus_run_dir: str = Field(default="", description="stack folder whose Prometheus scrapes the colors "
                                    "(file_sd); default = run_dir")
    # compose backend
    compose_project: str = "k2"
    compose_file: str = "docker/compose.yaml"
    dockerfile: str = "docker/streamer.Dockerfile"
    build_context: str = "."
    docker: str = "docker"
    blue_host_port: int = 8001
    green_host_port: int = 8002
    instance_url_template: str = Field(
        default="http://{host_ip}:{host_port}",
        description="how the job reaches a color; inside the compose network: http://{service}:{container_port}")
    unhealthy_rollback_seconds: float = Field(
        default=120.0, description="deployment_health_sensor rolls back after /readyz failed this long")

    def folder(self) -> Path:
        return stack_run_dir(self.run_dir)

    def deploy_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else self.folder() / "deploy"

    def history(self) -> DeploymentHistory:
        return DeploymentHistory(self.deploy_dir() / "history.jsonl")

    def _stack_or(self, value: str, service: str, suffix: str = "") -> str:
        if value:
            return value
        return stack_url(service, self.run_dir) + suffix

    def common_env(self) -> dict[str, str]:
        bootstrap = self.kafka_bootstrap_servers or stack_url("kafka", self.run_dir).removeprefix("kafka://")
        ws_url = self._stack_or(self.ws_url, "simulator", "/stream")
        ca_file = self.ca_file
        if not ca_file and not self.ws_url:
            simulator_ca = self.folder() / "simulator" / "ca.pem"
            ca_file = str(simulator_ca) if simulator_ca.exists() else ""
        registry = self.schema_registry_url
        if not registry:
            try:
                registry = stack_url("schema-registry", self.run_dir)
            except LookupError:
                registry = "mock://k2-local"
        return streamer_common_env(bootstrap, ws_url, ca_file=ca_file or None, topic_prefix=self.topic_prefix,
                                   symbols=self.symbols, schema_registry_url=registry, extra=self.streamer_env)

    def make_backend(self) -> DeploymentBackend:
        if self.backend == "process":
            return ProcessBackend(
                self.folder(), self.deploy_dir(), self.common_env(),
                ports={"blue": self.blue_port, "green": self.green_port},
                prometheus_run_dir=(Path(self.prometheus_run_dir) if self.prometheus_run_dir else self.folder())
                if self.register_with_prometheus else None,
            )
        if self.backend == "compose":
            project = ComposeProject(
                project=self.compose_project, compose_file=Path(self.compose_file), docker=self.docker,
                build_context=Path(self.build_context), dockerfile=Path(self.dockerfile),
                host_ports={"blue": self.blue_host_port, "green": self.green_host_port},
                url_template=self.instance_url_template,
            )
            return ComposeBackend(project, self.deploy_dir())
        raise ValueError(f"DeploymentResource.backend={self.backend!r}; allowed: process or compose")

    def kafka_audit(self) -> Callable[[float], Any] | None:
        bootstrap = self.kafka_bootstrap_servers
        if not bootstrap:
            try:
                bootstrap = stack_url("kafka", self.run_dir).removeprefix("kafka://")
            except LookupError:
                return None
        topic = trades_topic(self.topic_prefix)
        return lambda since: audit_ids(read_trade_ids(bootstrap, topic, int(since * 1000)))

    def orchestrator(self, log: Callable[[str], None] | None = None) -> BlueGreenDeployment:
        return BlueGreenDeployment(self.make_backend(), self.history(), audit=self.kafka_audit(), log=log)


__all__ = ["AlertmanagerResource", "DeploymentResource", "PrometheusResource"]
