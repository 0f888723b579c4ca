"""Weeks with blue-green deployments, backfilled into a real Prometheus: the daily checks judge the active
streamer stitched across cutovers (deployment history), not one color.

- a handover cutover on Wednesday and a handover rollback on Friday: every day passes stitched, while either
  color alone fails the days it was not running all day (what the validation did before);
- the same week with a real 10-minute outage inside Friday's rollback (blue restarted, first connection 10
  minutes later): Friday fails uptime alone, and the failure names the window;
- a dual-mode week: passes, and the day of the cutover reports the deliberate overlap;
- no deployment history: a per-color judgement, labelled as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k2_ops.deploy.history import DeploymentHistory
from k2_ops.validation import periods
from k2_ops.validation.synthetic import OUTAGE_MINUTES, WeekScenario
from k2_ops.validation.timeline import ActiveTimeline, Judgement

from .conftest import WEEK_SCRAPE_SECONDS, DeploymentWeeksPrometheus

pytestmark = pytest.mark.slow

WEDNESDAY, FRIDAY = 2, 4


def stitched_week(prom: DeploymentWeeksPrometheus, scenario: WeekScenario) -> list[periods.PeriodResult]:
    timeline = ActiveTimeline.from_records(list(prom.weeks[scenario].records))
    days = periods.validate_week(
        prom.client,
        prom.starts[scenario],
        instance=periods.Subject(timeline=timeline),
        scrape_interval=WEEK_SCRAPE_SECONDS,
    )
    assert all(day.judgement == Judgement.STITCHED.value for day in days)
    return days


def test_handover_cutover_and_rollback_week_passes_every_day_stitched(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus,
) -> None:
    days = stitched_week(deployment_weeks_prometheus, WeekScenario.HANDOVER_AND_ROLLBACK)
    assert [day.failed() for day in days] == [[]] * 7, [c.evidence for day in days for c in day.checks if not c.passed]
    for day in days:
        assert day.check("pings").observed == pytest.approx(480, abs=1)
        assert day.check("uptime").observed == pytest.approx(100.0)
    wednesday, friday = days[WEDNESDAY], days[FRIDAY]
    # The handover instant counts once: the new color's own rotation clock gives 5 that day, within 6 ± 1.
    assert wednesday.check("rotations").observed in (5.0, 6.0, 7.0)
    assert "1 switch(es) of the active color" in wednesday.check("rotations").evidence
    assert [d["deployment_id"] for d in wednesday.deployments] == ["synthetic-deploy"]
    assert [d["deployment_id"] for d in friday.deployments] == ["synthetic-rollback"]
    assert len(wednesday.switches) == 1 and len(friday.switches) == 1 and not days[3].switches
    assert wednesday.notes[0].startswith("active streamer: blue") and "; green" in wednesday.notes[0]
    assert not any("unexpected" in note for day in days for note in day.notes)


def test_either_color_alone_fails_the_days_it_did_not_cover(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus,
) -> None:
    """The per-color judgement the validation made before: a day with a deployment fails for both colors."""
    prom = deployment_weeks_prometheus
    start = prom.starts[WeekScenario.HANDOVER_AND_ROLLBACK]
    for color, bad_days in (("blue", {2, 3, 4}), ("green", {0, 1, 2, 4, 5, 6})):
        days = periods.validate_week(prom.client, start, instance=color, scrape_interval=WEEK_SCRAPE_SECONDS)
        assert {index for index, day in enumerate(days) if not day.passed} == bad_days, color
        assert "uptime" in days[WEDNESDAY].failed()


def test_a_real_outage_inside_the_rollback_fails_uptime_and_names_the_window(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus,
) -> None:
    prom = deployment_weeks_prometheus
    days = stitched_week(prom, WeekScenario.ROLLBACK_WITH_OUTAGE)
    assert [day.failed() for day in days] == [[], [], [], [], ["uptime"], [], []]
    uptime = days[FRIDAY].check("uptime")
    outage_start, outage_end = prom.weeks[WeekScenario.ROLLBACK_WITH_OUTAGE].outage or (0.0, 0.0)
    assert uptime.observed is not None and 99.2 < uptime.observed < 99.9
    [(begin, end)] = uptime.details["down_windows"]
    # Prometheus' avg_over_time spreads the edges by at most its range (2 scrapes).
    assert abs(begin - outage_start) <= 2 * WEEK_SCRAPE_SECONDS
    assert abs(end - outage_end) <= 2 * WEEK_SCRAPE_SECONDS
    assert (end - begin) >= OUTAGE_MINUTES * 60 - WEEK_SCRAPE_SECONDS
    assert "15:00:00 UTC" in uptime.evidence or "14:59:00 UTC" in uptime.evidence, uptime.evidence


def test_a_dual_mode_week_passes_and_reports_the_overlap(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus,
) -> None:
    days = stitched_week(deployment_weeks_prometheus, WeekScenario.DUAL_MODE)
    assert [day.failed() for day in days] == [[]] * 7
    [overlap] = [note for note in days[WEDNESDAY].notes if note.startswith("dual-mode overlap")]
    assert "both colors produced for 300 s" in overlap
    delivered = int(overlap.split("delivered ")[1].split(" messages")[0].replace(",", ""))
    # Five minutes of two symbols at ~12 msg/s each, from the color that was not yet active.
    assert 4_000 < delivered < 9_000
    assert not any(note.startswith("dual-mode") for index, day in enumerate(days) if index != WEDNESDAY
                   for note in day.notes)
    assert not any("unexpected" in note for day in days for note in day.notes)


def test_without_a_deployment_history_the_judgement_is_per_color_and_says_so(
    deployment_weeks_prometheus: DeploymentWeeksPrometheus, tmp_path: Path
) -> None:
    prom = deployment_weeks_prometheus
    subject = periods.Subject.from_history(DeploymentHistory(tmp_path / "deployments.jsonl"))
    assert subject.judgement is Judgement.PER_COLOR and subject.instance == "blue"
    day = periods.validate_day(
        prom.client,
        prom.starts[WeekScenario.HANDOVER_AND_ROLLBACK] + WEDNESDAY * 86_400,
        instance=subject,
        scrape_interval=WEEK_SCRAPE_SECONDS,
    )
    assert day.judgement == Judgement.PER_COLOR.value and day.instance == "blue"
    assert day.notes and day.notes[0].startswith("deployment history missing")
    assert str(tmp_path / "deployments.jsonl") in day.notes[0]
    assert "uptime" in day.failed()
    assert day.judged_text == "blue only (per color)"
