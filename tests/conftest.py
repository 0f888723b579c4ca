"""Session-wide real services shared by every test: one local stack (Kafka, Schema Registry, Prometheus,
Alertmanager).

The same `LocalStack` API runs `make run` and `k2 stack`; here it lives in a temporary run folder and
Prometheus scrapes and evaluates every second so tests see results quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k2_ops.stack import AlertmanagerService, KafkaService, LocalStack, PrometheusService
from k2_ops.stack.registry import SchemaRegistryService

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("stack"), scrape_interval_s=1.0)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def kafka(local_stack: LocalStack) -> KafkaService:
    return local_stack.kafka


@pytest.fixture(scope="session")
def schema_registry(local_stack: LocalStack) -> SchemaRegistryService:
    """Apicurio Registry; `schema_registry.url` is the Confluent-compatible base for SchemaRegistryClient."""
    assert local_stack.schema_registry is not None
    return local_stack.schema_registry


@pytest.fixture(scope="session")
def prometheus(local_stack: LocalStack) -> PrometheusService:
    return local_stack.prometheus


@pytest.fixture(scope="session")
def alertmanager(local_stack: LocalStack) -> AlertmanagerService:
    return local_stack.alertmanager


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Files tests keep for people to look at (screenshots, reports): test-artifacts/ at the repo root."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
