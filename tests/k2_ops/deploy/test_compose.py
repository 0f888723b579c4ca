"""The compose backend's commands. No Docker engine runs here, so these check the exact argv lists (and the
compose document) the backend would run; the backend is driven with a runner that records them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from k2_ops.deploy.compose import (
    CommandResult,
    ComposeBackend,
    ComposeProject,
    build_argv,
    env_file_text,
    logs_argv,
    running_argv,
    stop_argv,
    up_argv,
    up_env,
)
from k2_ops.deploy.model import DeploymentError

PROJECT = ComposeProject(
    project="k2prod",
    compose_file=Path("/srv/k2/compose.yml"),
    dockerfile=Path("docker/Dockerfile"),
    build_context=Path("/src/k2"),
)
BASE = ["docker", "compose", "--project-name", "k2prod", "--file", "/srv/k2/compose.yml"]


def test_build_argv() -> None:
    assert build_argv(PROJECT, "k2-platform:v2.1") == [
        "docker",
        "build",
        "--tag",
        "k2-platform:v2.1",
        "--file",
        "docker/Dockerfile",
        "/src/k2",
    ]


def test_green_commands_enable_its_profile_blue_ones_do_not() -> None:
    assert up_argv(PROJECT, "green") == [
        *BASE,
        "--profile",
        "green",
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "--force-recreate",
        "streamer-green",
    ]
    assert up_argv(PROJECT, "blue") == [
        *BASE,
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "--force-recreate",
        "streamer-blue",
    ]
    assert up_env("green", "k2-platform:v2.1", standby=True) == {
        "K2_IMAGE_GREEN": "k2-platform:v2.1",
        "K2_START_MODE_GREEN": "standby",
    }
    assert up_env("blue", "k2-platform:v2.0-stable", standby=False) == {
        "K2_IMAGE_BLUE": "k2-platform:v2.0-stable",
        "K2_START_MODE_BLUE": "active",
    }


def test_stop_rounds_the_grace_up_to_whole_seconds() -> None:
    assert stop_argv(PROJECT, "blue", 29.2) == [*BASE, "stop", "--timeout", "30", "streamer-blue"]
    assert stop_argv(PROJECT, "green", 0.0)[-3:] == ["--timeout", "0", "streamer-green"]
    assert running_argv(PROJECT, "green") == [
        *BASE,
        "--profile",
        "green",
        "ps",
        "--status",
        "running",
        "--quiet",
        "streamer-green",
    ]
    assert logs_argv(PROJECT, "blue", 5) == [*BASE, "logs", "--no-color", "--tail", "5", "streamer-blue"]


def test_instance_urls_from_the_host_or_inside_the_compose_network() -> None:
    assert PROJECT.instance_url("green") == "http://127.0.0.1:8002"
    inside = ComposeProject(url_template="http://{service}:{container_port}")
    assert inside.instance_url("blue") == "http://streamer-blue:8000"


def test_defaults_point_at_the_repository_compose_project() -> None:
    from k2_ops.paths import REPO_ROOT

    project = ComposeProject()
    compose = yaml.safe_load((REPO_ROOT / project.compose_file).read_text())
    assert compose["name"] == project.project
    assert compose["services"]["streamer-green"]["profiles"] == ["green"]
    assert "profiles" not in compose["services"]["streamer-blue"]
    assert (REPO_ROOT / project.dockerfile).is_file()


def test_env_file_text() -> None:
    assert env_file_text({"K2_PING_INTERVAL_SECONDS": "30", "K2_BINANCE_SYMBOLS": "btcusdt,ethusdt"}) == (
        "K2_BINANCE_SYMBOLS=btcusdt,ethusdt\nK2_PING_INTERVAL_SECONDS=30\n"
    )
    assert env_file_text({}) == ""
    with pytest.raises(ValueError, match="K2_X"):
        env_file_text({"K2_X": "a\nb"})


class Recorder:
    """Stands in for the docker CLI (absent here): records each command, answers `ps` from a set."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.running: set[str] = set()
        self.fail_on: str | None = None

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> CommandResult:
        argv = list(argv)
        self.calls.append((argv, dict(env)))
        if self.fail_on and self.fail_on in argv:
            return CommandResult(argv, 1, "", "Error response from daemon: pull access denied")
        service = argv[-1]
        if "up" in argv:
            self.running.add(service)
        elif "stop" in argv:
            self.running.discard(service)
        elif "ps" in argv:
            return CommandResult(argv, 0, "c0ffee\n" if service in self.running else "", "")
        return CommandResult(argv, 0, "", "")


def test_backend_runs_the_commands_in_order(tmp_path: Path) -> None:
    project = ComposeProject(project="k2", compose_file=tmp_path / "compose.yml")
    recorder = Recorder()
    backend = ComposeBackend(project, tmp_path / "state", runner=recorder)

    backend.build("k2-platform:v2.1")
    info = backend.start("green", "k2-platform:v2.1", standby=True, env={"K2_LOG_LEVEL": "DEBUG"})
    assert info.base_url == "http://127.0.0.1:8002"
    assert backend.is_running("green")
    assert backend.exit_reason("green") is None
    backend.stop("blue", 30.0)
    assert not backend.is_running("blue")
    assert backend.instance("green") == info

    argvs = [argv for argv, _ in recorder.calls]
    assert argvs[0] == build_argv(project, "k2-platform:v2.1")
    assert argvs[1] == up_argv(project, "green")
    assert recorder.calls[1][1] == {"K2_IMAGE_GREEN": "k2-platform:v2.1", "K2_START_MODE_GREEN": "standby"}
    assert stop_argv(project, "blue", 30.0) in argvs
    assert (tmp_path / "streamer-green.env").read_text() == "K2_LOG_LEVEL=DEBUG\n"


def test_backend_reports_a_failed_command(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.fail_on = "build"
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "c.yml"), tmp_path, runner=recorder)
    with pytest.raises(DeploymentError, match="pull access denied"):
        backend.build("k2-platform:v2.1")
