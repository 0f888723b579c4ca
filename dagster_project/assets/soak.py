"""`soak_memory_profile` and `soak_report`, materialised by the `soak_test` job: the soak runner of
`k2_ops.validation.soak` with a profile and a duration from config; progress goes to the run log."""


import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.assets.reporting import ReportsResource, checks_table, report_metadata, write_html_report
from dagster_project.resources import DeploymentResource
from k2_ops.validation.soak import SOAK_TOPIC_PREFIX


class SoakConfig(dg.Config):
    profile: str = Field(default="production", description='"production", "ci" or "compressed:<day seconds>"')
    duration_seconds: float | None = Field(
        default=None, description="soak length in seconds; empty = the criteria's 24 h / 12 h on the profile clock")
    criteria: str = Field(default="24h", description='"24h" (soak) or "12h" (validation) criteria')
    sample_interval_seconds: float | None = Field(
        default=None, description="how often the streamer's metrics are sampled; empty = the profile's")
    attach_url: str = Field(default="", description="soak a running streamer at this base URL; empty = start one")
    topic_prefix: str = Field(default=SOAK_TOPIC_PREFIX,
                              description="Kafka topic prefix of a started streamer (never the production one)")


def run_soak(config: SoakConfig, env: dict[str, str], out_dir: Path, log: Any) -> Any:
    """The soak runner of issue 4 (`k2_ops.validation.soak.run_soak`); progress lines go to the run log."""
    from k2_ops.validation import soak
    from k2_ops.validation.profiles import get_profile

    return soak.run_soak(
        get_profile(config.profile), config.duration_seconds, out_dir, criteria=config.criteria,
        sample_interval_seconds=config.sample_interval_seconds, streamer_env=env,
        attach_url=config.attach_url or None, progress=log,
    )


@dg.asset(group_name="soak", description="Memory profile JSON of a soak run (RSS, messages, rotations, pings).",
          kinds={"python"})
def soak_memory_profile(context: dg.AssetExecutionContext, config: SoakConfig, deployment: DeploymentResource,
                        reports: ReportsResource) -> dg.Output[dict[str, Any]]:
    out_dir = reports.folder("soak", context.run.run_id[:8])
    env = {**deployment.common_env(), "K2_KAFKA_TOPIC_PREFIX": config.topic_prefix} if not config.attach_url else {}
    result = run_soak(config, env, out_dir, context.log.info)
    data = {"profile_path": str(result.profile_path), "passed": bool(result.passed),
            "checks": [check.to_dict() for check in result.checks], "summary": dict(result.summary),
            "config": config.model_dump(), "out_dir": str(out_dir),
            "report_files": {key: str(path) for key, path in result.report_files.items()}}
    return dg.Output(data, metadata={
        "memory_profile": dg.MetadataValue.path(str(result.profile_path)),
        "summary": dg.MetadataValue.json(dict(result.summary)), "passed": bool(result.passed),
    })


@dg.asset(group_name="soak", description="Soak report: every criterion observed vs threshold, with charts.",
          check_specs=[dg.AssetCheckSpec("soak_criteria_passed", asset="soak_report")], kinds={"python"})
def soak_report(context: dg.AssetExecutionContext, soak_memory_profile: dict[str, Any]) -> Any:
    from k2_ops.validation.checks import CheckResult

    checks = [CheckResult.from_dict(item) for item in soak_memory_profile["checks"]]
    out_dir = Path(soak_memory_profile["out_dir"])
    files = {key: Path(path) for key, path in soak_memory_profile.get("report_files", {}).items()}
    if "html" not in files:  # the runner writes the report; render it here only if it did not
        profile = json.loads(Path(soak_memory_profile["profile_path"]).read_text())
        files = write_html_report("soak", profile, out_dir)
    table = checks_table(checks)
    context.log.info(f"soak {'PASSED' if soak_memory_profile['passed'] else 'FAILED'}; report {files.get('html')}")
    yield dg.Output({"passed": soak_memory_profile["passed"], "files": {k: str(v) for k, v in files.items()}},
                    metadata={"checks": dg.MetadataValue.md(table), **report_metadata(files)})
    failed = [c.name for c in checks if not c.passed]
    yield dg.AssetCheckResult(check_name="soak_criteria_passed", passed=not failed,
                              description="all passed" if not failed else "failed: " + ", ".join(failed))


soak_test = dg.define_asset_job(
    "soak_test", selection=dg.AssetSelection.assets(soak_memory_profile, soak_report),
    description="Soak run: starts (or attaches to) a streamer, samples it, writes the memory profile and report.",
    tags={"k2/kind": "soak"},
)
