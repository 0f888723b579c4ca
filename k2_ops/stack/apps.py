"""The application services `make run` adds to the local stack: the exchange simulator, a blue streamer
fed by it, and the Dagster UI (webserver + daemon). Each is a supervised process like the core services."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from k2_ops.stack.http import http_ok
from k2_ops.stack.process import SupervisedService, port_is_open

# The code location the local `dagster dev` serves, named as the root workspace.yaml names it (a test checks).
LOCAL_WORKSPACE = {"load_from": [{"python_module": {"module_name": "dagster_project.definitions",
                                                    "location_name": "k2_ops"}}]}
# The run queue: a deployment and a soak may overlap; two deployments (blue_green_deploy and rollback carry the
# tag k2/kind=deployment) never, else the second stops the first one's new color. The production instance
# (docker/dagster/dagster.yaml) holds the same section; a test checks they agree.
RUN_QUEUE = {"runs": {"max_concurrent_runs": 4,
                      "tag_concurrency_limits": [{"key": "k2/kind", "value": "deployment", "limit": 1}]}}


@dataclass
class SimulatorProcess(SupervisedService):
    """`k2 simulator` as a process: Binance's protocol over TLS with a per-run CA in `<run>/simulator/`."""

    run_dir: Path
    symbols: str = "btcusdt,ethusdt"
    rate_per_symbol: float = 50.0
    port: int = 0
    control_port: int = 0
    ready_timeout_s: float = 30.0
    name: str = "simulator"

    def __post_init__(self) -> None:
        self._allocate_ports("port", "control_port")

    @property
    def workdir(self) -> Path:
        return self.run_dir / "simulator"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def url(self) -> str:
        # Host name, not IP: the streamer verifies the certificate against the host it dials.
        return f"wss://localhost:{self.port}"

    @property
    def combined_stream_url(self) -> str:
        return f"{self.url}/stream"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}/status"

    def start(self) -> float:
        began = time.monotonic()
        self._launch(lambda: [
            sys.executable, "-m", "k2_ops.simulator",
            "--symbols", self.symbols, "--rate", f"{self.rate_per_symbol:g}",
            "--port", str(self.port), "--control-port", str(self.control_port), "--workdir", str(self.workdir),
        ], cwd=self.run_dir, interval_s=0.1)
        return time.monotonic() - began

    def is_ready(self) -> bool:
        return self.ca_file.exists() and port_is_open("127.0.0.1", self.port) and http_ok(self.health_url)


@dataclass
class DagsterProcess(SupervisedService):
    """`dagster dev` on loopback: the webserver and the daemon (schedules and sensors run)."""

    run_dir: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 180.0
    name: str = "dagster"

    def __post_init__(self) -> None:
        self._allocate_ports("port")

    @property
    def dagster_home(self) -> Path:
        return self.run_dir / "dagster_home"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/server_info"

    def start(self) -> float:
        began = time.monotonic()
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        write_local_dagster_instance(self.dagster_home / "dagster.yaml")
        workspace = self.dagster_home / "workspace.yaml"
        workspace.write_text(yaml.safe_dump(LOCAL_WORKSPACE, sort_keys=False))
        dagster = Path(sys.executable).with_name("dagster")
        env = {"DAGSTER_HOME": str(self.dagster_home), "PATH": f"{dagster.parent}{os.pathsep}{os.environ['PATH']}",
               **self.env}
        self._launch(lambda: [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(self.port)],
                     cwd=self.run_dir, env=env, stop_grace_s=30, interval_s=0.5)
        return time.monotonic() - began

    def is_ready(self) -> bool:
        return http_ok(self.health_url)


def write_local_dagster_instance(path: Path) -> None:
    """The local `dagster dev` instance: its default storage (sqlite in DAGSTER_HOME), with the production
    instance's run queue, so at most one deployment runs at once here too."""
    path.write_text(
        "# Written by k2_ops.stack.apps at each start: the run queue (RUN_QUEUE) of docker/dagster/dagster.yaml.\n"
        + yaml.safe_dump({"concurrency": RUN_QUEUE}, sort_keys=False)
    )
