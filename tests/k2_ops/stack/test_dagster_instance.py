"""The local `dagster dev` runs what production runs: the run queue of the compose instance and the code
location of the root workspace.yaml, both written from the package (so a wheel install has them too)."""

from __future__ import annotations

from pathlib import Path

import yaml

from k2_ops.stack.apps import LOCAL_WORKSPACE, RUN_QUEUE, write_local_dagster_instance

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_the_run_queue_is_the_production_instances() -> None:
    production = yaml.safe_load((REPO_ROOT / "docker" / "dagster" / "dagster.yaml").read_text())
    assert production["concurrency"] == RUN_QUEUE


def test_the_local_instance_holds_the_run_queue(tmp_path: Path) -> None:
    write_local_dagster_instance(tmp_path / "dagster.yaml")
    written = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    limits = written["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "k2/kind", "value": "deployment", "limit": 1} in limits


def test_the_local_workspace_is_the_root_workspace_yaml() -> None:
    assert yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text()) == LOCAL_WORKSPACE
