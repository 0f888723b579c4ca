"""Session-wide real services shared by every test: one local stack (Kafka, Schema Registry, Prometheus,
Alertmanager).

The same `LocalStack` API runs `make run` and `k2 stack`; here it lives in a temporary run folder and
Prometheus scrapes and evaluates every second so tests see results quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k2_ops.stack import AlertmanagerService, KafkaService, LocalStack, PrometheusService
from k2_ops.stack.registry import SchemaRegistryService

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every password and token a test hands to a service or a client; at the end of the session every file the
# run wrote (service and streamer logs under pytest's temporary folder, test-artifacts/) is searched for them.
USED_SECRETS: set[str] = set()
# Files that hold a secret by design: the secret files themselves, broker configs and keystores.
SECRET_HOLDERS = ("secrets", "htpasswd", "server.properties", ".p12", "password", "registry-auth", "auth-",
                  "token-secret", "nginx.conf")


def remember_secret(secret: str) -> str:
    if len(secret) >= 8:  # shorter strings would match by chance
        USED_SECRETS.add(secret)
    return secret


def files_containing_secrets(roots: list[Path]) -> list[str]:
    """'<file>: <n> secret(s)' for every file under `roots` (not a secret holder) that contains a used secret."""
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            if not path.is_file() or any(mark in str(path.relative_to(root)) for mark in SECRET_HOLDERS):
                continue
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            hits = sum(1 for secret in USED_SECRETS if secret in text)
            if hits:
                found.append(f"{path}: {hits} secret(s)")
    return found


# A test that takes longer than this (setup, call and teardown together) says why in its docstring.
LONG_TEST_SECONDS = 60.0
_seconds_per_test: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds_per_test[report.nodeid] = _seconds_per_test.get(report.nodeid, 0.0) + report.duration


def long_tests_without_a_reason(items: list[pytest.Item], seconds: dict[str, float]) -> list[str]:
    """'<test> (<n> s)' for every test over LONG_TEST_SECONDS whose function has no docstring."""
    return [f"{item.nodeid} ({seconds[item.nodeid]:.0f} s)" for item in items
            if seconds.get(item.nodeid, 0.0) > LONG_TEST_SECONDS
            and not (getattr(getattr(item, "function", None), "__doc__", None) or "").strip()]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    unexplained = long_tests_without_a_reason(session.items, _seconds_per_test)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if unexplained:
        message = (f"TESTS OVER {LONG_TEST_SECONDS:.0f} s WITHOUT A DOCSTRING SAYING WHY: " + "; ".join(unexplained))
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _check_secrets(session, reporter)


def _check_secrets(session: pytest.Session, reporter: Any) -> None:
    if not USED_SECRETS:
        return
    roots = [session.config._tmp_path_factory.getbasetemp(), REPO_ROOT / "test-artifacts"]  # type: ignore[attr-defined]
    found = files_containing_secrets(roots)
    if found:
        message = "SECRET IN A LOG: " + "; ".join(found)
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
