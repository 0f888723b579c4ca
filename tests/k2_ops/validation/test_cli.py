"""`k2 validate` and `k2 soak` from the command line: exit codes, printed checks, reports written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from k2_ops.cli import main
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.stack import allocate_port
from k2_ops.validation.synthetic import WeekScenario

from .conftest import MONTH_SCRAPE_SECONDS, WEEK_SCRAPE_SECONDS, DeploymentWeeksPrometheus, HistoryPrometheus

pytestmark = pytest.mark.slow


def day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def test_validate_weekly_exit_codes_and_reports(
    history_prometheus: HistoryPrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "validate",
        "weekly",
        "--prometheus",
        history_prometheus.service.url,
        "--start",
        day(history_prometheus.week_start),
        "--scrape-interval",
        str(WEEK_SCRAPE_SECONDS),
    ]
    assert main([*common, "--instance", "good-week", "--out", str(tmp_path / "good")]) == 0
    assert main([*common, "--instance", "bad-week", "--out", str(tmp_path / "bad")]) == 1
    out = capsys.readouterr().out
    bad_days = [day(history_prometheus.week_start + index * 86_400) for index in (1, 3, 5)]
    assert f"{bad_days[0]}: FAIL rotations" in out
    assert f"{bad_days[1]}: FAIL unscheduled_reconnects" in out
    assert f"{bad_days[2]}: FAIL memory_stable" in out
    assert "FAIL  rotations" in out and "observed" in out and "threshold = 6" in out
    for folder in ("good", "bad"):
        assert (tmp_path / folder / "weekly_report.html").is_file()
        assert (tmp_path / folder / "weekly_report.md").is_file()


def test_validate_daily_and_monthly(history_prometheus: HistoryPrometheus, tmp_path: Path) -> None:
    url = history_prometheus.service.url
    assert (
        main(
            [
                "validate",
                "daily",
                "--prometheus",
                url,
                "--instance",
                "bad-week",
                "--start",
                day(history_prometheus.week_start + 5 * 86_400),
                "--scrape-interval",
                str(WEEK_SCRAPE_SECONDS),
                "--out",
                str(tmp_path / "daily"),
            ]
        )
        == 1
    )
    assert (tmp_path / "daily" / "daily_report.json").is_file()
    assert (
        main(
            [
                "validate",
                "monthly",
                "--prometheus",
                url,
                "--instance",
                "good-month",
                "--start",
                day(history_prometheus.month_start),
                "--scrape-interval",
                str(MONTH_SCRAPE_SECONDS),
                "--out",
                str(tmp_path / "monthly"),
            ]
        )
        == 0
    )


def test_validate_against_an_unreachable_prometheus_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{allocate_port()}"
    assert main(["validate", "daily", "--prometheus", url, "--start", "2026-01-01", "--out", str(tmp_path)]) == 2
    assert f"Prometheus at {url} is unreachable" in capsys.readouterr().err


def test_soak_refuses_bad_input_plainly(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["soak", "--profile", "weekly", "--run-dir", str(tmp_path)]) == 2
    assert "unknown profile 'weekly'" in capsys.readouterr().err
    assert main(["soak", "--profile", "ci", "--run-dir", str(tmp_path)]) == 2  # no stack there: no Kafka
    assert "no Kafka" in capsys.readouterr().err
    url = f"http://127.0.0.1:{allocate_port()}"
    assert main(["soak", "--profile", "ci", "--attach", url, "--out", str(tmp_path / "attach")]) == 2
    assert "cannot scrape the streamer to attach to" in capsys.readouterr().err
    assert (
        main(
            [
                "soak",
                "--profile",
                "ci",
                "--kafka",
                "127.0.0.1:1",
                "--source",
                "http://x",
                "--out",
                str(tmp_path / "src"),
            ]
        )
        == 2
    )
    assert "expected 'simulator' or a ws://" in capsys.readouterr().err


def test_validate_weekly_stitches_the_deployment_history(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prom = deployment_weeks_prometheus

    def run(scenario: WeekScenario, history: Path) -> int:
        return main([
            "validate", "weekly", "--prometheus", prom.client.url, "--start", day(prom.starts[scenario]),
            "--scrape-interval", str(WEEK_SCRAPE_SECONDS), "--history", str(history),
            "--out", str(tmp_path / scenario.value),
        ])

    histories = {}
    for scenario, week in prom.weeks.items():
        histories[scenario] = DeploymentHistory(tmp_path / f"{scenario.value}.jsonl")
        for record in week.records:
            histories[scenario].append(record)
    assert run(WeekScenario.HANDOVER_AND_ROLLBACK, histories[WeekScenario.HANDOVER_AND_ROLLBACK].path) == 0
    out = capsys.readouterr().out
    assert "7-day validation (active streamer, stitched across deployments)" in out
    assert "deployment: " in out and "[synthetic-rollback]" in out

    assert run(WeekScenario.ROLLBACK_WITH_OUTAGE, histories[WeekScenario.ROLLBACK_WITH_OUTAGE].path) == 1
    out = capsys.readouterr().out
    friday = day(prom.starts[WeekScenario.ROLLBACK_WITH_OUTAGE] + 4 * 86_400)
    assert f"{friday}: FAIL uptime" in out
    assert f"down {friday} 15:0" in out

    # No history: blue alone, said once, and the cutover day fails for it.
    assert run(WeekScenario.HANDOVER_AND_ROLLBACK, tmp_path / "missing.jsonl") == 1
    out = capsys.readouterr().out
    assert out.count("note: deployment history missing") == 1
    assert "7-day validation (blue only (per color))" in out
