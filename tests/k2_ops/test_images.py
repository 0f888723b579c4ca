"""k2_ops.images without a Docker engine: what the local images are keyed by and named as, and the env files
`k2 compose up` writes. (The live build and run is tests/docker/test_compose_live.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from k2_ops.images import build, compose_stack
from k2_ops.paths import REPO_ROOT


def test_the_rootfs_key_follows_the_package_list() -> None:
    base = build.BASES["python"]
    assert build.base_key(base) == build.base_key(replace(base, packages=tuple(reversed(base.packages))))
    assert build.base_key(base) != build.base_key(replace(base, packages=(*base.packages, "curl")))


def test_mmdebstrap_builds_a_minbase_bookworm_with_the_packages(tmp_path: Path) -> None:
    argv = build.mmdebstrap_argv(build.BASES["jre"], tmp_path / "out.tar")
    assert argv[:2] == ["mmdebstrap", "--variant=minbase"]
    assert "--include=openjdk-17-jre-headless,ca-certificates,curl,passwd" in argv
    assert argv[argv.index(build.SUITE) + 1] == str(tmp_path / "out.tar")


def test_every_image_variable_is_one_compose_yaml_reads_with_an_upstream_default() -> None:
    text = (REPO_ROOT / "docker" / "compose.yaml").read_text()
    for variable, tag in build.compose_env().items():
        defaults = re.findall(rf"\$\{{{variable}:-([^}}]+)\}}", text)
        assert defaults, f"compose.yaml does not read {variable}"
        assert all(not d.startswith("k2-local/") for d in defaults), f"{variable}: the default is upstream"
        assert tag.startswith("k2-local/")


def test_every_local_dockerfile_takes_its_base_as_a_build_argument() -> None:
    for image in build.SERVICE_IMAGES:
        text = (REPO_ROOT / image.dockerfile).read_text()
        assert re.search(r"^ARG BASE_IMAGE=", text, re.MULTILINE) and "FROM ${BASE_IMAGE}" in text, image.dockerfile
    for dockerfile in ("streamer.Dockerfile", "dagster.Dockerfile"):
        text = (REPO_ROOT / "docker" / dockerfile).read_text()
        assert "ARG PYTHON_IMAGE=python:3.11-slim" in text and "# syntax=" not in text, dockerfile


def test_env_files_keep_their_secrets_and_never_overwrite_the_operators(tmp_path: Path) -> None:
    written = compose_stack.write_env_files(tmp_path, {"KAFKA_IMAGE": "k2-local/kafka:4.1.1"})
    assert tmp_path / ".env" in written and tmp_path / "streamer.env" in written
    first = compose_stack.read_env_file(tmp_path / ".env")
    assert len(first["K2_HANDOVER_TOKEN"]) >= 16 and first["KAFKA_IMAGE"] == "k2-local/kafka:4.1.1"
    compose_stack.write_env_files(tmp_path, {"KAFKA_IMAGE": "k2-local/kafka:other"})
    second = compose_stack.read_env_file(tmp_path / ".env")
    assert second["POSTGRES_PASSWORD"] == first["POSTGRES_PASSWORD"], "the volumes were made with it"
    assert second["KAFKA_IMAGE"] == "k2-local/kafka:other"
    streamer = compose_stack.read_env_file(tmp_path / "streamer.env")
    assert streamer["K2_BINANCE_WS_URL"] == "wss://simulator:9443/stream"

    own = tmp_path / "own"
    own.mkdir()
    (own / ".env").write_text("POSTGRES_PASSWORD=mine\n")
    assert own / ".env" not in compose_stack.write_env_files(own, {})
    assert (own / ".env").read_text() == "POSTGRES_PASSWORD=mine\n"


class _FakeDocker:
    """`docker inspect --format {{json .State}} <name>` answered from a dict, without a Docker engine."""

    def __init__(self, states: dict[str, dict[str, object]]) -> None:
        self.states = states

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(args), 0, json.dumps(self.states[args[-1]]), "")


class _InspectedStack(compose_stack.ComposeStack):
    def containers(self) -> list[dict[str, object]]:
        return [{"Name": name, "Service": name} for name in self.engine.docker.states]


def test_start_seconds_skip_a_health_entry_whose_end_time_is_unset(tmp_path: Path) -> None:
    """Docker writes Go's zero time (0001-01-01) for a time it never set: that entry is no start, not a crash."""
    states = {"kafka": {
        "StartedAt": "2026-01-05T10:00:00.000000000Z",
        "Health": {"Log": [
            {"ExitCode": 0, "End": "0001-01-01T00:00:00Z"},
            {"ExitCode": 1, "End": "2026-01-05T10:00:04.5Z"},
            {"ExitCode": 0, "End": "2026-01-05T10:00:12.250000000Z"},
        ]},
    }}
    engine = SimpleNamespace(docker=_FakeDocker(states))
    stack = _InspectedStack(engine, docker_dir=tmp_path)
    assert stack.start_seconds() == {"kafka": 12.25}
