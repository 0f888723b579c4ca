"""docker/compose.yaml, checked without a Docker engine: it parses, everything it mounts or builds from exists,
every service has a healthcheck, the two streamers are set up for blue-green, and every K2_* variable it
sets is a real streamer setting whose value the streamer's own config validation accepts."""

from __future__ import annotations

import base64
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from streamer.config import ConfigError, describe_settings, load_config

STREAMERS = ("streamer-blue", "streamer-green")
# Their K2_* variables configure the Dagster resources, not a streamer: test_dagster_files.py checks them against
# dagster_project/definitions.py.
# The k2-dagster image's services (the simulator runs `k2 simulator` from it).
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon", "dagster-code", "simulator")
# The one repository mount that is writable: the deploy job (in dagster-daemon) writes streamer-<color>.env there.
WRITABLE_REPOSITORY_MOUNTS = {("dagster-code", "/opt/k2-checkout/docker")}
REQUIRED_SERVICES = {
    "kafka", "schema-registry", "prometheus", "alertmanager", "grafana", "postgres",
    "dagster-webserver", "dagster-daemon", "dagster-code", "simulator", *STREAMERS,
}
DEFAULT_IMAGE = "k2-platform:v2.0-stable"

# The env-name table of issue 3 (the streamer's configuration contract that docs and compose use). The check
# below uses the streamer's config object (`describe_settings()`); this constant only guards that the
# config object still offers every name of the contract.
ISSUE_3_CONTRACT_ENV_NAMES = frozenset({
    "K2_BINANCE_WS_URL", "K2_BINANCE_SYMBOLS", "K2_BINANCE_STREAMS", "K2_SSL_VERIFY", "K2_SSL_CA_FILE",
    "K2_CONNECTION_MAX_LIFETIME_SECONDS", "K2_PING_INTERVAL_SECONDS", "K2_PING_TIMEOUT_SECONDS",
    "K2_HEALTH_CHECK_TIMEOUT_SECONDS", "K2_MEMORY_SAMPLE_INTERVAL_SECONDS", "K2_SERIALIZER_CACHE_MAX_SIZE",
    "K2_KAFKA_BOOTSTRAP_SERVERS", "K2_KAFKA_TOPIC_PREFIX", "K2_SCHEMA_REGISTRY_URL", "K2_MAX_BUFFERED_MESSAGES",
    "K2_METRICS_HOST", "K2_METRICS_PORT", "K2_INSTANCE", "K2_TEST_LEAK_BYTES_PER_SECOND",
})


def streamer_setting_names() -> set[str]:
    return {setting["env"] for setting in describe_settings()}


def duration_seconds(text: str) -> float:
    """A compose duration such as 45s, 1m30s, 2m."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ---- the file itself ---------------------------------------------------------------------------------------

def test_compose_parses_and_has_every_service(compose: Any) -> None:
    assert compose.doc["name"] == "k2", "the deploy backend drives the compose project named k2"
    missing = REQUIRED_SERVICES - set(compose.services)
    assert not missing, f"services missing from docker/compose.yaml: {sorted(missing)}"


def test_no_fixed_container_names(compose: Any) -> None:
    fixed = [name for name, service in compose.services.items() if "container_name" in service]
    assert not fixed, f"container_name breaks running two colors and scaling: {fixed}"


def test_every_service_has_a_healthcheck(compose: Any) -> None:
    for name, service in compose.services.items():
        check = service.get("healthcheck")
        assert check, f"service {name} has no healthcheck"
        assert not check.get("disable"), f"service {name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, (
            f"service {name}: healthcheck test must be ['CMD', ...] or ['CMD-SHELL', '...'], got {test!r}"
        )
        for key in ("interval", "timeout"):
            assert key in check, f"service {name}: healthcheck without {key}"
            duration_seconds(check[key])


def test_every_image_is_pinned_to_a_tag(compose: Any) -> None:
    for name, service in compose.services.items():
        image = service.get("image")
        assert image, f"service {name} has no image (and tag)"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"service {name}: pin a version, not {image!r}"


def test_every_bind_mount_and_env_file_exists(compose: Any) -> None:
    declared_volumes = set(compose.doc.get("volumes") or {})
    for name in compose.services:
        for mount in compose.mounts(name):
            if mount.kind == "volume":
                assert mount.source in declared_volumes, f"{name}: volume {mount.source!r} is not declared"
                continue
            if mount.source == "/var/run/docker.sock":
                continue  # the Docker host's socket, not a repository file
            source = compose.resolve(mount.source)
            assert source.exists(), f"{name}: bind mount source {mount.source} -> {source} does not exist"
            if (name, mount.target) not in WRITABLE_REPOSITORY_MOUNTS:
                assert mount.read_only, f"{name}: mount repository files read-only ({mount.source})"
        for entry in compose.service(name).get("env_file") or []:
            entry = {"path": entry} if isinstance(entry, str) else entry
            if entry.get("required", True):
                path = compose.resolve(entry["path"])
                assert path.is_file(), f"{name}: required env_file {entry['path']} -> {path} does not exist"


def test_every_build_context_and_dockerfile_exists(compose: Any, repo_root: Path) -> None:
    built = 0
    for name, service in compose.services.items():
        build = service.get("build")
        if build is None:
            continue
        built += 1
        context = compose.resolve(build["context"])
        assert context == repo_root, f"{name}: build from the repository root, not {context}"
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        ignore = Path(f"{dockerfile}.dockerignore")
        assert ignore.is_file(), f"{name}: no per-Dockerfile ignore file {ignore.name} next to {dockerfile.name}"
    assert built >= 4, "streamers and Dagster services build their images from this repository"


def test_depends_on_names_real_services_and_never_a_profiled_one(compose: Any) -> None:
    for name, service in compose.services.items():
        depends = service.get("depends_on") or {}
        for other, spec in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert other in compose.services, f"{name} depends on unknown service {other}"
            assert not compose.service(other).get("profiles"), f"{name} depends on profiled service {other}"
            if spec.get("condition") == "service_healthy":
                assert compose.service(other).get("healthcheck"), f"{other} has no healthcheck to wait for"


def test_published_ports_are_loopback_and_distinct(compose: Any) -> None:
    seen: dict[int, str] = {}
    for name in compose.services:
        for host_ip, host_port, _ in compose.published_ports(name):
            assert host_ip == "127.0.0.1", f"{name}: publish on 127.0.0.1 (a proxy exposes what must be)"
            assert host_port not in seen, f"host port {host_port} published by {seen.get(host_port)} and {name}"
            seen[host_port] = name


def test_required_variables_fail_loudly_when_missing(load_compose_with: Any) -> None:
    """`${POSTGRES_PASSWORD:?...}`: compose refuses to start without it instead of using an empty password."""
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        load_compose_with({"GRAFANA_ADMIN_PASSWORD": "x", "K2_HANDOVER_TOKEN": "t" * 20})
    # The handover token too: without it the colors' POST /handover/* would refuse every deploy.
    with pytest.raises(ValueError, match="K2_HANDOVER_TOKEN"):
        load_compose_with({"GRAFANA_ADMIN_PASSWORD": "x", "POSTGRES_PASSWORD": "x"})


def test_kafka_is_a_single_kraft_node_with_a_valid_cluster_id(compose: Any) -> None:
    kafka = compose.service("kafka")
    assert kafka["image"].startswith("apache/kafka:"), "the official Apache Kafka image"
    env = compose.environment("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    # kafka-storage format only takes a base64url-encoded 16-byte UUID.
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 and len(cluster_id) == 22, cluster_id
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols), "every listener needs a security protocol"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised, "a controller listener is not advertised"
    assert advertised["PLAINTEXT"] == "kafka:9092", "containers reach the broker as kafka:9092"
    published = {container for _, _, container in compose.published_ports("kafka")}
    for name, address in advertised.items():
        if not address.startswith("kafka:"):
            port = int(address.rsplit(":", 1)[1])
            assert port in published, f"advertised {name} listener {address} is not published"


# ---- the two streamers --------------------------------------------------------------------------------------

def test_green_only_starts_with_its_profile(compose: Any) -> None:
    assert not compose.service("streamer-blue").get("profiles"), "blue runs with a plain `docker compose up`"
    assert compose.service("streamer-green").get("profiles") == ["green"]


def test_streamers_have_distinct_published_metrics_ports(compose: Any) -> None:
    host_ports = []
    for name in STREAMERS:
        env = compose.environment(name)
        published = compose.published_ports(name)
        assert len(published) == 1, f"{name}: publish exactly the metrics port"
        _, host_port, container_port = published[0]
        assert container_port == int(env["K2_METRICS_PORT"]), f"{name}: publish the port the streamer serves"
        assert env["K2_METRICS_HOST"] == "0.0.0.0", f"{name}: listen beyond the container's loopback"
        host_ports.append(host_port)
    assert len(set(host_ports)) == len(STREAMERS)


def test_streamer_identity_image_and_mode_variables(compose: Any, load_compose_with: Any) -> None:
    for name in STREAMERS:
        color = name.removeprefix("streamer-")
        assert compose.environment(name)["K2_INSTANCE"] == color
        assert compose.service(name)["image"] == DEFAULT_IMAGE, "default image of the deploy job"
        raw_image = compose.raw["services"][name]["image"]
        assert raw_image == f"${{K2_IMAGE_{color.upper()}:-{DEFAULT_IMAGE}}}", raw_image
    chosen = load_compose_with({"POSTGRES_PASSWORD": "x", "GRAFANA_ADMIN_PASSWORD": "x", "K2_HANDOVER_TOKEN": "t" * 20,
                                "K2_IMAGE_GREEN": "k2-platform:v2.1", "K2_START_MODE_GREEN": "standby"})
    assert chosen.service("streamer-green")["image"] == "k2-platform:v2.1"
    assert chosen.environment("streamer-green")["K2_START_MODE"] == "standby"
    assert chosen.service("streamer-blue")["image"] == DEFAULT_IMAGE, "choosing green's image leaves blue alone"
    assert chosen.environment("streamer-blue")["K2_START_MODE"] == "active"


def test_compose_matches_the_deploy_backend_conventions(compose: Any, load_compose_with: Any) -> None:
    """k2_ops/deploy/compose.py (the compose backend of blue_green_deploy) names services, image and mode
    variables and host ports; this file must use the same ones, or the job drives nothing."""
    deploy = importlib.import_module("k2_ops.deploy.compose")
    for name in STREAMERS:
        color = name.removeprefix("streamer-")
        assert deploy.service_name(color) == name
        assert f"${{{deploy.image_variable(color)}:-" in compose.raw["services"][name]["image"]
        assert f"${{{deploy.start_mode_variable(color)}:-" in str(compose.raw["services"][name]["environment"])
        _, host_port, container_port = compose.published_ports(name)[0]
        assert host_port == deploy.DEFAULT_HOST_PORTS[color], f"{name}: the backend probes port {host_port}"
        assert container_port == deploy.CONTAINER_METRICS_PORT


def test_health_check_timeout_is_30_seconds(compose: Any) -> None:
    for name in STREAMERS:
        env = compose.environment(name)
        assert env.get("K2_HEALTH_CHECK_TIMEOUT_SECONDS") == "30", f"{name}: seed requirement 60 s -> 30 s"
        assert load_config(env).health_timeout_s == 30.0


def test_every_k2_variable_is_a_real_streamer_setting(compose: Any, repo_root: Path) -> None:
    """Checked against the streamer's config object (streamer.config.describe_settings())."""
    known = streamer_setting_names()
    missing_from_config = ISSUE_3_CONTRACT_ENV_NAMES - known
    assert not missing_from_config, f"the config object lost contract settings: {sorted(missing_from_config)}"
    for name in compose.services:
        if name in DAGSTER_SERVICES:
            continue
        unknown = sorted(key for key in compose.environment(name) if key.startswith("K2_") and key not in known)
        assert not unknown, f"{name} sets K2_* variables the streamer does not have: {unknown}"
    for name in STREAMERS:
        assert sum(key.startswith("K2_") for key in compose.environment(name)) >= 8, f"{name}: settings not found"


def test_streamer_environment_passes_the_streamers_own_validation(compose: Any) -> None:
    """The exact environment each streamer container gets (image ENV, then compose) loads without error."""
    for name in STREAMERS:
        env = compose.environment(name)
        try:
            config = load_config(env)
        except ConfigError as exc:
            pytest.fail(f"{name}: the streamer would refuse to start: {exc}")
        assert config.instance == name.removeprefix("streamer-")
        assert config.metrics_host == "0.0.0.0"


def test_stop_grace_period_outlasts_the_kafka_flush(compose: Any) -> None:
    """docker stop: SIGTERM, then SIGKILL after the grace period. The streamer needs the flush timeout plus
    a little to close its sockets, or buffered messages die with it."""
    for name in STREAMERS:
        service = compose.service(name)
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        grace = duration_seconds(service["stop_grace_period"])
        flush = load_config(compose.environment(name)).shutdown_flush_timeout_s
        assert grace >= flush + 10, f"{name}: stop_grace_period {grace} s vs flush timeout {flush} s"


def test_streamers_point_at_the_stacks_kafka_and_schema_registry(compose: Any) -> None:
    registry_ports = {container for _, _, container in compose.published_ports("schema-registry")}
    for name in STREAMERS:
        config = load_config(compose.environment(name))
        assert config.kafka_bootstrap_servers == "kafka:9092"
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)(/.*)", config.schema_registry_url)
        assert match, config.schema_registry_url
        host, port, path = match.group(1), int(match.group(2)), match.group(3)
        assert host == "schema-registry" and port in registry_ports
        if "apicurio" in compose.service("schema-registry")["image"]:
            assert path == "/apis/ccompat/v7", "Apicurio's Confluent-compatible API"
        depends = compose.service(name)["depends_on"]
        assert depends["kafka"]["condition"] == depends["schema-registry"]["condition"] == "service_healthy"


def test_streamers_log_with_rotation(compose: Any) -> None:
    for name in STREAMERS:
        logging = compose.service(name).get("logging") or {}
        assert logging.get("options", {}).get("max-size"), f"{name}: weeks of logs must not fill the disk"


def test_env_example_documents_every_variable(docker_dir: Path) -> None:
    text = (docker_dir / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    example = (docker_dir / ".env.example").read_text()
    undocumented = sorted(name for name in used if not re.search(rf"^#?\s*{name}=", example, re.MULTILINE))
    assert not undocumented, f"docker/.env.example does not mention {undocumented}"


def test_readme_documents_every_service_port_and_volume(compose: Any, docker_dir: Path) -> None:
    readme = (docker_dir / "README.md").read_text()
    assert "CI builds every image and runs this stack on a real Docker engine" in readme
    for name in compose.services:
        assert f"`{name}`" in readme, f"docker/README.md does not describe service {name}"
        for _, host_port, container_port in compose.published_ports(name):
            assert f"{host_port} → {container_port}" in readme, f"README lacks {name}'s port {host_port}"
    for volume in compose.doc.get("volumes") or {}:
        assert f"`{volume}`" in readme, f"docker/README.md does not describe volume {volume}"
