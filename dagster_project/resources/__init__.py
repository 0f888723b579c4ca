"""Resources: Prometheus, Alertmanager and the blue-green deployment backend.

Every URL may be left empty: it is then read from the local stack's `stack.json` (see `stack.py`), which is
what `make run` and the tests use; production sets them explicitly.
"""


from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from k2_ops.deploy.backend import DeploymentBackend
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.orchestrator import BlueGreenDeployment
from k2_ops.deploy.settings import DeploySettings, stack_url


# Its value is the resource itself, which has no type argument to name (dagster#32027).
class PrometheusResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    url: str = Field(default="", description="Prometheus base URL; empty = the local stack's")
    run_dir: str = Field(default="", description="local stack run folder (default: K2_RUN_DIR or .run)")
    timeout_seconds: float = 30.0
    scrape_interval_seconds: float = Field(default=15.0, description="the scrape interval Prometheus uses")

    def resolved_url(self) -> str:
        return self.url or stack_url("prometheus", self.run_dir)

    def client(self) -> Any:
        from k2_ops.validation.prometheus import PrometheusClient

        return PrometheusClient(self.resolved_url(), timeout_seconds=self.timeout_seconds)


# Its value is the resource itself, which has no type argument to name (dagster#32027).
class AlertmanagerResource(dg.ConfigurableResource):  # type: ignore[type-arg]
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


# Its value is the resource itself, which has no type argument to name (dagster#32027).
class DeploymentResource(dg.ConfigurableResource):  # type: ignore[type-arg]
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
    compose_env_file: str = Field(default="", description="--env-file of every compose command (the operator's "
                                  ".env); empty = the .env next to compose_file")
    dockerfile: str = Field(default="docker/streamer.Dockerfile", description="relative to build_context")
    build_context: str = Field(default=".", description="the repository checkout the streamer image is built from")
    python_image: str = Field(default="", description="the streamer Dockerfile's PYTHON_IMAGE build argument "
                              "(its base); empty = the Dockerfile's default, python:3.11-slim")
    docker: str = "docker"
    blue_host_port: int = 8001
    green_host_port: int = 8002
    instance_url_template: str = Field(
        default="http://{host_ip}:{host_port}",
        description="how the job reaches a color; inside the compose network: http://{service}:{container_port}")
    unhealthy_rollback_seconds: float = Field(
        default=120.0, description="deployment_health_sensor rolls back after /readyz failed this long")
    handover_token: str = Field(default="", description="token of the colors' POST /handover/* (a secret: give it "
                                "as dg.EnvVar('K2_HANDOVER_TOKEN')); empty = the process backend's token file")

    shard_count: int = Field(default=1, description="streamers splitting the market (K2_SHARD_COUNT); each shard "
                             "deploys on its own (the jobs' `shard`), with its own history")

    def settings(self, shard: int = 0) -> DeploySettings:
        return DeploySettings(**self.model_dump(exclude={"unhealthy_rollback_seconds"}), shard_index=shard)

    def folder(self) -> Path:
        return self.settings().folder()

    def deploy_dir(self) -> Path:
        return self.settings().deploy_dir()

    def history(self) -> DeploymentHistory:
        return self.settings().history()

    def common_env(self) -> dict[str, str]:
        return self.settings().common_env()

    def make_backend(self) -> DeploymentBackend:
        return self.settings().make_backend()

    def orchestrator(self, log: Callable[[str], None] | None = None, shard: int = 0) -> BlueGreenDeployment:
        return self.settings(shard).orchestrator(log)


__all__ = ["AlertmanagerResource", "DeploymentResource", "PrometheusResource"]
