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
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon", "dagster-code")
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
    for service in ("dagster-webserver", "dagster-daemon"):  # dagster-code serves the location itself
        entrypoint = compose.service(service)["entrypoint"]
        assert entrypoint[entrypoint.index("--workspace") + 1] == workspace_in_image
    assert (repo_root / WORKSPACE_YAML).is_file()


def test_workspace_loads_the_projects_definitions(repo_root: Path, dagster_dockerfile: Any, compose: Any) -> None:
    copies = [i.args.split() for i in dagster_dockerfile.instructions if i.keyword == "COPY"]
    assert [".", APP_DIR] in copies, f"the image must copy the repository to {APP_DIR}"
    locations = yaml.safe_load((repo_root / WORKSPACE_YAML).read_text())["load_from"]
    assert len(locations) == 1
    # The webserver and the daemon load the code location from the gRPC code server of dagster-code.
    target = locations[0]["grpc_server"]
    assert target["host"] in compose.services
    entrypoint = compose.service(target["host"])["entrypoint"]
    assert entrypoint[:3] == ["dagster", "code-server", "start"]
    option = dict(zip(entrypoint[3::2], entrypoint[4::2], strict=True))
    assert int(option["--port"]) == target["port"] and option["--location-name"] == target["location_name"]
    assert option["--working-directory"] == APP_DIR
    module = option["--module-name"]
    assert (repo_root / (module.replace(".", "/") + ".py")).is_file(), module
    assert importlib.util.find_spec(module) is not None, module


def test_daemon_can_drive_compose(compose: Any, dagster_dockerfile: Any) -> None:
    """blue_green_deploy's compose backend runs `docker compose` where the runs execute: in the code server
    (the DefaultRunLauncher starts runs there when the location is a gRPC server)."""
    code_mounts = {m.target: m.source for m in compose.mounts("dagster-code")}
    assert code_mounts.get("/var/run/docker.sock") == "/var/run/docker.sock"
    for other in ("dagster-webserver", "dagster-daemon"):
        assert "/var/run/docker.sock" not in {m.target for m in compose.mounts(other)}
    copied = [i.args for i in dagster_dockerfile.instructions if i.keyword == "COPY" and "--from=docker-cli" in i.args]
    assert any("/usr/local/bin/docker" in c for c in copied) and any("cli-plugins" in c for c in copied)
    assert compose.service("dagster-daemon")["healthcheck"]["test"] == ["CMD", "dagster-daemon", "liveness-check"]


# ---- the Dagster resources in this stack (dagster_project/definitions.py reads the K2_* environment) ----------

# Without these the resources look for a local stack's .run/stack.json, which does not exist in this stack.
PRODUCTION_SETTINGS = frozenset({
    "K2_DEPLOY_BACKEND", "K2_DEPLOY_INSTANCE_URL_TEMPLATE", "K2_PROMETHEUS_URL", "K2_ALERTMANAGER_URL",
    "K2_KAFKA_BOOTSTRAP_SERVERS",
})
# Where the compose backend in dagster-daemon finds the operator's checkout (compose file, .env, build context).
DAEMON_SETTINGS = frozenset({"K2_DEPLOY_COMPOSE_FILE", "K2_DEPLOY_COMPOSE_ENV_FILE", "K2_DEPLOY_BUILD_CONTEXT"})


class RecordingEnv(dict[str, str]):
    """A process environment that remembers every name the code asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def dagster_resources(compose: Any, service: str) -> dict[str, Any]:
    from dagster_project.definitions import resources

    return resources(compose.environment(service))


def service_address(compose: Any, url_or_address: str) -> tuple[str, int]:
    """("prometheus", 9090) from http://prometheus:9090 or kafka:9092; the service must exist."""
    host, _, port = url_or_address.removeprefix("http://").rstrip("/").partition(":")
    assert host in compose.services, f"{url_or_address}: no compose service {host!r}"
    return host, int(port)


def test_every_k2_variable_of_the_dagster_services_is_read_by_the_definitions(compose: Any) -> None:
    from dagster_project.definitions import resources

    for service in DAGSTER_SERVICES:
        env = RecordingEnv(compose.environment(service))
        resources(env)
        unread = sorted(key for key in env if key.startswith("K2_") and key not in env.asked)
        assert not unread, f"{service} sets K2_* variables dagster_project/definitions.py never reads: {unread}"


def test_the_dagster_services_point_the_resources_at_this_stack(compose: Any, repo_root: Path) -> None:
    scrape_interval = yaml.safe_load((repo_root / "docker/prometheus/prometheus.yml").read_text())["global"][
        "scrape_interval"]
    kafka_advertised = dict(item.split("://") for item in
                            compose.environment("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for service in DAGSTER_SERVICES:
        env = compose.environment(service)
        missing = sorted(PRODUCTION_SETTINGS - set(env))
        assert not missing, f"{service} lacks {missing}"
        resources = dagster_resources(compose, service)
        for name, resource in (("prometheus", resources["prometheus"]), ("alertmanager", resources["alertmanager"])):
            host, port = service_address(compose, resource.resolved_url())
            assert host == name and port in {c for _, _, c in compose.published_ports(name)}, resource.url
        assert resources["prometheus"].scrape_interval_seconds == float(scrape_interval.removesuffix("s"))
        deployment = resources["deployment"]
        assert deployment.backend == "compose"
        assert deployment.settings().bootstrap_servers() == kafka_advertised["PLAINTEXT"] == "kafka:9092"
        service_address(compose, deployment.kafka_bootstrap_servers)
        project = deployment.make_backend().project
        assert project.project == compose.doc["name"]
        for color in ("blue", "green"):
            streamer = f"streamer-{color}"
            port = int(compose.environment(streamer)["K2_METRICS_PORT"])
            assert project.instance_url(color) == f"http://{streamer}:{port}", "the color inside the compose network"


def test_the_daemon_drives_compose_on_the_operators_checkout(compose: Any, repo_root: Path, docker_dir: Path) -> None:
    """Compose interpolates the whole file at load (${POSTGRES_PASSWORD:?...}), so `docker compose` in the daemon
    needs the operator's docker/.env, which the image does not hold (dockerignored): the daemon mounts the
    checkout and passes --env-file. These are the exact commands its compose backend runs."""
    from k2_ops.deploy.compose import build_argv, ps_argv, up_argv

    env = compose.environment("dagster-code")
    assert set(env) >= DAEMON_SETTINGS, f"dagster-code lacks {sorted(DAEMON_SETTINGS - set(env))}"
    project = dagster_resources(compose, "dagster-code")["deployment"].make_backend().project
    checkout = env["K2_DEPLOY_BUILD_CONTEXT"]
    base = ["docker", "compose", "--project-name", "k2", "--file", f"{checkout}/docker/compose.yaml",
            "--env-file", f"{checkout}/docker/.env"]
    assert ps_argv(project, "blue") == [*base, "ps", "--all", "--format", "json", "streamer-blue"]
    assert up_argv(project, "green") == [*base, "--profile", "green", "up", "--detach", "--no-deps", "--no-build",
                                         "--force-recreate", "streamer-green"]
    # The base the stack's own streamer image is built from (python:3.11-slim unless .env names a local one).
    assert build_argv(project, "k2-platform:v2.1") == [
        "docker", "build", "--build-arg", "PYTHON_IMAGE=python:3.11-slim", "--tag", "k2-platform:v2.1",
        "--file", f"{checkout}/docker/streamer.Dockerfile", checkout]

    # What those paths are on the Docker host: this repository's files.
    assert compose.host_path("dagster-code", str(project.compose_file)) == docker_dir / "compose.yaml"
    assert compose.host_path("dagster-code", str(project.env_file)) == docker_dir / ".env"
    assert compose.host_path("dagster-code", str(project.build_context)) == repo_root
    assert compose.host_path("dagster-code", f"{checkout}/docker/streamer.Dockerfile").is_file()
    assert "docker/.env" in (docker_dir / ".env.example").read_text(), "operators create .env where it is read"

    # The new color's settings file: written by the backend next to the compose file, read by compose for green.
    settings_file = project.compose_file.parent / "streamer-green.env"
    assert compose.host_path("dagster-code", str(settings_file)) == docker_dir / "streamer-green.env"
    writable = [m for m in compose.mounts("dagster-code") if m.target == str(project.compose_file.parent)]
    assert len(writable) == 1 and not writable[0].read_only, "the backend writes streamer-<color>.env there"
    read_only = [m for m in compose.mounts("dagster-code") if m.target == checkout]
    assert len(read_only) == 1 and read_only[0].read_only, "the rest of the checkout is only read"
    green_env_files = [e["path"] if isinstance(e, dict) else e for e in compose.service("streamer-green")["env_file"]]
    assert settings_file.name in green_env_files


def test_without_the_env_file_compose_cannot_even_load(load_compose_with: Any) -> None:
    """What every compose command in the daemon would hit without --env-file: its own environment has
    DAGSTER_POSTGRES_PASSWORD (and the handover token), not POSTGRES_PASSWORD."""
    with pytest.raises(ValueError, match=r"(POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD): set \w+ in docker/\.env"):
        load_compose_with({"DAGSTER_POSTGRES_PASSWORD": "x", "K2_HANDOVER_TOKEN": "t" * 20})
