"""`compose` backend (production): services `streamer-blue` and `streamer-green` of one Compose project.

Green sits behind the compose profile `green`, so a plain `docker compose up -d` starts blue only. Images
are chosen per color through `K2_IMAGE_BLUE` / `K2_IMAGE_GREEN`, standby through `K2_START_MODE_<COLOR>`,
and the new version's own settings through `streamer-<color>.env` next to the compose file. Every command
is built as an argv list by a pure function below; no Docker engine runs in this repository's CI, so the
tests check these argv lists and the compose document, not a live engine.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from k2_ops.deploy.backend import DeploymentBackend, InstanceInfo
from k2_ops.deploy.model import COLORS, DeploymentError

CONTAINER_METRICS_PORT = 8000
DEFAULT_HOST_PORTS = {"blue": 8001, "green": 8002}


def service_name(color: str) -> str:
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}")
    return f"streamer-{color}"


def image_variable(color: str) -> str:
    return f"K2_IMAGE_{color.upper()}"


def start_mode_variable(color: str) -> str:
    return f"K2_START_MODE_{color.upper()}"


@dataclass(frozen=True)
class ComposeProject:
    project: str = "k2"
    compose_file: Path = Path("docker/compose.yaml")
    docker: str = "docker"
    build_context: Path = Path(".")
    dockerfile: Path = Path("docker/streamer.Dockerfile")
    host_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_HOST_PORTS))
    host_ip: str = "127.0.0.1"
    # Where the deploy job reaches a color's /readyz and /handover: the published port from the host, or
    # "http://{service}:8000" when the job itself runs inside the compose network (dagster-daemon).
    url_template: str = "http://{host_ip}:{host_port}"

    def instance_url(self, color: str) -> str:
        return self.url_template.format(color=color, service=service_name(color), host_ip=self.host_ip,
                                        host_port=self.host_ports[color], container_port=CONTAINER_METRICS_PORT)


def compose_base_argv(project: ComposeProject, color: str | None = None) -> list[str]:
    argv = [project.docker, "compose", "--project-name", project.project, "--file", str(project.compose_file)]
    if color == "green":
        # Without the profile, compose ignores the green service entirely.
        argv += ["--profile", "green"]
    return argv


def build_argv(project: ComposeProject, image: str) -> list[str]:
    return [
        project.docker,
        "build",
        "--tag",
        image,
        "--file",
        str(project.dockerfile),
        str(project.build_context),
    ]


def up_argv(project: ComposeProject, color: str) -> list[str]:
    # --no-deps: never touch the other color; --force-recreate: a new container with the new image and mode.
    return [
        *compose_base_argv(project, color),
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "--force-recreate",
        service_name(color),
    ]


def up_env(color: str, image: str, standby: bool) -> dict[str, str]:
    return {image_variable(color): image, start_mode_variable(color): "standby" if standby else "active"}


def stop_argv(project: ComposeProject, color: str, grace_seconds: float) -> list[str]:
    # docker sends SIGTERM (the streamer flushes Kafka and closes with 1000), then SIGKILL after the timeout.
    return [
        *compose_base_argv(project, color),
        "stop",
        "--timeout",
        str(max(0, math.ceil(grace_seconds))),
        service_name(color),
    ]


def running_argv(project: ComposeProject, color: str) -> list[str]:
    return [*compose_base_argv(project, color), "ps", "--status", "running", "--quiet", service_name(color)]


def logs_argv(project: ComposeProject, color: str, lines: int = 20) -> list[str]:
    return [
        *compose_base_argv(project, color),
        "logs",
        "--no-color",
        "--tail",
        str(lines),
        service_name(color),
    ]


def env_file_text(env: Mapping[str, str]) -> str:
    """A compose env file: KEY=VALUE lines (values single-line, as compose reads them literally)."""
    lines = []
    for key, value in sorted(env.items()):
        if "\n" in value or "\n" in key or "=" in key:
            raise ValueError(f"setting {key!r} cannot go into a compose env file (newline or '=' in the name)")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], Mapping[str, str]], CommandResult]


def run_command(argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 600.0) -> CommandResult:
    import os

    try:
        done = subprocess.run(
            list(argv),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DeploymentError(f"{argv[0]} not found: the compose backend needs the docker CLI") from exc
    return CommandResult(list(argv), done.returncode, done.stdout, done.stderr)


class ComposeBackend(DeploymentBackend):
    name = "compose"

    def __init__(self, project: ComposeProject, state_dir: Path, runner: Runner = run_command) -> None:
        self.project = project
        self.state_dir = Path(state_dir)
        self.runner = runner

    def _run(self, argv: list[str], env: Mapping[str, str] | None = None) -> CommandResult:
        result = self.runner(argv, dict(env or {}))
        if result.returncode != 0:
            raise DeploymentError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()[-800:]}")
        return result

    def build(self, image: str) -> str:
        self._run(build_argv(self.project, image))
        return f"built {image}"

    def start(self, color: str, image: str, *, standby: bool, env: Mapping[str, str] | None = None) -> InstanceInfo:
        env_path = self.project.compose_file.parent / f"{service_name(color)}.env"
        env_path.parent.mkdir(parents=True, exist_ok=True)
        env_path.write_text(env_file_text(env or {}))
        self._run(up_argv(self.project, color), up_env(color, image, standby))
        info = InstanceInfo(
            color,
            f"http://{self.project.host_ip}:{self.project.host_ports[color]}",
            image,
            standby,
            time.time(),
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"instance-{color}.json").write_text(json.dumps(info.__dict__))
        return info

    def stop(self, color: str, grace_seconds: float) -> None:
        self._run(stop_argv(self.project, color, grace_seconds))

    def is_running(self, color: str) -> bool:
        return bool(self._run(running_argv(self.project, color)).stdout.strip())

    def instance(self, color: str) -> InstanceInfo | None:
        try:
            return InstanceInfo(**json.loads((self.state_dir / f"instance-{color}.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def exit_reason(self, color: str) -> str | None:
        if self.is_running(color):
            return None
        logs = self.runner(logs_argv(self.project, color), {})
        return f"container {service_name(color)} is not running; last log lines:\n{logs.stdout.strip()}"
