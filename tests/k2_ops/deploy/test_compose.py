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
    ComposeContainer,
    ComposeProject,
    build_argv,
    env_file_text,
    logs_argv,
    parse_ps_json,
    ps_argv,
    service_container,
    stop_argv,
    up_argv,
    up_env,
)
from k2_ops.deploy.history import DeploymentHistory, DeploymentRecord
from k2_ops.deploy.model import DeployConfig, DeploymentError
from k2_ops.deploy.orchestrator import BlueGreenDeployment

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
        "/src/k2/docker/Dockerfile",
        "/src/k2",
    ]
    # From the repository root (k2 deploy on the Docker host), the defaults.
    assert build_argv(ComposeProject(), "k2-platform:v2.1")[-3:] == ["--file", "docker/streamer.Dockerfile", "."]


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
    assert ps_argv(PROJECT, "green") == [
        *BASE, "--profile", "green", "ps", "--all", "--format", "json", "streamer-green",
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


def test_env_file_goes_before_the_subcommand_of_every_compose_command() -> None:
    """Compose interpolates the whole file at load (${POSTGRES_PASSWORD:?...}): every command, even `ps` of
    one service, needs the operator's .env, and a global option must precede the subcommand."""
    project = ComposeProject(project="k2", compose_file=Path("/opt/k2/docker/compose.yaml"),
                             env_file=Path("/opt/k2/docker/.env"))
    base = ["docker", "compose", "--project-name", "k2", "--file", "/opt/k2/docker/compose.yaml",
            "--env-file", "/opt/k2/docker/.env"]
    assert up_argv(project, "green")[:10] == [*base, "--profile", "green"]
    assert stop_argv(project, "blue", 30)[:9] == [*base, "stop"]
    assert ps_argv(project, "blue") == [*base, "ps", "--all", "--format", "json", "streamer-blue"]
    assert logs_argv(project, "blue")[:9] == [*base, "logs"]
    assert build_argv(project, "k2-platform:v2.1")[:2] == ["docker", "build"], "docker build takes no --env-file"
    assert "--env-file" not in up_argv(ComposeProject(), "blue"), "unset: compose reads the .env beside the file"


# ---- `docker compose ps --format json` -----------------------------------------------------------------------
# Recorded in the shapes compose documents and prints. Older Compose v2: one JSON array (docs/reference/compose_ps.md,
# "outputs information about the containers as a JSON array"); numbers are numbers, Created is a Unix time.
PS_ARRAY = (
    '[{"ID":"1553b0236cf4d2715845f053a4ee97042c4f9a2ef655731ee34f1f7940eaa41a","Name":"k2-streamer-green-1",'
    '"Command":"k2-streamer","Project":"k2","Service":"streamer-green","State":"exited","Health":"","ExitCode":2,'
    '"Publishers":null},{"ID":"f02a4efaabb67416e1ff127d51c4b5578634a0ad5743bd65225ff7d1909a3fa0",'
    '"Name":"k2-streamer-blue-1","Command":"k2-streamer","Project":"k2","Service":"streamer-blue","State":"running",'
    '"Health":"healthy","ExitCode":0,"Created":1767225600,"Image":"k2-platform:v2.0-stable",'
    '"Publishers":[{"URL":"127.0.0.1","TargetPort":8000,"PublishedPort":8001,"Protocol":"tcp"}]}]\n'
)
# Current Compose (v2.21 and later): JSON Lines, one object per container, keys sorted, Labels/LocalVolumes/Mounts
# as strings and CreatedAt in Go's time format (what `docker compose ps --all --format json streamer-blue` prints).
PS_JSON_LINES = (
    '{"Command":"\\"k2-streamer\\"","CreatedAt":"2026-01-01 00:00:00 +0000 UTC","ExitCode":0,'
    '"Health":"healthy","ID":"7db6b94adc5c","Image":"k2-platform:v2.0-stable","Labels":'
    '"com.docker.compose.container-number=1,com.docker.compose.oneoff=False,com.docker.compose.project=k2,'
    'com.docker.compose.service=streamer-blue,com.docker.compose.version=2.38.2","LocalVolumes":"0",'
    '"Mounts":"","Name":"k2-streamer-blue-1","Names":"k2-streamer-blue-1","Networks":"k2_default",'
    '"Ports":"127.0.0.1:8001->8000/tcp","Project":"k2","Publishers":[{"URL":"127.0.0.1","TargetPort":8000,'
    '"PublishedPort":8001,"Protocol":"tcp"}],"RunningFor":"3 hours ago","Service":"streamer-blue","Size":"0B",'
    '"State":"running","Status":"Up 3 hours (healthy)"}\n'
)
PS_JSON_LINES_EXITED = (
    '{"Command":"\\"k2-streamer\\"","CreatedAt":"2026-01-02 10:30:00 +0100 CET","ExitCode":137,"Health":"",'
    '"ID":"289a81af20d8","Image":"k2-platform:v2.1","Labels":"com.docker.compose.project=k2,'
    'com.docker.compose.service=streamer-green","LocalVolumes":"0","Mounts":"","Name":"k2-streamer-green-1",'
    '"Names":"k2-streamer-green-1","Networks":"k2_default","Ports":"","Project":"k2","Publishers":[],'
    '"RunningFor":"2 minutes ago","Service":"streamer-green","Size":"0B","State":"exited",'
    '"Status":"Exited (137) 1 minute ago"}\n'
)


def test_parse_ps_json_reads_both_documented_shapes() -> None:
    array = parse_ps_json(PS_ARRAY)
    assert [(c.service, c.state, c.running) for c in array] == [
        ("streamer-green", "exited", False), ("streamer-blue", "running", True)]
    assert array[1] == ComposeContainer("streamer-blue", "k2-streamer-blue-1", "running", "k2-platform:v2.0-stable",
                                        "healthy", 0, 1767225600.0)
    assert array[0].exit_code == 2 and array[0].image == "" and array[0].created_at is None

    (blue,) = parse_ps_json(PS_JSON_LINES)
    assert blue == ComposeContainer("streamer-blue", "k2-streamer-blue-1", "running", "k2-platform:v2.0-stable",
                                    "healthy", 0, 1767225600.0)
    (green,) = parse_ps_json(PS_JSON_LINES_EXITED)
    assert (green.state, green.exit_code, green.image) == ("exited", 137, "k2-platform:v2.1")
    assert green.created_at == 1767346200.0  # 10:30 CET = 09:30 UTC
    assert len(parse_ps_json(PS_JSON_LINES + PS_JSON_LINES_EXITED)) == 2


def test_parse_ps_json_without_containers_and_with_garbage() -> None:
    assert parse_ps_json("") == [] and parse_ps_json("\n") == [] and parse_ps_json("[]\n") == []
    with pytest.raises(DeploymentError, match="cannot read `docker compose ps --format json` output"):
        parse_ps_json("NAME  IMAGE  COMMAND\n")  # the table format: --format json was not honoured
    with pytest.raises(DeploymentError, match="no service"):
        parse_ps_json('{"Name": "x"}')


def test_service_container_prefers_the_running_one() -> None:
    both = [*parse_ps_json(PS_ARRAY), ComposeContainer("streamer-green", "k2-streamer-green-2", "running", "img")]
    assert service_container(both, "green").name == "k2-streamer-green-2"
    assert service_container(both, "blue").name == "k2-streamer-blue-1"
    assert service_container(parse_ps_json(PS_JSON_LINES), "green") is None


class Recorder:
    """Stands in for the docker CLI (absent here): records each command and keeps the containers compose
    would have, answering `ps --format json` in the JSON Lines shape of Compose v2.21+."""

    def __init__(self, containers: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        # service -> `ps --format json` line of its container
        self.containers: dict[str, str] = dict(containers or {})
        self.fail_on: str | None = None

    @staticmethod
    def line(service: str, state: str, image: str, exit_code: int = 0) -> str:
        import json

        return json.dumps({"CreatedAt": "2026-01-01 00:00:00 +0000 UTC", "ExitCode": exit_code, "Health": "",
                           "Image": image, "Name": f"k2-{service}-1", "Project": "k2", "Service": service,
                           "State": state}) + "\n"

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> CommandResult:
        argv = list(argv)
        self.calls.append((argv, dict(env)))
        if self.fail_on and self.fail_on in argv:
            return CommandResult(argv, 1, "", "Error response from daemon: pull access denied")
        service = argv[-1]
        if "up" in argv:
            color = service.removeprefix("streamer-")
            self.containers[service] = self.line(service, "running", env[f"K2_IMAGE_{color.upper()}"])
        elif "stop" in argv and service in self.containers:
            container = parse_ps_json(self.containers[service])[0]
            self.containers[service] = self.line(service, "exited", container.image)
        elif "ps" in argv:
            return CommandResult(argv, 0, self.containers.get(service, ""), "")
        elif "logs" in argv:
            return CommandResult(argv, 0, "streamer-green  | K2_PING_INTERVAL_SECONDS=-5: allowed 0.25 .. 3600\n", "")
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
    assert ps_argv(project, "green") in argvs
    assert (tmp_path / "streamer-green.env").read_text() == "K2_LOG_LEVEL=DEBUG\n"


def test_a_restart_without_settings_keeps_the_colors_env_file(tmp_path: Path) -> None:
    """A rollback restarts the previous version as it was: its streamer-<color>.env stays."""
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "compose.yml"), tmp_path / "state",
                             runner=Recorder())
    backend.start("green", "k2-platform:v2.1", standby=False, env={"K2_LOG_LEVEL": "DEBUG"})
    backend.start("green", "k2-platform:v2.1", standby=False)
    assert (tmp_path / "streamer-green.env").read_text() == "K2_LOG_LEVEL=DEBUG\n"
    backend.start("green", "k2-platform:v2.2", standby=False, env={})
    assert (tmp_path / "streamer-green.env").read_text() == "", "a deployment without settings clears them"


def test_instance_urls_follow_the_template_in_the_compose_network(tmp_path: Path) -> None:
    """Inside dagster-daemon the job reaches a color by its service name, not by the host's published port."""
    project = ComposeProject(compose_file=tmp_path / "compose.yml", url_template="http://{service}:{container_port}")
    backend = ComposeBackend(project, tmp_path / "state", runner=Recorder())
    assert backend.start("green", "k2-platform:v2.1", standby=True).base_url == "http://streamer-green:8000"
    assert backend.base_url("green") == "http://streamer-green:8000"


def test_a_color_started_by_hand_is_found_through_compose(tmp_path: Path) -> None:
    """`docker compose up -d` started blue; this backend never did (no instance-blue.json)."""
    project = ComposeProject(compose_file=tmp_path / "compose.yml", url_template="http://{service}:{container_port}")
    recorder = Recorder({"streamer-blue": PS_JSON_LINES})
    backend = ComposeBackend(project, tmp_path / "state", runner=recorder)
    assert backend.is_running("blue") and not backend.is_running("green")
    info = backend.instance("blue")
    assert info is not None
    assert (info.color, info.base_url, info.image, info.standby, info.started_at) == (
        "blue", "http://streamer-blue:8000", "k2-platform:v2.0-stable", False, 1767225600.0)
    assert backend.base_url("blue") == "http://streamer-blue:8000"
    assert backend.instance("green") is None
    assert backend.exit_reason("blue") is None
    assert backend.exit_reason("green") == "streamer-green has no container (never started, or removed)"
    assert not (tmp_path / "state").exists(), "finding a color writes nothing"


def test_a_crashed_container_reports_its_exit_code_and_log(tmp_path: Path) -> None:
    recorder = Recorder({"streamer-green": PS_JSON_LINES_EXITED})
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "c.yml"), tmp_path, runner=recorder)
    assert not backend.is_running("green")
    reason = backend.exit_reason("green")
    assert reason is not None
    assert reason.startswith("container k2-streamer-green-1 is exited (exit code 137); last log lines:\n")
    assert "K2_PING_INTERVAL_SECONDS=-5" in reason
    assert logs_argv(backend.project, "green") == recorder.calls[-1][0]
    info = backend.instance("green")
    assert info is not None and info.image == "k2-platform:v2.1", "the image a rollback would restart"


def test_a_removed_container_leaves_the_recorded_image_for_a_rollback(tmp_path: Path) -> None:
    recorder = Recorder()
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "c.yml"), tmp_path / "state", runner=recorder)
    started = backend.start("blue", "k2-platform:v2.0-stable", standby=False)
    recorder.containers.clear()  # docker compose rm / down
    assert backend.instance("blue") == started
    assert not backend.is_running("blue")


def test_a_recreated_container_is_described_by_compose_not_by_the_old_record(tmp_path: Path) -> None:
    recorder = Recorder()
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "c.yml"), tmp_path / "state", runner=recorder)
    backend.start("blue", "k2-platform:v2.1", standby=True)
    recorder.containers["streamer-blue"] = PS_JSON_LINES  # recreated by hand with another image
    info = backend.instance("blue")
    assert info is not None and (info.image, info.standby) == ("k2-platform:v2.0-stable", False)


def test_the_orchestrator_adopts_the_one_running_color(tmp_path: Path) -> None:
    """Before any deployment the history says nothing: the color compose runs is the active one, and `k2
    deploy start` / StreamerService adopt it instead of starting the other one beside it."""
    recorder = Recorder({"streamer-green": Recorder.line("streamer-green", "running", "k2-platform:v2.0-stable")})
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "c.yml"), tmp_path / "state", runner=recorder)
    history = DeploymentHistory(tmp_path / "state" / "history.jsonl")
    logged: list[str] = []
    deployment = BlueGreenDeployment(backend, history, log=logged.append)
    assert deployment.active_color() == "green"
    state = deployment.plan(DeployConfig(image="k2-platform:v2.1"))
    assert (state.source, state.target) == ("green", "blue")
    assert deployment.ensure_running("green", DeployConfig()) is False
    assert not any("up" in argv for argv, _ in recorder.calls), "an adopted color is not recreated"
    assert logged == ["green already runs (http://127.0.0.1:8002, image k2-platform:v2.0-stable); adopted as it is"]

    recorder.containers["streamer-blue"] = Recorder.line("streamer-blue", "running", "k2-platform:v2.0-stable")
    assert deployment.active_color() == "blue", "two running colors and no history: blue, as on a fresh stack"
    history.append(DeploymentRecord(deployment_id="d1", kind="deploy", status="succeeded", from_color="blue",
                                    to_color="green", active_color="green", image="k2-platform:v2.1",
                                    mode="handover", started_at=0.0))
    assert deployment.active_color() == "green", "once there is a history, it decides"


def test_backend_reports_a_failed_command(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.fail_on = "build"
    backend = ComposeBackend(ComposeProject(compose_file=tmp_path / "c.yml"), tmp_path, runner=recorder)
    with pytest.raises(DeploymentError, match="pull access denied"):
        backend.build("k2-platform:v2.1")


def test_a_missing_env_file_is_named_before_compose_runs(tmp_path: Path) -> None:
    recorder = Recorder()
    project = ComposeProject(compose_file=tmp_path / "compose.yml", env_file=tmp_path / ".env")
    backend = ComposeBackend(project, tmp_path / "state", runner=recorder)
    with pytest.raises(DeploymentError, match=r"compose env file .*\.env is missing or unreadable"):
        backend.is_running("blue")
    assert recorder.calls == []
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nGRAFANA_ADMIN_PASSWORD=x\n")
    assert not backend.is_running("blue")
    assert recorder.calls[0][0][6:8] == ["--env-file", str(tmp_path / ".env")]
