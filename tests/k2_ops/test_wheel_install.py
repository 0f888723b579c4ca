"""`k2` from a wheel install, away from any checkout: `k2 setup` fetches Kafka and the Schema Registry with the
poms the wheel carries, and `k2 stack up` runs the whole local stack (Dagster's code location included) with
its run folder in the current directory, nothing written beside the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k2_ops.paths import shared_samples_dir
from tests.dagster_project.ui import graphql

REPO_ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", ".cache", ".run", "build", "test-artifacts", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache")


def not_copied(folder: str, names: list[str]) -> set[str]:
    """What is not shipped, and the top-level tests: the wheel has none of them, and their fixed passwords would
    make the session's search for secrets in the files the run wrote (tests/conftest.py) find this copy."""
    ignored = set(NOT_SHIPPED(folder, names))
    return ignored | {"tests"} if Path(folder) == REPO_ROOT else ignored


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def run_k2(args: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 300) -> str:
    # -P: nothing from the working directory on sys.path; the wheel comes first through PYTHONPATH.
    done = subprocess.run([sys.executable, "-P", "-m", "k2_ops.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    assert done.returncode == 0, f"k2 {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_k2_runs_the_stack_from_a_wheel_with_its_state_in_the_current_directory(tmp_path: Path) -> None:
    """Builds and installs the wheel (~15 s), then starts a whole stack from it (~25 s): only a real
    install outside the checkout shows what the package lacks."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=not_copied)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, timeout=300)
    site = tmp_path / "site"
    wheel = next((tmp_path / "dist").glob("k2_platform-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K2_", "DAGSTER_"))}
    env |= {"PYTHONPATH": str(site), "K2_CACHE_DIR": str(tmp_path / "cache"),
            "K2_SAMPLES_DIR": str(shared_samples_dir())}
    imported = subprocess.run([sys.executable, "-P", "-c", "import k2_ops; print(k2_ops.__file__)"], cwd=home,
                              env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(imported).is_relative_to(site), f"k2_ops imported from {imported}, not the wheel"

    setup = run_k2(["setup"], home, env, timeout_s=600)
    assert "Apache Kafka 4.1.1 jars: fetched" in setup and "Apicurio Registry 2.6.13.Final: fetched" in setup
    assert (tmp_path / "cache" / "kafka-4.1.1" / "libs" / "kafka_2.13-4.1.1.jar").is_file()

    try:
        run_k2(["stack", "up", "--scrape-interval", "1"], home, env)
        status = json.loads(run_k2(["stack", "status", "--json"], home, env))
        assert status["healthy"], status
        assert {s["name"] for s in status["services"]} >= {"kafka", "prometheus", "streamer", "dagster"}
        assert (home / ".run" / "stack.json").is_file()
        dagster_url = next(s["url"] for s in status["services"] if s["name"] == "dagster")
        entries = graphql(dagster_url, LOCATIONS)["workspaceOrError"]["locationEntries"]
        loaded = [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries]
        assert loaded == [("k2_ops", "RepositoryLocation")], entries
    finally:
        run_k2(["stack", "down"], home, env)

    assert not (site / ".run").exists() and not (site / ".cache").exists(), "state written beside the package"
