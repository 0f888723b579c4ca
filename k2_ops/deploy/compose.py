"""`compose` backend (production): services `streamer-blue` and `streamer-green` of one Compose project.

Green sits behind the compose profile `green`, so a plain `docker compose up -d` starts blue only. Images
are chosen per color through `K2_IMAGE_BLUE` / `K2_IMAGE_GREEN`, standby through `K2_START_MODE_<COLOR>`,
and the new version's own settings through `streamer-<color>.env` next to the compose file. Every command
is built as an argv list by a pure function below; no Docker engine runs in this repository's CI, so the
tests check these argv lists and the compose document, not a live engine.

What runs is read from compose itself (`docker compose ps --all --format json <service>`, parsed by
`parse_ps_json`), so a color started by hand (`docker compose up -d`) is found like one this backend
started; `<state_dir>/instance-<color>.json` only remembers what compose cannot say (when and in which mode
this backend started it, and the image of a removed container, which a rollback restarts).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
    # Relative to build_context (as in the compose file's `build:`), so one setting moves both.
    dockerfile: Path = Path("docker/streamer.Dockerfile")
    host_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_HOST_PORTS))
    host_ip: str = "127.0.0.1"
    # Where the deploy job reaches a color's /readyz and /handover: the published port from the host, or
    # "http://{service}:{container_port}" when the job itself runs inside the compose network (dagster-daemon).
    url_template: str = "http://{host_ip}:{host_port}"
    # Passed as --env-file to every compose command. Compose interpolates the whole file at load, so without
    # the operator's .env (POSTGRES_PASSWORD, ...) even `ps` fails; None = compose's own default (the .env next
    # to the compose file).
    env_file: Path | None = None
    # `docker build --build-arg` of build_image (e.g. PYTHON_IMAGE, the Dockerfile's base).
    build_args: Mapping[str, str] = field(default_factory=dict)

    def instance_url(self, color: str) -> str:
        return self.url_template.format(color=color, service=service_name(color), host_ip=self.host_ip,
                                        host_port=self.host_ports[color], container_port=CONTAINER_METRICS_PORT)


def compose_base_argv(project: ComposeProject, color: str | None = None) -> list[str]:
    argv = [project.docker, "compose", "--project-name", project.project, "--file", str(project.compose_file)]
    if project.env_file is not None:
        argv += ["--env-file", str(project.env_file)]
    if color == "green":
        # Without the profile, compose ignores the green service entirely.
        argv += ["--profile", "green"]
    return argv


def build_argv(project: ComposeProject, image: str) -> list[str]:
    # `docker build --file` resolves a relative path against the working directory, not the context.
    build_args = [arg for key, value in sorted(project.build_args.items()) for arg in ("--build-arg", f"{key}={value}")]
    return [
        project.docker,
        "build",
        *build_args,
        "--tag",
        image,
        "--file",
        str(project.build_context / project.dockerfile),
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


def ps_argv(project: ComposeProject, color: str) -> list[str]:
    # --all: a stopped or crashed container is listed too (state, exit code), not only running ones.
    return [*compose_base_argv(project, color), "ps", "--all", "--format", "json", service_name(color)]


@dataclass(frozen=True)
class ComposeContainer:
    """One container of `docker compose ps --format json`."""

    service: str
    name: str
    state: str  # running, exited, restarting, paused, created, dead, removing
    image: str
    health: str = ""
    exit_code: int = 0
    created_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


def _created_at(entry: Mapping[str, object]) -> float | None:
    created = entry.get("Created")
    if isinstance(created, int | float) and created > 0:
        return float(created)
    text = entry.get("CreatedAt")
    if isinstance(text, str) and text:
        try:
            # "2026-09-26 16:06:45 +0000 UTC": Go's time format; the zone name after the offset is redundant.
            return datetime.strptime(" ".join(text.split()[:3]), "%Y-%m-%d %H:%M:%S %z").timestamp()
        except ValueError:
            return None
    return None


def parse_ps_json(stdout: str) -> list[ComposeContainer]:
    """The containers in `docker compose ps --format json` output.

    Older Compose v2 releases print one JSON array (as compose's reference page shows); current ones (v2.21 and
    later) print one JSON object per line (JSON Lines, with numbers such as LocalVolumes as strings). Both are
    read. No container at all prints nothing (or `[]`).
    """
    text = stdout.strip()
    if not text:
        return []
    try:
        if text.startswith("["):
            entries = json.loads(text)
        else:
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"cannot read `docker compose ps --format json` output ({exc}): {text[:300]!r}") from exc
    containers = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("Service"):
            raise DeploymentError(f"`docker compose ps --format json` listed no service for {str(entry)[:200]}")
        try:
            exit_code = int(entry.get("ExitCode") or 0)
        except (TypeError, ValueError):
            exit_code = 0
        containers.append(ComposeContainer(
            service=str(entry["Service"]),
            name=str(entry.get("Name") or entry.get("Names") or ""),
            state=str(entry.get("State") or "").lower(),
            image=str(entry.get("Image") or ""),
            health=str(entry.get("Health") or ""),
            exit_code=exit_code,
            created_at=_created_at(entry),
        ))
    return containers


def service_container(containers: Sequence[ComposeContainer], color: str) -> ComposeContainer | None:
    """The color's container: a running one first (compose lists one per replica; we run one)."""
    mine = [c for c in containers if c.service == service_name(color)]
    return next((c for c in mine if c.running), mine[0] if mine else None)


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
        env_file = self.project.env_file
        if env_file is not None and argv[1:2] == ["compose"] and not os.access(env_file, os.R_OK):
            raise DeploymentError(
                f"compose env file {env_file} is missing or unreadable: every compose command needs it (docker/.env "
                "on the Docker host; dagster-code reads it from the mounted docker/ folder, see docker/README.md)"
            )
        result = self.runner(argv, dict(env or {}))
        if result.returncode != 0:
            raise DeploymentError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()[-800:]}")
        return result

    def _state_path(self, color: str) -> Path:
        return self.state_dir / f"instance-{color}.json"

    def _recorded(self, color: str) -> InstanceInfo | None:
        try:
            return InstanceInfo(**json.loads(self._state_path(color).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def container(self, color: str) -> ComposeContainer | None:
        """The color's container as compose lists it (running or not), or None if it has none."""
        return service_container(parse_ps_json(self._run(ps_argv(self.project, color)).stdout), color)

    def build(self, image: str) -> str:
        self._run(build_argv(self.project, image))
        return f"built {image}"

    def start(self, color: str, image: str, *, standby: bool, env: Mapping[str, str] | None = None) -> InstanceInfo:
        if env is not None:
            # None keeps the color's settings as they are (a rollback restarts the previous version as it was).
            env_path = self.project.compose_file.parent / f"{service_name(color)}.env"
            try:
                env_path.write_text(env_file_text(env))
            except PermissionError as exc:
                raise DeploymentError(
                    f"cannot write {env_path}: the new version's settings go there; make the file writable for "
                    f"this user (uid {os.getuid()})"
                ) from exc
        self._run(up_argv(self.project, color), up_env(color, image, standby))
        info = InstanceInfo(color, self.project.instance_url(color), image, standby, time.time())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_path(color).write_text(json.dumps(info.__dict__))
        return info

    def stop(self, color: str, grace_seconds: float) -> None:
        self._run(stop_argv(self.project, color, grace_seconds))

    def is_running(self, color: str) -> bool:
        container = self.container(color)
        return container is not None and container.running

    def instance(self, color: str) -> InstanceInfo | None:
        """The color's container as compose has it; started by this backend or by hand (`docker compose up`).
        Without a container: what this backend last started (its image is what a rollback restarts)."""
        recorded = self._recorded(color)
        container = self.container(color)
        if container is None:
            if recorded is None:
                return None
            return InstanceInfo(color, self.project.instance_url(color), recorded.image, recorded.standby,
                                recorded.started_at)
        if recorded is not None and recorded.image == container.image:
            return InstanceInfo(color, self.project.instance_url(color), container.image, recorded.standby,
                                recorded.started_at)
        # Not started by this backend (or recreated by hand since): its live mode is on its /readyz.
        return InstanceInfo(color, self.project.instance_url(color), container.image, False,
                            container.created_at or 0.0)

    def exit_reason(self, color: str) -> str | None:
        container = self.container(color)
        if container is not None and container.running:
            return None
        if container is None:
            return f"{service_name(color)} has no container (never started, or removed)"
        logs = self.runner(logs_argv(self.project, color), {})
        return (f"container {container.name or service_name(color)} is {container.state} (exit code "
                f"{container.exit_code}); last log lines:\n{logs.stdout.strip()}")
