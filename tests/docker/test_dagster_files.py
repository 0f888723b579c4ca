"""docker/dagster/dagster.yaml, workspace.yaml and docker/dagster.Dockerfile, checked with Dagster itself (its
instance config schema, the classes it would load) and against the compose services that use them."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

DAGSTER_YAML = Path("docker/dagster/dagster.yaml")
WORKSPACE_YAML = Path("docker/dagster/workspace.yaml")
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
APP_DIR = "/opt/dagster/app"  # where docker/dagster.Dockerfile copies the repository


@pytest.fixture(scope="module")
def instance_config(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / DAGSTER_YAML).read_text())


def env_references(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node)) if node else set()
    return set()


def test_instance_config_passes_dagsters_schema(repo_root: Path, tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(repo_root / DAGSTER_YAML, tmp_path / "dagster.yaml")
    config, custom_instance_class = dagster_instance_config(str(tmp_path))
    assert custom_instance_class is None
    assert "postgres" in config["storage"], "runs, events and schedules live in PostgreSQL"
    assert config["telemetry"]["enabled"] is False


def test_every_configured_class_imports(instance_config: dict[str, Any]) -> None:
    """Dagster loads these by module and class name when the instance starts; a wrong path fails only then."""
    checked = 0
    for key, value in instance_config.items():
        if isinstance(value, dict) and {"module", "class"} <= set(value):
            module = importlib.import_module(value["module"])
            assert hasattr(module, value["class"]), f"{key}: {value['module']}.{value['class']} does not exist"
            checked += 1
    assert checked >= 2


def test_postgres_storage_is_installed_in_the_image(dagster_dockerfile: Any, instance_config: dict[str, Any]) -> None:
    assert "postgres" in instance_config["storage"]
    runs = " ".join(i.args for i in dagster_dockerfile.instructions if i.keyword == "RUN")
    assert '"dagster-postgres>=0.29,<0.30"' in runs, "dagster-postgres 0.29.x pairs with dagster 1.13.x"


def test_every_env_reference_is_set_on_both_dagster_services(compose: Any, instance_config: dict[str, Any]) -> None:
    needed = env_references(instance_config)
    assert needed >= {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PASSWORD"}
    for service in DAGSTER_SERVICES:
        env = compose.environment(service)
        missing = needed - set(env)
        assert not missing, f"{service} lacks {sorted(missing)} that dagster.yaml reads"
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres" and "postgres" in compose.services
        assert env["DAGSTER_POSTGRES_DB"] == compose.environment("postgres")["POSTGRES_DB"]


def test_dagster_home_holds_the_mounted_dagster_yaml(compose: Any, repo_root: Path, dagster_dockerfile: Any) -> None:
    home = dagster_dockerfile.env()["DAGSTER_HOME"]
    for service in DAGSTER_SERVICES:
        assert compose.host_path(service, f"{home}/dagster.yaml") == repo_root / DAGSTER_YAML


def test_storage_folders_are_shared_volumes(compose: Any, instance_config: dict[str, Any]) -> None:
    """The UI shows compute logs the daemon's runs wrote: both containers must see the same folder."""
    folders = [instance_config[key]["config"]["base_dir"] for key in ("local_artifact_storage", "compute_logs")]
    for service in DAGSTER_SERVICES:
        volumes = {m.target: m.source for m in compose.mounts(service) if m.kind == "volume"}
        for folder in folders:
            owner = [target for target in volumes if folder == target or folder.startswith(target + "/")]
            assert owner, f"{service}: {folder} is not on a named volume"
    sources = [{m.source for m in compose.mounts(s) if m.kind == "volume"} for s in DAGSTER_SERVICES]
    assert sources[0] == sources[1]


def test_both_services_load_the_workspace_file(compose: Any, repo_root: Path) -> None:
    workspace_in_image = f"{APP_DIR}/{WORKSPACE_YAML.as_posix()}"
    for service in DAGSTER_SERVICES:
        entrypoint = compose.service(service)["entrypoint"]
        assert entrypoint[entrypoint.index("--workspace") + 1] == workspace_in_image
    assert (repo_root / WORKSPACE_YAML).is_file()


def test_workspace_loads_the_projects_definitions(repo_root: Path, dagster_dockerfile: Any) -> None:
    copies = [i.args.split() for i in dagster_dockerfile.instructions if i.keyword == "COPY"]
    assert [".", APP_DIR] in copies, f"the image must copy the repository to {APP_DIR}"
    locations = yaml.safe_load((repo_root / WORKSPACE_YAML).read_text())["load_from"]
    assert len(locations) == 1
    target = locations[0]["python_module"]
    assert target["working_directory"] == APP_DIR
    module_file = repo_root / (target["module_name"].replace(".", "/") + ".py")
    if not module_file.is_file():
        pytest.skip(f"{module_file.relative_to(repo_root)} does not exist yet (the Dagster platform work)")
    assert importlib.util.find_spec(target["module_name"]) is not None, target["module_name"]


def test_daemon_can_drive_compose(compose: Any, dagster_dockerfile: Any) -> None:
    """blue_green_deploy's compose backend runs `docker compose` where the runs execute: in the daemon."""
    daemon_mounts = {m.target: m.source for m in compose.mounts("dagster-daemon")}
    assert daemon_mounts.get("/var/run/docker.sock") == "/var/run/docker.sock"
    assert "/var/run/docker.sock" not in {m.target for m in compose.mounts("dagster-webserver")}
    copied = [i.args for i in dagster_dockerfile.instructions if i.keyword == "COPY" and "--from=docker-cli" in i.args]
    assert any("/usr/local/bin/docker" in c for c in copied) and any("cli-plugins" in c for c in copied)
    assert compose.service("dagster-daemon")["healthcheck"]["test"] == ["CMD", "dagster-daemon", "liveness-check"]
