"""The Dagster UI in a real browser: `dagster dev` on loopback with the project's workspace, a daily
validation and a blue_green_deploy launched through the UI's GraphQL API (the daemon runs them), then
headless Chromium renders the asset catalog, the daily report and the deploy run page. The test reads the
rendered DOM and keeps screenshots in test-artifacts/."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from k2_ops.deploy.model import DeployConfig

from .ui import graphql, launch, wait_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


def test_ui_shows_catalog_daily_report_and_deploy_run(dagster_ui, week_prometheus, artifacts_dir, tmp_path) -> None:
    """A real `dagster dev` and headless Chromium (~70 s with the module's set-up): a daily report and a
    blue-green deploy run through the UI's own run launcher before the pages are looked at."""
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
