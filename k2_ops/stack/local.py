"""The local stack: one API used by `make run`, `k2 stack up|down|status` and the pytest fixtures.

`up()` starts Kafka, the Schema Registry, Alertmanager, Prometheus (wired to that Alertmanager, scraping
streamers through file_sd) and any extra services (the simulator, a streamer, the Dagster UI for `make
run`), each a supervised process with a log and a PID file in the run folder, and records their addresses in
`<run>/stack.json` so `status` and `down` work from another shell. Kafka is one plaintext node by default;
`kafka_brokers=3` and `kafka_security` give a replicated, secured cluster whose client settings (file paths,
never a password) are recorded in stack.json for the streamers the stack and its deployments start.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from k2_ops.stack.http import http_ok
from k2_ops.stack.kafka import KafkaSecurity, KafkaService, is_node_process, stop_nodes
from k2_ops.stack.process import ManagedProcess, ServiceError, pid_alive, port_is_open, read_pid_file
from k2_ops.stack.prometheus import AlertmanagerService, PrometheusService
from k2_ops.stack.registry import SchemaRegistryService

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"


class Service(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def health_url(self) -> str: ...
    def start(self) -> float: ...
    def stop(self) -> None: ...
    def status(self) -> dict[str, object]: ...


class StackAlreadyRunning(ServiceError):
    pass


@dataclass
class LocalStack:
    run_dir: Path
    scrape_interval_s: float = 1.0
    with_schema_registry: bool = True
    kafka_brokers: int = 1
    kafka_security: KafkaSecurity = KafkaSecurity.PLAINTEXT
    kafka: KafkaService = field(init=False)
    schema_registry: SchemaRegistryService | None = field(init=False)
    alertmanager: AlertmanagerService = field(init=False)
    prometheus: PrometheusService = field(init=False)
    extra_services: dict[str, Service] = field(default_factory=dict)
    start_seconds: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.kafka = KafkaService(self.run_dir, brokers=self.kafka_brokers, security=self.kafka_security)
        self.schema_registry = SchemaRegistryService(self.run_dir) if self.with_schema_registry else None
        self.alertmanager = AlertmanagerService(self.run_dir)
        self.prometheus = PrometheusService(
            self.run_dir,
            scrape_interval_s=self.scrape_interval_s,
            evaluation_interval_s=self.scrape_interval_s,
        )

    def services(self) -> dict[str, Service]:
        core: dict[str, Service] = {"kafka": self.kafka}
        if self.schema_registry is not None:
            core["schema-registry"] = self.schema_registry
        core.update({"alertmanager": self.alertmanager, "prometheus": self.prometheus})
        return {**core, **self.extra_services}

    def up(self) -> dict[str, float]:
        """Start every service in order; on any failure stop what started and raise with the reason."""
        running = running_services(self.run_dir)
        if running:
            raise StackAlreadyRunning(
                f"the local stack in {self.run_dir} is already running ({', '.join(running)}); "
                "use `k2 stack status` or `k2 stack down`"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        started: dict[str, Service] = {}
        starting: Service | None = None
        try:
            for name, service in self.services().items():
                starting = service
                if service is self.prometheus:  # Alertmanager's port is final once it listens (a retry moves it)
                    self.prometheus.alertmanager_address = self.alertmanager.address
                self.start_seconds[name] = service.start()
                started[name] = service
                starting = None
                log.info("%s ready in %.1f s", name, self.start_seconds[name])
                # Later services (the streamer, Dagster) find earlier ones through this file.
                self._write_state(started)
        except BaseException:  # a failure, or Ctrl-C / SIGTERM during start-up (KeyboardInterrupt)
            if starting is not None:  # launched, not ready yet: stopped by its PID file
                starting.stop()
            for service in reversed(list(started.values())):
                service.stop()
            (self.run_dir / STATE_FILE).unlink(missing_ok=True)
            raise
        self.start_seconds["stack"] = time.monotonic() - began
        self._write_state(started)
        return dict(self.start_seconds)

    def down(self) -> None:
        for service in reversed(list(self.services().values())):
            service.stop()
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)

    def urls(self) -> dict[str, str]:
        return {name: service.url for name, service in self.services().items()}

    def _write_state(self, started: dict[str, Service]) -> None:
        services: dict[str, dict[str, Any]] = {
            name: {"url": service.url, "health_url": service.health_url} for name, service in started.items()
        }
        if "kafka" in services:
            # How a client connects (K2_KAFKA_* settings; files, never a password): deploys and Dagster read it.
            services["kafka"]["client_env"] = self.kafka.client_env()
        state = {"started_at": time.time(), "start_seconds": self.start_seconds, "services": services}
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        # stack.json is the object _write_state wrote.
        return cast(dict[str, Any], json.loads((run_dir / STATE_FILE).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _recorded_pids(run_dir: Path) -> dict[str, tuple[int, int | None]]:
    recorded = {pid_file.stem: read_pid_file(pid_file) for pid_file in sorted(run_dir.glob("*.pid"))}
    return {name: value for name, value in recorded.items() if value is not None}


def running_services(run_dir: Path) -> list[str]:
    """Names of services whose PID file points at a live process (the one recorded, not a reused PID)."""
    return [name for name, recorded in _recorded_pids(run_dir).items() if pid_alive(*recorded)]


def crashed_services(run_dir: Path) -> set[str]:
    """Services whose PID file remains but whose process is gone (a clean stop removes the file)."""
    return {name for name, recorded in _recorded_pids(run_dir).items() if not pid_alive(*recorded)}


def stop_all(run_dir: Path, grace_s: float = 15.0) -> list[str]:
    """Stop every service recorded in the run folder (from any shell), newest first, the Kafka nodes last
    and together (a cluster's nodes stopped one by one leave the last without a quorum); returns their names."""
    stopped = []
    pid_files = sorted(run_dir.glob("*.pid"), key=lambda path: path.stat().st_mtime, reverse=True)
    kafka_nodes = [path for path in pid_files if is_node_process(path.stem)]
    for pid_file in pid_files:
        if pid_file not in kafka_nodes:
            ManagedProcess(pid_file.stem, [], run_dir, stop_grace_s=grace_s).stop()
            stopped.append(pid_file.stem)
    stop_nodes([ManagedProcess(path.stem, [], run_dir, stop_grace_s=grace_s) for path in kafka_nodes], grace_s)
    stopped += [path.stem for path in kafka_nodes]
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def probe(health_url: str) -> bool:
    """True when a health URL answers: `tcp://host:port` accepts a connection, `http(s)://...` gives 2xx."""
    if health_url.startswith("tcp://"):
        host, _, port = health_url.removeprefix("tcp://").rpartition(":")
        return port.isdigit() and port_is_open(host, int(port))
    return http_ok(health_url)
