"""The Dagster UI in a real browser: `dagster dev` on loopback with the project's workspace, a daily
validation and a blue_green_deploy launched through the UI's GraphQL API (the daemon runs them), then
headless Chromium renders the asset catalog, the daily report and the deploy run page. The test reads the
rendered DOM and keeps screenshots in test-artifacts/."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagster_project.resources import DeploymentResource
from k2_ops.deploy.model import DeployConfig
from k2_ops.simulator import BackgroundSimulator
from k2_ops.stack import AlertmanagerService, KafkaService
from k2_ops.stack.apps import DagsterProcess

from .conftest import SCRAPE, WeekPrometheus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def launch(url: str, job: str, run_config: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    params = {"selector": {"repositoryLocationName": "k2_ops", "repositoryName": "__repository__", "jobName": job},
              "runConfigData": run_config,
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
    answer = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def wait_run(url: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} still {status} after {timeout_s} s")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(profile, ignore_errors=True)
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=15000", "--window-size=1500,1100", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def rendered(url: str, expected: list[str], profile: Path, timeout_s: float = 90.0) -> str:
    """The DOM once every expected text is in it (the UI renders after its GraphQL answers)."""
    deadline = time.monotonic() + timeout_s
    dom = ""
    while time.monotonic() < deadline:
        dom = chromium(["--dump-dom", url], profile).stdout
        if all(text in dom for text in expected):
            return dom
        time.sleep(1.0)
    missing = [text for text in expected if text not in dom]
    raise AssertionError(f"{url}: {missing} not rendered; DOM starts {dom[:500]!r}")


def screenshot(url: str, path: Path, profile: Path) -> None:
    chromium([f"--screenshot={path}", url], profile)
    assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot of {url}"


@pytest.fixture
def dagster_ui(tmp_path: Path, kafka: KafkaService, alertmanager: AlertmanagerService, simulator: BackgroundSimulator,
               week_prometheus: WeekPrometheus) -> Iterator[tuple[DagsterProcess, DeploymentResource]]:
    run_dir = tmp_path / "run"
    (run_dir / "simulator").mkdir(parents=True)
    shutil.copy(simulator.ca_file, run_dir / "simulator" / "ca.pem")
    # What `k2 stack up` writes: resources find every service through it.
    (run_dir / "stack.json").write_text(json.dumps({"services": {
        "kafka": {"url": f"kafka://{kafka.bootstrap_servers}"},
        "alertmanager": {"url": alertmanager.url},
        "prometheus": {"url": week_prometheus.service.url},
        "simulator": {"url": simulator.ws_base_url},
    }}))
    prefix = f"browsertest.{uuid.uuid4().hex[:8]}"
    ui = DagsterProcess(tmp_path / "dagster", env={
        "K2_RUN_DIR": str(run_dir), "K2_KAFKA_TOPIC_PREFIX": prefix,
        "K2_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": f"{SCRAPE:g}",
    })
    deployment = DeploymentResource(run_dir=str(run_dir), topic_prefix=prefix)
    ui.start()
    try:
        yield ui, deployment
    finally:
        ui.stop()
        backend = deployment.make_backend()
        for color in ("blue", "green"):
            backend.stop(color, 10.0)


def test_ui_shows_catalog_daily_report_and_deploy_run(dagster_ui, week_prometheus, artifacts_dir, tmp_path) -> None:
    ui, deployment = dagster_ui
    deployment.orchestrator().ensure_running("blue", DeployConfig(ready_timeout_seconds=60.0))
    day = week_prometheus.day(1)  # the bad week's day with 5 rotations
    daily_run = launch(ui.url, "daily_validation_job",
                       {"ops": {"daily_validation_report": {"config": {"instance": "bad-week"}}}},
                       tags={"dagster/partition": day})
    deploy_run = launch(ui.url, "blue_green_deploy", {"ops": {"build_image": {"config": {
        "image": "k2-platform:v2.1-browser", "mode": "handover", "dual_operation_seconds": 3.0,
        "validation_seconds": 3.0, "poll_interval_seconds": 0.5, "ready_timeout_seconds": 60.0}}}})
    assert wait_run(ui.url, daily_run, 180.0) == "SUCCESS"
    assert wait_run(ui.url, deploy_run, 240.0) == "SUCCESS"
    assert deployment.history().active_color() == "green"

    graphql(ui.url, "mutation { setNuxSeen }")  # no "join the community" dialog over the screenshots
    profile = tmp_path / "chromium"

    catalog = rendered(f"{ui.url}/assets", ["daily_validation_report", "weekly_validation_report",
                                            "monthly_stability_report", "soak_memory_profile", "soak_report",
                                            "deployment_history"], profile)
    assert "k2_ops" in catalog
    screenshot(f"{ui.url}/assets", artifacts_dir / "dagster-ui-asset-catalog.png", profile)

    report_url = f"{ui.url}/assets/daily_validation_report?partition={day}"
    report = rendered(report_url, [day, "rotations", "FAIL", "memory_stable", "PASS", "html_report"], profile)
    assert "5 scheduled rotations" in report or "observed" in report
    screenshot(report_url, artifacts_dir / "dagster-ui-daily-report.png", profile)

    checks_url = f"{ui.url}/assets/daily_validation_report?view=checks"
    rendered(checks_url, ["rotations", "pings", "message_rate", "unscheduled_reconnects", "critical_alerts"],
             profile)
    screenshot(checks_url, artifacts_dir / "dagster-ui-daily-checks.png", profile)

    run_url = f"{ui.url}/runs/{deploy_run}"
    rendered(run_url, ["blue_green_deploy", "build_image", "start_new_color", "wait_until_ready", "dual_operation",
                       "cutover", "validate_new_color", "record_deployment", "Success"], profile)
    screenshot(run_url, artifacts_dir / "dagster-ui-blue-green-deploy-run.png", profile)
