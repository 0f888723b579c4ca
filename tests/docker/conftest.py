"""Shared reading of the production Docker files (no Docker engine runs here: every check is static or
runs the real tool the file is for: promtool, amtool, Dagster's instance schema, the streamer itself).

`compose` is docker/compose.yaml parsed with PyYAML (anchors and `<<` merge keys resolved), with compose's
`${VAR}` interpolation applied from a fixed environment: the defaults written in the file, plus
`REQUIRED_VARIABLES` for the variables the file demands (`${VAR:?message}`).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
STREAMER_SERVICES = ("streamer-blue", "streamer-green")

# Values for the variables compose.yaml requires (`${VAR:?...}`): an operator puts them in docker/.env.
REQUIRED_VARIABLES = {"POSTGRES_PASSWORD": "test-password", "GRAFANA_ADMIN_PASSWORD": "test-password",
                      "K2_HANDOVER_TOKEN": "test-handover-token-0123456789"}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if unset_or_empty else str(value)
        if op in (":?", "?"):
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg}")
            return str(value)
        return "" if value is None else value

    return _VARIABLE.sub(replace, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def variables_used(text: str) -> set[str]:
    return {m.group("braced") or m.group("plain") for m in _VARIABLE.finditer(text) if not m.group("escaped")}


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind" | "volume"
    source: str
    target: str
    read_only: bool


@dataclass
class ComposeFile:
    path: Path
    raw: dict[str, Any]
    doc: dict[str, Any]  # interpolated

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.doc["services"]

    def service(self, name: str) -> dict[str, Any]:
        assert name in self.services, f"{self.path.name} has no service {name!r}"
        return self.services[name]

    def environment(self, name: str) -> dict[str, str]:
        env = self.service(name).get("environment") or {}
        if isinstance(env, list):  # ["KEY=value", ...]
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {str(k): "" if v is None else str(v) for k, v in env.items()}

    def mounts(self, name: str) -> list[Mount]:
        result = []
        for entry in self.service(name).get("volumes") or []:
            if isinstance(entry, dict):
                source, target = str(entry.get("source", "")), str(entry["target"])
                read_only = bool(entry.get("read_only", False))
                kind = entry.get("type", "volume")
            else:
                parts = str(entry).split(":")
                source, target = parts[0], parts[1]
                read_only = len(parts) > 2 and "ro" in parts[2].split(",")
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            result.append(Mount(kind, source, target, read_only))
        return result

    def resolve(self, relative: str) -> Path:
        """A host path as compose resolves it: relative to the compose file's folder."""
        return (self.path.parent / relative).resolve()

    def host_path(self, name: str, container_path: str) -> Path:
        """The host file or folder that service `name` sees at `container_path` through a bind mount."""
        best: Mount | None = None
        for mount in self.mounts(name):
            if mount.kind != "bind":
                continue
            target = mount.target.rstrip("/")
            if (container_path == target or container_path.startswith(target + "/")) and (
                best is None or len(target) > len(best.target.rstrip("/"))
            ):
                best = mount
        assert best is not None, f"service {name!r} has no bind mount covering {container_path}"
        rest = container_path[len(best.target.rstrip("/")):].lstrip("/")
        base = self.resolve(best.source)
        return base / rest if rest else base

    def published_ports(self, name: str) -> list[tuple[str, int, int]]:
        """(host ip, host port, container port) of each `ports` entry in "ip:host:container" form."""
        result = []
        for entry in self.service(name).get("ports") or []:
            parts = str(entry).split(":")
            assert len(parts) == 3, f"{name}: publish ports as 'ip:host:container', got {entry!r}"
            result.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
        return result


def load_compose(env: dict[str, str] | None = None) -> ComposeFile:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return ComposeFile(COMPOSE_FILE, raw, interpolate_tree(raw, dict(REQUIRED_VARIABLES if env is None else env)))


@pytest.fixture(scope="session")
def compose() -> ComposeFile:
    return load_compose()


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def docker_dir() -> Path:
    return DOCKER_DIR


@pytest.fixture(scope="session")
def load_compose_with() -> Any:
    """load_compose(env): the compose file interpolated from another environment."""
    return load_compose


@pytest.fixture(scope="session")
def interpolate_text() -> Any:
    return interpolate


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # continuation lines joined
    stage: int  # 0 for the first FROM, 1 for the second, ...


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction]

    def stage_count(self) -> int:
        return 1 + max(i.stage for i in self.instructions)

    def final(self, keyword: str) -> list[Instruction]:
        last = self.stage_count() - 1
        return [i for i in self.instructions if i.keyword == keyword and i.stage == last]

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON array of the final stage's (last) ENTRYPOINT/CMD/HEALTHCHECK CMD, parsed."""
        found = self.final(keyword)
        assert found, f"{self.path.name}: no {keyword} in the final stage"
        text = found[-1].args
        if keyword == "HEALTHCHECK":
            match = re.search(r"(?:^|\s)CMD\s+(.*)$", text)
            assert match, f"{self.path.name}: HEALTHCHECK without CMD"
            text = match.group(1)
        value = json.loads(text.strip())
        assert isinstance(value, list), f"{self.path.name}: {keyword} must be exec form (a JSON array)"
        return value

    def healthcheck_options(self) -> dict[str, str]:
        found = self.final("HEALTHCHECK")
        assert found, f"{self.path.name}: no HEALTHCHECK in the final stage"
        return dict(re.findall(r"--([a-z-]+)=(\S+)", found[-1].args.split(" CMD ")[0]))

    def args(self) -> dict[str, str]:
        """ARG defaults, global and per stage (later ones win)."""
        result: dict[str, str] = {}
        for instruction in self.instructions:
            if instruction.keyword == "ARG" and "=" in instruction.args:
                key, value = instruction.args.split("=", 1)
                result[key.strip()] = value.strip()
        return result

    def env(self) -> dict[str, str]:
        """ENV of the final stage (KEY=value pairs, shell-quoted values allowed)."""
        result: dict[str, str] = {}
        for instruction in self.final("ENV"):
            for pair in shlex.split(instruction.args):
                key, value = pair.split("=", 1)
                result[key] = value
        return result

    def labels(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for instruction in self.final("LABEL"):
            for pair in shlex.split(instruction.args):
                key, value = pair.split("=", 1)
                result[key] = value
        return result


def parse_dockerfile(path: Path) -> Dockerfile:
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), max(stage, 0)))
    return Dockerfile(path, instructions)


@pytest.fixture(scope="session")
def streamer_dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKER_DIR / "streamer.Dockerfile")


@pytest.fixture(scope="session")
def dagster_dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKER_DIR / "dagster.Dockerfile")
