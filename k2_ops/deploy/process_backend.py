"""`process` backend: blue and green streamers as supervised subprocesses (`python -m streamer`).

Each color runs as `ManagedProcess("streamer-<instance>")` in the stack's run folder (log, PID file; `k2 stack
down` stops it too), on its own metrics port, registered with Prometheus through file_sd with
`instance=<instance>` (the color, or `s<shard>-<color>` when the market is split into shards; labels `color`
and `shard` too). The instance's port, image label and mode are kept in `<state_dir>/instance-<color>.json`
so a later Dagster step or run (a rollback) finds and stops it. "Image" has no meaning for a subprocess: the
working tree's code runs, and the image name is only recorded.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from k2_ops.deploy.backend import DeploymentBackend, InstanceInfo
from k2_ops.deploy.model import COLORS, instance_name
from k2_ops.stack.process import ManagedProcess, launch_on_port
from k2_ops.stack.prometheus import remove_scrape_target, scrape_targets_dir, write_scrape_target
from streamer.config import env_name
from streamer.shards import WHOLE_MARKET, Shard


def streamer_env(
    common: Mapping[str, str],
    color: str,
    port: int,
    *,
    standby: bool,
    overrides: Mapping[str, str] | None = None,
    shard: Shard = WHOLE_MARKET,
) -> dict[str, str]:
    """The environment of one color's streamer: common settings, then the color's own, then overrides."""
    env = dict(common)
    if not shard.whole_market:
        env.update({env_name("shard_index"): str(shard.index), env_name("shard_count"): str(shard.count)})
    env.update(
        {
            "K2_INSTANCE": instance_name(color, shard),
            "K2_METRICS_HOST": "127.0.0.1",
            "K2_METRICS_PORT": str(port),
            "K2_START_MODE": "standby" if standby else "active",
        }
    )
    env.update(overrides or {})
    return env


class ProcessBackend(DeploymentBackend):
    name = "process"

    def __init__(
        self,
        run_dir: Path,
        state_dir: Path,
        common_env: Mapping[str, str],
        *,
        ports: Mapping[str, int] | None = None,
        prometheus_run_dir: Path | None = None,
        python: str = sys.executable,
        shard: Shard = WHOLE_MARKET,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.state_dir = Path(state_dir)
        self.common_env = dict(common_env)
        self.ports = {color: int((ports or {}).get(color, 0)) for color in COLORS}
        # The file_sd folder of the stack's Prometheus, when the colors should be scraped.
        self.targets_dir = scrape_targets_dir(Path(prometheus_run_dir)) if prometheus_run_dir else None
        self.python = python
        self.shard = shard
        self._processes: dict[str, ManagedProcess] = {}

    def _process(self, color: str, env: Mapping[str, str] | None = None) -> ManagedProcess:
        process = self._processes.get(color)
        if process is None or env is not None:
            process = ManagedProcess(
                self._name(color),
                # -P: the installed streamer runs, whatever the working directory holds.
                [self.python, "-P", "-m", "streamer"],
                self.run_dir,
                env=dict(env) if env is not None else None,
                cwd=self.run_dir,
            )
            self._processes[color] = process
        return process

    def _name(self, color: str) -> str:
        return f"streamer-{instance_name(color, self.shard)}"

    def _state_path(self, color: str) -> Path:
        return self.state_dir / f"instance-{color}.json"

    def build(self, image: str) -> str:
        return f"process backend: nothing to build; the working tree runs as {image!r} (label only)"

    def start(self, color: str, image: str, *, standby: bool, env: Mapping[str, str] | None = None) -> InstanceInfo:
        if self.is_running(color):
            raise RuntimeError(f"{color} is already running; stop it first")
        def launch(port: int) -> tuple[int, Callable[[], str | None]]:
            process = self._process(color, streamer_env(self.common_env, color, port, standby=standby,
                                                        overrides=env, shard=self.shard))
            return process.start(), process.exit_reason

        port = launch_on_port(self._name(color), launch, self.ports[color])
        process = self._process(color)
        info = InstanceInfo(color, f"http://127.0.0.1:{port}", image, standby, time.time())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_path(color).write_text(
            json.dumps(
                {
                    "color": color,
                    "base_url": info.base_url,
                    "image": image,
                    "standby": standby,
                    "started_at": info.started_at,
                    "pid": process.recorded_pid(),
                    "port": port,
                }
            )
        )
        if self.targets_dir is not None:
            labels = {"instance": instance_name(color, self.shard), "color": color, "shard": str(self.shard.index)}
            write_scrape_target(self.targets_dir, self._name(color), f"127.0.0.1:{port}", labels)
        return info

    def stop(self, color: str, grace_seconds: float) -> None:
        process = self._process(color)
        process.stop_grace_s = grace_seconds
        process.stop()
        if self.targets_dir is not None:
            remove_scrape_target(self.targets_dir, self._name(color))

    def is_running(self, color: str) -> bool:
        return self._process(color).is_running()

    def instance(self, color: str) -> InstanceInfo | None:
        try:
            data = json.loads(self._state_path(color).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return InstanceInfo(
            data["color"], data["base_url"], data["image"], bool(data["standby"]), float(data["started_at"])
        )

    def exit_reason(self, color: str) -> str | None:
        process = self._process(color)
        if process.is_running():
            return None
        # Started by another process (an earlier Dagster step): no exit code here, but its log says why.
        tail = process.log_tail()
        return process.exit_reason() or f"{process.name} is not running (it exited); last log lines:\n{tail}"

    def log_tail(self, color: str, lines: int = 20) -> str:
        return self._process(color).log_tail(lines)
