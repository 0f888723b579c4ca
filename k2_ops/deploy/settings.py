"""How a deployment is wired: which backend, where its state lives, what both colors' streamers share.

Empty settings are read from the local stack's `<run>/stack.json` (written by `k2 stack up` / `make run`)
when used, so the Dagster resources and the `k2 deploy` CLI work against `make run` with no configuration,
and production sets them explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from k2_ops.deploy import handover
from k2_ops.deploy.audit import IdAudit, audit_ids, read_trade_ids
from k2_ops.deploy.backend import DeploymentBackend
from k2_ops.deploy.compose import ComposeBackend, ComposeProject
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.local import streamer_common_env, trades_topic
from k2_ops.deploy.orchestrator import BlueGreenDeployment
from k2_ops.deploy.process_backend import ProcessBackend
from k2_ops.paths import run_dir
from k2_ops.stack.local import read_state
from streamer.config import load_kafka_client_config
from streamer.shards import Shard

BACKENDS = ("process", "compose")


def stack_run_dir(configured: str | Path = "") -> Path:
    return Path(configured) if configured else run_dir()


def stack_url(service: str, configured_run_dir: str | Path = "") -> str:
    """The URL `service` ("prometheus", "alertmanager", "kafka", "simulator", ...) has in the running stack."""
    folder = stack_run_dir(configured_run_dir)
    state = read_state(folder)
    if state is None:
        raise LookupError(f"no local stack state in {folder / 'stack.json'}: start the stack (`make run`) or "
                          "configure the URL explicitly")
    services = state.get("services") or {}
    entry = services.get(service)
    if entry is None:
        raise LookupError(f"the local stack in {folder} has no {service!r} (it has: {', '.join(services)})")
    return str(entry["url"] if isinstance(entry, dict) else entry)


def stack_kafka_client_env(configured_run_dir: str | Path = "") -> dict[str, str]:
    """The K2_KAFKA_* settings of the running stack's Kafka (security, replication; files, never a password);
    empty for a plaintext single node or when no stack runs."""
    state = read_state(stack_run_dir(configured_run_dir)) or {}
    entry = (state.get("services") or {}).get("kafka") or {}
    return dict(entry.get("client_env") or {}) if isinstance(entry, dict) else {}


@dataclass(frozen=True)
class DeploySettings:
    backend: str = "process"
    run_dir: str = ""
    state_dir: str = ""
    kafka_bootstrap_servers: str = ""
    ws_url: str = ""
    ca_file: str = ""
    schema_registry_url: str = ""
    topic_prefix: str = "market.crypto.binance"
    symbols: str = "btcusdt,ethusdt"
    streamer_env: Mapping[str, str] = field(default_factory=dict)
    blue_port: int = 0
    green_port: int = 0
    register_with_prometheus: bool = True
    prometheus_run_dir: str = ""
    compose_project: str = "k2"
    compose_file: str = "docker/compose.yaml"
    # --env-file for every compose command; empty = compose's default (.env next to the compose file).
    compose_env_file: str = ""
    dockerfile: str = "docker/streamer.Dockerfile"  # relative to build_context
    build_context: str = "."
    # The streamer Dockerfile's PYTHON_IMAGE build argument ("" = its default, python:3.11-slim); where no
    # image registry is reachable, the local base `k2 images build --local-bases` made.
    python_image: str = ""
    docker: str = "docker"
    blue_host_port: int = 8001
    green_host_port: int = 8002
    instance_url_template: str = "http://{host_ip}:{host_port}"
    # The colors' POST /handover/* token; empty = K2_HANDOVER_TOKEN(_FILE) of this process, else (process
    # backend) the deploy folder's token file.
    handover_token: str = field(default="", repr=False)
    # The market split into shard_count streamers (K2_SHARD_COUNT); shard_index is the one deployed here.
    shard_count: int = 1
    shard_index: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; allowed: {' or '.join(BACKENDS)}")
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard={self.shard_index}; allowed: 0 .. {self.shard_count - 1} (shard_count "
                             f"{self.shard_count})")
        if self.backend == "compose" and self.shard_count > 1:
            raise ValueError("the compose backend deploys one shard per compose project: give each shard its own "
                             "compose_project and host ports, with shard_count 1 and K2_SHARD_INDEX/K2_SHARD_COUNT "
                             "in its env file (docker/README.md)")

    @property
    def shard(self) -> Shard:
        return Shard(self.shard_index, self.shard_count)

    def for_shard(self, index: int) -> DeploySettings:
        """The same deployment for shard `index` (its own history, state and processes)."""
        return replace(self, shard_index=index)

    def folder(self) -> Path:
        return stack_run_dir(self.run_dir)

    def _deploy_root(self) -> Path:
        return Path(self.state_dir) if self.state_dir else self.folder() / "deploy"

    def deploy_dir(self) -> Path:
        """History and instance state; one folder per shard when the market is split."""
        root = self._deploy_root()
        return root if self.shard.whole_market else root / f"shard-{self.shard_index}"

    def history(self) -> DeploymentHistory:
        return DeploymentHistory(self.deploy_dir() / "history.jsonl")

    def handover_token_file(self) -> Path | None:
        """Process backend without a token in the environment: the deploy folder's own token file (made once),
        given to both colors. None when the environment has the token (compose: the .env both read)."""
        if self.backend != "process" or self.handover_token or handover.token_from_environment() is not None:
            return None
        # One token for every shard: it lives beside the shards' folders.
        return handover.ensure_token_file(self._deploy_root() / "handover.token")

    def shared_handover_token(self) -> str | None:
        if self.handover_token:
            return self.handover_token
        path = self.handover_token_file()
        return path.read_text().strip() if path is not None else handover.token_from_environment()

    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or stack_url("kafka", self.run_dir).removeprefix("kafka://")

    def kafka_client_conf(self) -> dict[str, Any]:
        """librdkafka settings for a client of the streamers' Kafka (bootstrap servers and security): the
        configured one, else the stack's; streamer_env's K2_KAFKA_* settings win, as for the streamers."""
        from streamer.config import load_kafka_client_config
        from streamer.sink import client_config

        kafka_env = {} if self.kafka_bootstrap_servers else stack_kafka_client_env(self.run_dir)
        return client_config(self.bootstrap_servers(), load_kafka_client_config({**kafka_env, **self.streamer_env}))

    def common_env(self) -> dict[str, str]:
        ws_url = self.ws_url or stack_url("simulator", self.run_dir) + "/stream"
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
        # The stack's Kafka security settings when Kafka is the stack's; streamer_env wins over them.
        kafka_env = {} if self.kafka_bootstrap_servers else stack_kafka_client_env(self.run_dir)
        token_file = self.handover_token_file()
        if token_file is not None:
            token_env = {handover.TOKEN_FILE_ENV: str(token_file)}
        else:
            token = self.shared_handover_token()
            token_env = {handover.TOKEN_ENV: token} if token else {}
        return streamer_common_env(self.bootstrap_servers(), ws_url, ca_file=ca_file or None,
                                   topic_prefix=self.topic_prefix, symbols=self.symbols, schema_registry_url=registry,
                                   extra={**kafka_env, **token_env, **self.streamer_env})

    def make_backend(self) -> DeploymentBackend:
        if self.backend == "process":
            prometheus_dir = Path(self.prometheus_run_dir) if self.prometheus_run_dir else self.folder()
            return ProcessBackend(
                self.folder(), self.deploy_dir(), self.common_env(),
                ports={"blue": self.blue_port, "green": self.green_port},
                prometheus_run_dir=prometheus_dir if self.register_with_prometheus else None,
                shard=self.shard,
            )
        project = ComposeProject(
            project=self.compose_project, compose_file=Path(self.compose_file), docker=self.docker,
            build_context=Path(self.build_context), dockerfile=Path(self.dockerfile),
            host_ports={"blue": self.blue_host_port, "green": self.green_host_port},
            url_template=self.instance_url_template,
            env_file=Path(self.compose_env_file) if self.compose_env_file else None,
            build_args={"PYTHON_IMAGE": self.python_image} if self.python_image else {},
        )
        return ComposeBackend(project, self.deploy_dir())

    def kafka_audit(self) -> Callable[[float], IdAudit] | None:
        try:
            bootstrap = self.bootstrap_servers()
        except LookupError:
            return None
        topic = trades_topic(self.topic_prefix)
        # The audit connects like the streamers: the stack's Kafka settings, then K2_KAFKA_* of this process
        # and of streamer_env.
        kafka_env = {} if self.kafka_bootstrap_servers else stack_kafka_client_env(self.run_dir)
        client = load_kafka_client_config({**os.environ, **kafka_env, **self.streamer_env})
        return lambda since: audit_ids(read_trade_ids(bootstrap, topic, int(since * 1000), client=client))

    def orchestrator(self, log: Callable[[str], None] | None = None) -> BlueGreenDeployment:
        return BlueGreenDeployment(self.make_backend(), self.history(), audit=self.kafka_audit(), log=log,
                                   handover_token=self.shared_handover_token())
