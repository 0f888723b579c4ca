"""Where things live on disk: the repository, the download cache and the run folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.1.1"


def cache_dir() -> Path:
    """Downloads fetched once by `make setup` (Kafka jars). Git ignores it."""
    return Path(os.environ.get("K2_CACHE_DIR", REPO_ROOT / ".cache"))


def kafka_libs_dir() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def run_dir() -> Path:
    """Logs, PID files and data of the local stack started by `k2 stack up` / `make run`."""
    return Path(os.environ.get("K2_RUN_DIR", REPO_ROOT / ".run"))


def rules_dir() -> Path:
    """Prometheus alert rules shared by the local stack, the tests and production."""
    return REPO_ROOT / "k2_ops" / "rules"


def shared_samples_dir() -> Path:
    """Real Binance recordings kept outside the project (see ../shared/binance_samples/README.md)."""
    return Path(os.environ.get("K2_SAMPLES_DIR", REPO_ROOT.parent / "shared" / "binance_samples"))
