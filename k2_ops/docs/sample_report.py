"""The sample reports in docs/samples/, produced by the real report code over deterministic synthetic data.

    python -m k2_ops.docs.sample_report            # rewrites docs/samples/
    python -m k2_ops.docs.sample_report --out DIR  # anywhere else

Two samples, both from `k2_ops.validation.synthetic` (seeded, so every run gives the same numbers):

- `soak/`: a 24 h soak on the production profile. The synthetic series are turned into the `/metrics`
  scrapes the soak runner would have taken, then evaluated and written exactly as
  `k2_ops.validation.soak.SoakRunner._finish` does: `memory_profile.json` (schema in
  `k2_ops.validation.memory_profile`) and the soak report built from it.
- `weekly/`: the 7-day validation report of a blue-green streamer week with deployments
  (`synthetic.WeekScenario.ROLLBACK_WITH_OUTAGE`: a handover cutover blue -> green on Wednesday, a rollback
  to blue on Friday whose restart left the streamer without a connection for 10 minutes) and a missed
  rotation on Tuesday, judged on the active streamer stitched across the deployments, as `k2 validate
  weekly` and the Dagster `weekly_validation_report` asset do.

Only the clock is pinned (`generated_at`, the soak's start and end); nothing in the reports is written by
hand. tests/docs/test_sample_report.py regenerates them and compares with what is committed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from k2_ops.paths import REPO_ROOT
from k2_ops.reports import build_report, write_report
from k2_ops.validation import criteria, memory_profile, periods
from k2_ops.validation.profiles import PRODUCTION, ValidationProfile
from k2_ops.validation.scrape import LabelKey, Scrape, raw_series
from k2_ops.validation.series import Series, Window
from k2_ops.validation.synthetic import Fault, SyntheticHistory, WeekScenario, deployment_week, generate
from k2_ops.validation.timeline import ActiveTimeline

SAMPLES_DIR = REPO_ROOT / "docs" / "samples"
# Monday 2026-03-02 00:00 UTC: the sample week runs Monday..Sunday like the weekly Dagster partitions.
WEEK_START = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
SOAK_START = datetime(2026, 3, 9, tzinfo=UTC).timestamp()
SOAK_SAMPLE_SECONDS = 600.0  # coarser than a real soak's 30 s: keeps the committed JSON small
WEEKLY_STEP_SECONDS = 60.0
WEEK_FAULTS = (Fault("missing_rotation", 1),)
SYNTHETIC_SOURCE = "synthetic://k2_ops.validation.synthetic (seed 7)"


def scrapes_from_series(series: Sequence[Series], start: float, end: float) -> list[Scrape]:
    """What scraping `/metrics` at each point time in [start, end] would have returned (pure)."""
    by_time: dict[float, list[tuple[str, LabelKey, float]]] = {}
    for one in series:
        name = one.labels["__name__"]
        labels = tuple(sorted((key, value) for key, value in one.labels.items() if key != "__name__"))
        for t, value in one.points:
            if start <= t <= end:
                by_time.setdefault(t, []).append((name, labels, value))
    return [Scrape(t, tuple(sorted(by_time[t]))) for t in sorted(by_time)]


def soak_profile_document(profile: ValidationProfile = PRODUCTION) -> dict[str, object]:
    """The memory profile of a synthetic 24 h soak, checks included (as SoakRunner._finish builds it)."""
    criteria_set = criteria.soak_24h(profile)
    duration = criteria_set.duration_seconds
    grace = max(0.05 * profile.rotation_seconds, 3 * SOAK_SAMPLE_SECONDS)
    end = SOAK_START + duration + grace
    # The streamer process starts with the soak (spawned mode: every counter starts at 0).
    history = SyntheticHistory(
        SOAK_START, 2, "soak", profile=profile, scrape_interval=SOAK_SAMPLE_SECONDS, lead_in_seconds=0.0
    )
    scrapes = scrapes_from_series(generate(history), SOAK_START, end)
    started = scrapes[0].time
    samples = [memory_profile.sample_record(scrape, started) for scrape in scrapes]
    metadata = {
        "profile": profile.to_dict(),
        "criteria": criteria_set.name,
        "instance": "soak",
        "metrics_url": SYNTHETIC_SOURCE,
        "mode": "synthetic",
        "planned_duration_seconds": duration,
        "grace_seconds": grace,
        "sample_interval_seconds": SOAK_SAMPLE_SECONDS,
        "started_at": started,
        "ended_at": end,
        "streamer_env": profile.streamer_env(),
        "leak_bytes_per_second": 0.0,
        "exit_code": 0,
        "scrape_failures": 0,
    }
    document = memory_profile.build_profile(metadata, samples, counters_from_zero=True)
    window = Window(started, end, SOAK_SAMPLE_SECONDS, counters_from_zero=True)
    selected = criteria.select_series(raw_series(scrapes), criteria_set.inputs(), window.start, window.end)
    document["checks"] = [check.to_dict() for check in criteria.evaluate_series(criteria_set, selected, window)]
    return document


def _write_soak(out_dir: Path, generated_at: float) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    document = soak_profile_document()
    path = memory_profile.write_profile(document, out_dir / "memory_profile.json")
    written = memory_profile.check_profile_written(path)
    # The check records where it read the file; keep the sample free of this machine's absolute paths.
    written = dataclasses.replace(written, details={**written.details, "path": path.name})
    document["checks"] = [*document["checks"], written.to_dict()]  # type: ignore[misc]
    memory_profile.write_profile(document, path)
    report = build_report("soak", document)
    report.generated_at = generated_at
    return {"memory_profile": path, **write_report(report, out_dir)}


def weekly_results(profile: ValidationProfile = PRODUCTION) -> list[periods.PeriodResult]:
    """The daily results of the sample week, computed from synthetic series instead of Prometheus."""
    week = deployment_week(
        WEEK_START, WeekScenario.ROLLBACK_WITH_OUTAGE, WEEKLY_STEP_SECONDS, profile=profile, faults=WEEK_FAULTS
    )
    raw = [one for history in week.histories for one in generate(history)]
    timeline = ActiveTimeline.from_records(list(week.records))
    daily = criteria.daily(profile)
    queries = periods.stitched_queries(daily)
    results = []
    for day in range(7):
        start = WEEK_START + day * profile.day_seconds
        end = start + profile.day_seconds
        series = criteria.select_series(raw, queries, start, end)
        results.append(
            periods.judge_stitched(daily, series, timeline, Window(start, end, WEEKLY_STEP_SECONDS), profile)
        )
    return results


def _write_weekly(out_dir: Path, generated_at: float) -> dict[str, Path]:
    report = build_report("weekly", weekly_results())
    report.generated_at = generated_at
    return write_report(report, out_dir)


def write_samples(out_dir: Path = SAMPLES_DIR) -> dict[str, dict[str, Path]]:
    """Write both samples under `out_dir`; returns their files by sample name."""
    return {
        "soak": _write_soak(out_dir / "soak", generated_at=SOAK_START + 2 * 86_400.0),
        "weekly": _write_weekly(out_dir / "weekly", generated_at=WEEK_START + 7 * 86_400.0 + 3_600.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k2_ops.docs.sample_report", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help=f"default {SAMPLES_DIR.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    for name, files in write_samples(args.out).items():
        print(f"{name}: " + ", ".join(sorted(str(path.relative_to(args.out)) for path in files.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
