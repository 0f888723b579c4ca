"""A market split into two shards, backfilled into a real Prometheus: each shard is judged on its own series
(`s<i>-<color>`) along its own deployment history, and the market in total fails exactly where one shard does.

Shard 0 of 2 holds a real 10-minute outage inside Friday's rollback; shard 1 of 2 the same week without it.
If a shard read the other's series, or the colors of the whole market, shard 1 would fail too (or find no
data at all).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from k2_ops.cli import main
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.validation import periods
from k2_ops.validation.timeline import ActiveTimeline
from streamer.shards import Shard

from .conftest import WEEK_SCRAPE_SECONDS, DeploymentWeeksPrometheus

pytestmark = pytest.mark.slow

FRIDAY = 4


def shard_week(prom: DeploymentWeeksPrometheus, index: int) -> tuple[periods.PeriodResult, ...]:
    subject = periods.Subject(timeline=ActiveTimeline.from_records(list(prom.shards[index].records)),
                              shard=Shard(index, len(prom.shards)))
    return tuple(periods.validate_week(prom.client, prom.shards_start, instance=subject,
                                       scrape_interval=WEEK_SCRAPE_SECONDS))


def test_each_shard_is_judged_on_its_own_and_the_market_in_total(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus,
) -> None:
    prom = deployment_weeks_prometheus
    outage, clean = shard_week(prom, 0), shard_week(prom, 1)

    assert [day.failed() for day in clean] == [[]] * 7
    assert [day.failed() for day in outage] == [[], [], [], [], ["uptime"], [], []]
    for day in clean:
        assert day.shard == "1/2" and day.judged_text.startswith("shard 1/2: active streamer")
        assert day.check("pings").observed == pytest.approx(480, abs=1)  # its own series, read once

    total = periods.ShardedPeriod(((Shard(0, 2), outage), (Shard(1, 2), clean)))
    assert not total.passed
    assert total.failures() == [f"shard 0/2 {outage[FRIDAY].label}: uptime"]
    assert periods.ShardedPeriod(((Shard(1, 2), clean),)).passed

    # What the Dagster assets store per day: one result for the market, each check failing where any shard did.
    friday, monday = total.combined(FRIDAY), total.combined(0)
    assert friday.failed() == ["uptime"] and monday.passed
    uptime = friday.check("uptime")
    assert uptime.details["shards"] == {"0/2": False, "1/2": True}
    assert uptime.evidence.startswith("shard 0/2: ") and uptime.evidence.endswith("(shards: 0/2 FAIL, 1/2 pass)")
    assert friday.judged_text.startswith("the market, every one of 2 shards: active streamer")
    assert [d["text"][:10] for d in friday.deployments] == ["shard 0/2:", "shard 1/2:"]


def test_one_color_of_a_shard_reads_that_shards_instance(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus,
) -> None:
    prom = deployment_weeks_prometheus
    monday = periods.validate_day(prom.client, prom.shards_start, scrape_interval=WEEK_SCRAPE_SECONDS,
                                  instance=periods.Subject.color("blue", shard=Shard(1, 2)))
    assert monday.instance == "s1-blue" and monday.passed, monday.failed()


def test_validate_with_shards_judges_every_shards_history_then_the_market(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prom = deployment_weeks_prometheus
    run_dir = tmp_path / "run"
    for index, week in enumerate(prom.shards):
        history = DeploymentHistory(run_dir / "deploy" / f"shard-{index}" / "history.jsonl")
        for record in week.records:
            history.append(record)
    start = datetime.fromtimestamp(prom.shards_start, UTC).strftime("%Y-%m-%d")
    friday = datetime.fromtimestamp(prom.shards_start + FRIDAY * 86_400, UTC).strftime("%Y-%m-%d")
    common = ["validate", "weekly", "--prometheus", prom.client.url, "--start", start, "--run-dir", str(run_dir),
              "--scrape-interval", str(WEEK_SCRAPE_SECONDS), "--shards", "2"]

    assert main([*common, "--out", str(tmp_path / "all")]) == 1
    out = capsys.readouterr().out
    assert "7-day validation (shard 0/2: active streamer, stitched across deployments)" in out
    assert "7-day validation (shard 1/2: active streamer, stitched across deployments)" in out
    assert f"market in total (2 shards): FAIL\n  shard 0/2 {friday}: uptime\n" in out
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["shard-0", "shard-1"]

    assert main([*common, "--shard", "1", "--out", str(tmp_path / "one")]) == 0
    assert "market in total" not in capsys.readouterr().out
    assert main([*common, "--shard", "2"]) == 2
    assert "--shards/--shard: K2_SHARD_INDEX=2; allowed: 0 .. 1" in capsys.readouterr().err
