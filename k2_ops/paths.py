"""Where things live on disk.

Two roots, kept apart so that `k2` works from a wheel install as well as from a checkout:
- the **home** (`K2_HOME`, else the current directory) holds what running makes: the run folder `.run/`
  (`K2_RUN_DIR` overrides it) and the download cache `.cache/` (`K2_CACHE_DIR`). It is never the installed
  package's parent folder, which in a wheel install is site-packages.
- the **package** holds what ships with the code (alert rules, Maven poms, Avro schemas): found beside these
  modules, so a wheel carries it.

Files of the source checkout itself (docs/, docker/, workspace.yaml) are reached through `REPO_ROOT` by tools
and tests that only make sense in a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout this package was imported from (editable install); in a wheel install, site-packages.
REPO_ROOT = PACKAGE_DIR.parent
KAFKA_VERSION = "4.1.1"
# Apicurio's Quarkus distribution (Confluent-compatible API): 2.6.x is the newest line that runs on Java 17.
APICURIO_VERSION = "2.6.13.Final"


def home_dir() -> Path:
    """Where the run folder and the download cache go by default: K2_HOME, else the current directory."""
    return Path(os.environ.get("K2_HOME") or Path.cwd())


def cache_dir() -> Path:
    """Downloads fetched once by `k2 setup` / `make setup` (Kafka jars, the Schema Registry). Git ignores it."""
    return Path(os.environ.get("K2_CACHE_DIR") or home_dir() / ".cache")


def kafka_libs_dir() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def registry_home() -> Path:
    """The unpacked Apicurio Registry distribution."""
    return cache_dir() / f"apicurio-registry-{APICURIO_VERSION}"


def run_dir() -> Path:
    """Logs, PID files and data of the local stack started by `k2 stack up` / `make run`."""
    return Path(os.environ.get("K2_RUN_DIR") or home_dir() / ".run")


def rules_dir() -> Path:
    """Prometheus alert rules shared by the local stack, the tests and production."""
    return PACKAGE_DIR / "rules"


def shared_samples_dir() -> Path:
    """Real Binance recordings: K2_SAMPLES_DIR, else `../shared/binance_samples/` beside the checkout when it
    exists (this workspace), else `.cache/binance_samples/` where `k2 setup` fetches them (k2_ops/samples.py)."""
    if configured := os.environ.get("K2_SAMPLES_DIR"):
        return Path(configured)
    beside = REPO_ROOT.parent / "shared" / "binance_samples"
    return beside if beside.is_dir() else cache_dir() / "binance_samples"
