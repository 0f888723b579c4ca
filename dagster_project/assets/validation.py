"""Validation report assets: daily (partitioned by day, one asset check per daily criterion), the 7-day
report (weekly partitions reading their 7 daily partitions) and 30-day stability (monthly partitions).

By default a period is judged on the active streamer, stitched across the deployments the deployment
history records (`periods.Subject.from_history`); `instance` in the run config judges one color instead.
Without a history the judgement falls back to the active color and the metadata and report say so.
When the market is split into shards (the deployment resource's `shard_count`), every shard is judged with
its own history and the asset holds the market's result (`periods.ShardedPeriod.combined`): a check fails
when it failed in any shard, and says which.
"""


import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.assets.reporting import (
    ReportsResource,
    checks_table,
    days_table,
    report_metadata,
    write_html_report,
    write_json,
)
from dagster_project.resources import DeploymentResource, PrometheusResource
from k2_ops.validation import criteria, periods
from k2_ops.validation.profiles import PRODUCTION
from streamer.shards import Shard

# The first day partitions exist for; set K2_VALIDATION_START_DATE for an older history.
START_DATE = os.environ.get("K2_VALIDATION_START_DATE", "2026-01-01")
DAY_SECONDS = 86_400.0

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
# Weeks run Monday to Sunday; the weekly schedule fires on Monday after Sunday's daily validation.
weekly_partitions = dg.WeeklyPartitionsDefinition(start_date=START_DATE, timezone="UTC", day_offset=1)
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=START_DATE[:8] + "01", timezone="UTC")

DAILY_CHECKS = criteria.daily(PRODUCTION).names()
MONTHLY_CHECKS = criteria.stability_30d(PRODUCTION).names()
WEEK_CHECK = "all_days_passed"
# The depth books' check (not a Prometheus criterion: it reads the topics themselves).
BOOK_INTEGRITY = "book_integrity"
# Scheduled per connection: the streamer runs a pool of connections, each with its own schedule.
PER_CONNECTION = ("rotations", "pings")


def _criterion_text(criteria_set: criteria.CriteriaSet, name: str) -> str:
    """The seed's wording of a criterion; for rotations and pings, how the expected count is made."""
    text = criteria_set.get(name).description
    if name in PER_CONNECTION:
        text += " (expected = the per-connection figure x the streamer's connections, binance_connection_slots)"
    return text


class ValidationConfig(dg.Config):
    instance: str = Field(
        default="",
        description="one streamer instance (color) to judge alone; empty = the active streamer, stitched across "
        "the deployments of the period (deployment history)",
    )


def _judge(config: ValidationConfig, deployment: DeploymentResource,
           validate: Callable[[periods.Subject], periods.PeriodResult]) -> periods.PeriodResult:
    """The period of the streamer, or of every shard combined into the market's result."""
    if deployment.shard_count == 1:
        return validate(periods.Subject.from_history(deployment.history(), config.instance))
    judged = []
    for index in range(deployment.shard_count):
        shard = Shard(index, deployment.shard_count)
        subject = periods.Subject.from_history(deployment.settings(index).history(), config.instance, shard)
        judged.append((shard, (validate(subject),)))
    return periods.ShardedPeriod(tuple(judged)).combined()


def _judgement_metadata(result: periods.PeriodResult) -> dict[str, Any]:
    return {
        "judged": result.judged_text,
        "deployments": dg.MetadataValue.md(
            "\n".join(f"- {d['text']}" for d in result.deployments) if result.deployments else "none"
        ),
        "notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in result.notes) if result.notes else "none"),
        # Reported, not judged: the period's latency quantiles in ms (-1: no acknowledgement in the period).
        **{f"latency_{name}_{q}_ms": round(1000 * value, 3) if value is not None else -1.0
           for name, quantiles in result.latency.items() for q, value in quantiles.items()},
    }


def _check_results(asset: str, checks: list[Any]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            asset_key=asset, check_name=check.name, passed=bool(check.passed),
            severity=dg.AssetCheckSeverity.ERROR,
            description=check.evidence,
            metadata={"observed": check.observed_text(), "threshold": check.threshold_text(),
                      "unit": check.unit, "evidence": check.evidence},
        )
        for check in checks
    ]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="validation",
    check_specs=[*(dg.AssetCheckSpec(name, asset="daily_validation_report",
                                     description=f"daily criterion {name} of the 7-day validation: "
                                     f"{_criterion_text(criteria.daily(PRODUCTION), name)}")
                   for name in DAILY_CHECKS),
                 dg.AssetCheckSpec(BOOK_INTEGRITY, asset="daily_validation_report",
                                   description="every depth symbol's diff chain in Kafka either unbroken or resynced "
                                   "by a later snapshot (k2_ops/books.py); passes with a note when nothing streams "
                                   "depth")],
    description="The daily checks of the 7-day validation for one UTC day, from Prometheus.",
    kinds={"python"},
)
def daily_validation_report(context: dg.AssetExecutionContext, config: ValidationConfig,
                            prometheus: PrometheusResource, deployment: DeploymentResource,
                            reports: ReportsResource) -> Any:
    window = context.partition_time_window
    client = prometheus.client()
    result = _judge(config, deployment, lambda subject: periods.validate_day(
        client, window.start.timestamp(), instance=subject, scrape_interval=prometheus.scrape_interval_seconds))
    instance = result.instance
    out_dir = reports.folder("daily", context.partition_key)
    data = result.to_dict()
    files = {"json": write_json(out_dir / "daily.json", data), **write_html_report("daily", result, out_dir)}
    table = checks_table(result.checks)
    (out_dir / "checks.md").write_text(
        f"# Daily validation {context.partition_key} ({result.judged_text})\n\n{table}\n")
    context.log.info(f"{context.partition_key} ({result.judged_text}): "
                     f"{'PASS' if result.passed else 'FAIL ' + ', '.join(result.failed())}")
    for note in result.notes:
        context.log.info(note)
    yield dg.Output(data, metadata={
        "day": context.partition_key, "instance": instance, "passed": result.passed,
        **_judgement_metadata(result),
        "failed_checks": ", ".join(result.failed()) or "none",
        "checks": dg.MetadataValue.md(table), "json_report": dg.MetadataValue.path(str(files["json"])),
        **report_metadata(files),
    })
    yield from _check_results("daily_validation_report", result.checks)
    yield _book_integrity(deployment, window.start.timestamp(), window.end.timestamp())


def _book_integrity(deployment: DeploymentResource, start_s: float, end_s: float) -> dg.AssetCheckResult:
    """The day's depth chains in Kafka (k2_ops.books.chain_integrity), from the deployment's Kafka settings."""
    from k2_ops.books import chain_integrity

    try:
        conf = deployment.settings().kafka_client_conf()
        integrity = chain_integrity(conf, deployment.topic_prefix, int(start_s * 1000), int(end_s * 1000))
    except Exception as exc:  # Kafka unreachable or unreadable: the check cannot pass without evidence
        return dg.AssetCheckResult(asset_key="daily_validation_report", check_name=BOOK_INTEGRITY, passed=False,
                                   severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"could not read the depth topics: {type(exc).__name__}: {exc}")
    return dg.AssetCheckResult(
        asset_key="daily_validation_report", check_name=BOOK_INTEGRITY, passed=not integrity.unresynced,
        severity=dg.AssetCheckSeverity.ERROR, description=integrity.summary(),
        metadata={"symbols": integrity.symbols, "diffs": integrity.diffs, "snapshots": integrity.snapshots,
                  "breaks": len(integrity.breaks), "unresynced_breaks": len(integrity.unresynced)})


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="validation",
    ins={"daily_validation_report": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    check_specs=[dg.AssetCheckSpec(WEEK_CHECK, asset="weekly_validation_report",
                                   description="every day of the week validated and passed"),
                 *[dg.AssetCheckSpec(name, asset="weekly_validation_report",
                                     description=f"daily criterion {name} passed on every validated day: "
                                     f"{_criterion_text(criteria.daily(PRODUCTION), name)}")
                   for name in DAILY_CHECKS]],
    description="The 7-day validation report: the daily results of the week's 7 days, a verdict per day.",
    kinds={"python"},
)
def weekly_validation_report(context: dg.AssetExecutionContext, daily_validation_report: dict[str, Any],
                             reports: ReportsResource) -> Any:
    window = context.partition_time_window
    days: list[dict[str, Any]] = []
    for index in range(7):
        day = (window.start + timedelta(days=index)).strftime("%Y-%m-%d")
        found = daily_validation_report.get(day)
        days.append({**found, "day": day} if found else {"day": day, "label": day, "missing": True})
    validated = [d for d in days if not d.get("missing")]
    failed_days = [d["day"] for d in validated if not d["passed"]]
    missing_days = [d["day"] for d in days if d.get("missing")]
    passed = not failed_days and not missing_days
    table = days_table(days, DAILY_CHECKS)
    out_dir = reports.folder("weekly", context.partition_key)
    deployments = list({d["deployment_id"]: d for day in validated for d in day.get("deployments", [])}.values())
    data = {"week_start": context.partition_key, "passed": passed, "failed_days": failed_days,
            "missing_days": missing_days, "deployments": deployments, "days": days}
    files = {"json": write_json(out_dir / "weekly.json", data)}
    results = [periods.PeriodResult.from_dict(d) for d in validated]
    if results:
        files.update(write_html_report("weekly", results, out_dir))
    (out_dir / "days.md").write_text(f"# 7-day validation from {context.partition_key}\n\n{table}\n")
    yield dg.Output(data, metadata={
        "week_start": context.partition_key, "passed": passed, "days_validated": len(validated),
        "failed_days": ", ".join(failed_days) or "none", "missing_days": ", ".join(missing_days) or "none",
        "judged": ", ".join(sorted({periods.PeriodResult.from_dict(d).judged_text for d in validated})) or "-",
        "deployments": dg.MetadataValue.md("\n".join(f"- {d['text']}" for d in deployments) or "none"),
        "days": dg.MetadataValue.md(table), "json_report": dg.MetadataValue.path(str(files["json"])),
        **report_metadata(files),
    })
    description = ("all 7 days passed" if passed else
                   f"failed: {', '.join(failed_days) or 'none'}; not validated: {', '.join(missing_days) or 'none'}")
    yield dg.AssetCheckResult(asset_key="weekly_validation_report", check_name=WEEK_CHECK, passed=passed,
                              description=description, metadata={"failed_days": len(failed_days),
                                                                 "missing_days": len(missing_days)})
    yield from _criterion_across_days(validated)


def _criterion_across_days(validated: list[dict[str, Any]]) -> Any:
    """One check per daily criterion over the week: which days failed it, observed vs threshold."""
    for name in DAILY_CHECKS:
        results = [(day["day"], check) for day in validated for check in day["checks"] if check["name"] == name]
        failing = [(day, check) for day, check in results if not check["passed"]]
        description = (f"passed on all {len(results)} validated days" if results and not failing else
                       "no validated day" if not results else
                       "failed on " + "; ".join(f"{day}: {check['observed_text']} (threshold "
                                                f"{check['threshold_text']})" for day, check in failing))
        yield dg.AssetCheckResult(asset_key="weekly_validation_report", check_name=name,
                                  passed=bool(results) and not failing, description=description,
                                  metadata={"days_checked": len(results), "days_failed": len(failing)})


@dg.asset(
    partitions_def=monthly_partitions,
    group_name="validation",
    check_specs=[dg.AssetCheckSpec(name, asset="monthly_stability_report",
                                   description=f"30-day stability criterion {name}: "
                                   f"{_criterion_text(criteria.stability_30d(PRODUCTION), name)}")
                 for name in MONTHLY_CHECKS],
    description="30-day stability criteria over the 30 days ending with the month, from Prometheus.",
    kinds={"python"},
)
def monthly_stability_report(context: dg.AssetExecutionContext, config: ValidationConfig,
                             prometheus: PrometheusResource, deployment: DeploymentResource,
                             reports: ReportsResource) -> Any:
    end = context.partition_time_window.end.timestamp()
    days = criteria.StabilityThresholds().days
    client = prometheus.client()
    result = _judge(config, deployment, lambda subject: periods.validate_month(
        client, end - days * DAY_SECONDS, instance=subject, scrape_interval=prometheus.scrape_interval_seconds))
    instance = result.instance
    out_dir = reports.folder("monthly", context.partition_key)
    data = result.to_dict()
    files = {"json": write_json(out_dir / "monthly.json", data), **write_html_report("monthly", result, out_dir)}
    table = checks_table(result.checks)
    yield dg.Output(data, metadata={
        "month": context.partition_key, "instance": instance, "passed": result.passed,
        **_judgement_metadata(result),
        "window": f"{datetime.fromtimestamp(result.start, UTC):%Y-%m-%d} .. "
                  f"{datetime.fromtimestamp(result.end - 1, UTC):%Y-%m-%d}",
        "failed_checks": ", ".join(result.failed()) or "none", "checks": dg.MetadataValue.md(table),
        "json_report": dg.MetadataValue.path(str(files["json"])), **report_metadata(files),
    })
    yield from _check_results("monthly_stability_report", result.checks)


daily_validation_job = dg.define_asset_job(
    "daily_validation_job", selection=dg.AssetSelection.assets(daily_validation_report),
    description="Daily validation of one UTC day.")
weekly_validation_job = dg.define_asset_job(
    "weekly_validation_job", selection=dg.AssetSelection.assets(weekly_validation_report),
    description="The 7-day validation report of one week.")
monthly_stability_job = dg.define_asset_job(
    "monthly_stability_job", selection=dg.AssetSelection.assets(monthly_stability_report),
    description="30-day stability report.")
