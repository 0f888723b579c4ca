"""docker/streamer.Dockerfile without a Docker engine.

Static checks read the Dockerfile: slim Python 3.11 base, non-root user, exec-form ENTRYPOINT `k2-streamer`,
STOPSIGNAL SIGTERM, HEALTHCHECK on /healthz, OCI labels, version = pyproject's. The dependency checks then
rebuild the image's Python environment here: a fresh virtualenv holding only the distributions that
the image's requirements pull in (pyproject.toml's [tool.k2.streamer-image] subset, printed by
docker/pyproject_requirements.py; resolved from the installed metadata, with extras and markers)
plus the sources the Dockerfile copies (after its .dockerignore). In that environment every module the
streamer imports must import, and the real streamer, started the way the ENTRYPOINT starts it, must pass
the image's HEALTHCHECK command and exit 0 on SIGTERM.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from k2_ops.stack.ports import allocate_port
from streamer.config import describe_settings

REQUIREMENTS_SCRIPT = Path("docker/pyproject_requirements.py")
IGNORE_FILE = Path("docker/streamer.Dockerfile.dockerignore")
# Heavy parts of the platform that the streamer image must not carry.
NOT_IN_STREAMER_IMAGE = {"dagster", "dagster-webserver", "matplotlib", "pytest", "hypothesis", "ruff"}


# ---- the Dockerfile ---------------------------------------------------------------------------------------

def test_base_image_is_python_3_11_slim(streamer_dockerfile: Any) -> None:
    args = streamer_dockerfile.args()
    for instruction in streamer_dockerfile.instructions:
        if instruction.keyword == "FROM":
            image = instruction.args.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            assert image == "python:3.11-slim", f"every stage builds on python:3.11-slim, not {image}"
    assert streamer_dockerfile.stage_count() == 2, "a build stage and a runtime stage (no compilers shipped)"


def test_runs_as_a_non_root_user(streamer_dockerfile: Any) -> None:
    users = streamer_dockerfile.final("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    assert user.isdigit(), "a numeric uid, so runAsNonRoot-style checks can verify it"


def test_entrypoint_is_exec_form_k2_streamer(streamer_dockerfile: Any, pyproject: dict[str, Any]) -> None:
    """Exec form: PID 1 is the streamer's Python, so `docker stop`'s SIGTERM reaches its handler."""
    assert streamer_dockerfile.exec_form("ENTRYPOINT") == ["k2-streamer"]
    assert pyproject["project"]["scripts"]["k2-streamer"] == "streamer.__main__:main"
    assert not streamer_dockerfile.final("CMD"), "no CMD: arguments would be appended to k2-streamer"
    stop = streamer_dockerfile.final("STOPSIGNAL")
    assert stop and stop[-1].args == "SIGTERM"


def test_healthcheck_probes_healthz_with_python_only(streamer_dockerfile: Any) -> None:
    argv = streamer_dockerfile.exec_form("HEALTHCHECK")
    assert argv[:2] == ["python", "-c"], "python's urllib: the slim image has no curl"
    assert "/healthz" in argv[2] and "K2_METRICS_PORT" in argv[2]
    options = streamer_dockerfile.healthcheck_options()
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)


def test_oci_labels_and_version(streamer_dockerfile: Any, pyproject: dict[str, Any]) -> None:
    version = pyproject["project"]["version"]
    assert streamer_dockerfile.args()["VERSION"] == version, "ARG VERSION must follow pyproject.toml"
    labels = streamer_dockerfile.labels()
    for key in ("title", "description", "version", "revision", "created", "ref.name"):
        assert f"org.opencontainers.image.{key}" in labels, f"missing OCI label {key}"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.ref.name"] == "k2-platform:${VERSION}"


def test_image_env_sets_only_real_streamer_settings(streamer_dockerfile: Any) -> None:
    known = {setting["env"] for setting in describe_settings()}
    env = streamer_dockerfile.env()
    k2 = {key for key in env if key.startswith("K2_")}
    assert k2 <= known, f"ENV sets unknown streamer settings: {sorted(k2 - known)}"
    assert env["K2_METRICS_HOST"] == "0.0.0.0", "127.0.0.1 inside a container is unreachable for Prometheus"


# ---- build context --------------------------------------------------------------------------------------------

def ignore_patterns(repo_root: Path) -> list[str]:
    lines = (repo_root / IGNORE_FILE).read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "re-include patterns are not supported by this check"
    return patterns


def is_ignored(relative: str, patterns: Iterable[str]) -> bool:
    """Docker's rule for the patterns used here: a pattern excludes a path or any folder above it; `**/`
    matches any number of leading folders."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            if any(fnmatch.fnmatchcase("/".join(parts[i:j]), tail)
                   for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_dockerignore_keeps_local_state_and_tests_out(repo_root: Path) -> None:
    patterns = ignore_patterns(repo_root)
    for path in (".venv/bin/python", ".cache/kafka-4.1.1/libs/x.jar", ".run/prometheus/data", "tests/docker/x.py",
                 ".git/HEAD", "streamer/__pycache__/app.cpython-311.pyc", "docker/.env", "docker/streamer-blue.env"):
        assert is_ignored(path, patterns), f"{path} would enter the build context"
    for path in ("pyproject.toml", "README.md", "streamer/app.py", "streamer/schemas/trade.avsc",
                 "docker/pyproject_requirements.py"):
        assert not is_ignored(path, patterns), f"{path} is needed by the build but ignored"


def copied_sources(dockerfile: Any) -> list[str]:
    sources = []
    for instruction in dockerfile.instructions:
        if instruction.keyword == "COPY" and "--from=" not in instruction.args:
            sources += instruction.args.split()[:-1]
    return sources


def test_every_copied_source_exists_and_is_not_ignored(streamer_dockerfile: Any, repo_root: Path) -> None:
    patterns = ignore_patterns(repo_root)
    sources = copied_sources(streamer_dockerfile)
    assert "streamer" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (repo_root / source).exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source, patterns), f"COPY {source}: excluded by {IGNORE_FILE}"


def test_package_data_ships_every_streamer_resource(pyproject: dict[str, Any], repo_root: Path) -> None:
    """The wheel the image installs must carry the Avro schemas (and any other non-Python file)."""
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    for path in (repo_root / "streamer").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc"):
            assert any(fnmatch.fnmatch(path.name, p) for p in patterns), f"{path} is not packaged"


# ---- runtime dependencies --------------------------------------------------------------------------------------

def image_requirements(repo_root: Path) -> list[Requirement]:
    """What the Dockerfile installs: the script's output, run as the build runs it."""
    done = subprocess.run([sys.executable, str(repo_root / REQUIREMENTS_SCRIPT), str(repo_root / "pyproject.toml"),
                           "--streamer"], capture_output=True, text=True, check=True)
    return [Requirement(line) for line in done.stdout.splitlines() if line.strip()]


def test_requirement_ranges_equal_pyproject(repo_root: Path, pyproject: dict[str, Any]) -> None:
    declared = {canonicalize_name(r.name): r for r in map(Requirement, pyproject["project"]["dependencies"])}
    for requirement in image_requirements(repo_root):
        name = canonicalize_name(requirement.name)
        assert name in declared, f"{requirement.name} is not a dependency in pyproject.toml"
        assert requirement.specifier == declared[name].specifier, (
            f"{requirement.name}: image wants {requirement.specifier}, pyproject {declared[name].specifier}"
        )


def resolve_closure(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Every distribution pip would install for `requirements`, found among the installed ones (the
    versions the tests run), following extras and environment markers for this Python on Linux."""
    environment = default_environment()
    found: dict[str, metadata.Distribution] = {}
    queue = [(r, set(r.extras)) for r in requirements]
    while queue:
        requirement, extras = queue.pop()
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} is needed by the image but not installed here")
        assert requirement.specifier.contains(dist.version, prereleases=True), (
            f"installed {requirement.name} {dist.version} is outside {requirement.specifier}"
        )
        first_visit = name not in found
        found[name] = dist
        if not first_visit and not extras:
            continue
        for text in dist.requires or []:
            sub = Requirement(text)
            active = sub.marker is None or any(
                sub.marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
            )
            if active and (canonicalize_name(sub.name) not in found or sub.extras):
                queue.append((sub, set(sub.extras)))
    return found


def test_image_carries_only_what_the_streamer_needs(repo_root: Path) -> None:
    closure = resolve_closure(image_requirements(repo_root))
    assert "confluent-kafka" in closure and {"httpx2", "httpx"} & set(closure), (
        "confluent_kafka.schema_registry needs the schemaregistry extra's HTTP client"
    )
    heavy = NOT_IN_STREAMER_IMAGE & set(closure)
    assert not heavy, f"the streamer image would pull in {sorted(heavy)}"


def imported_modules(package_dir: Path) -> set[str]:
    """Absolute imports anywhere in the package, at module level or inside functions (lazy imports)."""
    names: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return {n for n in names if n != "__future__"}


def build_image_environment(root: Path, repo_root: Path, dockerfile: Any) -> Path:
    """A virtualenv like the image's /opt/k2: the requirement closure (linked from this interpreter's
    site-packages) and the sources the Dockerfile COPYs, filtered by its .dockerignore."""
    patterns = ignore_patterns(repo_root)
    context = root / "src"
    for source in copied_sources(dockerfile):
        origin = repo_root / source
        if origin.is_file():
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, context / source)
            continue
        for path in origin.rglob("*"):
            relative = path.relative_to(repo_root).as_posix()
            if path.is_file() and not is_ignored(relative, patterns):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / relative)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    linked: set[str] = set()
    for dist in resolve_closure(image_requirements(repo_root)).values():
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or top in linked:
                continue
            linked.add(top)
            (site / top).symlink_to(Path(dist.locate_file(top)))
    # What `pip install --no-deps k2_platform-*.whl` gives: the packages, and the console script.
    (site / "k2_platform.pth").write_text(f"{context}\n")
    script = venv / "bin" / "k2-streamer"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom streamer.__main__ import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    return venv


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, streamer_dockerfile: Any) -> Path:
    return build_image_environment(tmp_path_factory.mktemp("streamer-image"), repo_root, streamer_dockerfile)


def image_env(venv: Path, dockerfile: Any, **settings: str) -> dict[str, str]:
    env = {key: value.replace("$PATH", os.environ.get("PATH", "")) for key, value in dockerfile.env().items()}
    env["PATH"] = f"{venv / 'bin'}:{os.environ.get('PATH', '')}"
    env.update(settings)
    return env


def test_every_streamer_import_resolves_in_the_image_environment(image_venv: Path, repo_root: Path) -> None:
    modules = sorted(imported_modules(repo_root / "streamer"))
    program = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([str(image_venv / "bin" / "python"), "-c", program, *modules],
                          capture_output=True, text=True, timeout=120, cwd=image_venv, check=False)
    assert done.returncode == 0, f"the image lacks a module the streamer imports:\n{done.stderr[-3000:]}"
    probe = subprocess.run([str(image_venv / "bin" / "python"), "-c", "import dagster"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode != 0, "the emulated image must not see this virtualenv's packages"


def run_check(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


@pytest.mark.slow
def test_streamer_passes_its_healthcheck_and_stops_cleanly_on_sigterm(
    image_venv: Path, streamer_dockerfile: Any, compose: Any, kafka: Any, tmp_path: Path
) -> None:
    """The ENTRYPOINT in the image's environment, against the real local Kafka, with no exchange reachable:
    alive (/healthz, the image HEALTHCHECK passes) but not ready (/readyz, compose's healthcheck fails);
    SIGTERM -> exit 0; afterwards the HEALTHCHECK fails."""
    port = allocate_port()
    env = image_env(
        image_venv, streamer_dockerfile,
        K2_METRICS_PORT=str(port),
        K2_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        K2_KAFKA_TOPIC_PREFIX=f"k2test.docker.{uuid.uuid4().hex[:8]}",
        K2_SCHEMA_REGISTRY_URL="mock://docker-image-test",
        K2_BINANCE_WS_URL=f"wss://127.0.0.1:{allocate_port()}/stream",  # nothing listens: reconnects with backoff
        K2_SHUTDOWN_FLUSH_TIMEOUT_SECONDS="5",
        K2_INSTANCE="blue",
    )
    healthcheck = streamer_dockerfile.exec_form("HEALTHCHECK")
    compose_check = [arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
                     for arg in compose.service("streamer-blue")["healthcheck"]["test"][1:]]
    log = (tmp_path / "streamer.log").open("w")
    process = subprocess.Popen(streamer_dockerfile.exec_form("ENTRYPOINT"), env=env, cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while run_check(healthcheck, env) != 0:
            assert process.poll() is None, f"the streamer exited: {(tmp_path / 'streamer.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "HEALTHCHECK never passed within 60 s"
            time.sleep(0.5)
        assert run_check(compose_check, env) != 0, "readiness must fail while no exchange is connected"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        output = (tmp_path / "streamer.log").read_text()
        assert code == 0, f"exit code {code} after SIGTERM:\n{output[-3000:]}"
        assert "SIGTERM received" in output
        assert run_check(healthcheck, env) != 0, "HEALTHCHECK must fail once the streamer is gone"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()
