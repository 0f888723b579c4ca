"""`deployment_history`: every deployment and rollback from the JSON-lines history, as a table in the UI."""


from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dagster_project.resources import DeploymentResource
from k2_ops.deploy.history import DeploymentRecord


def history_table(records: list[DeploymentRecord], limit: int = 30) -> str:
    rows = ["| when (UTC) | id | change | mode | status | rollback s | duplicates | missing | reason |",
            "|---|---|---|---|---|---|---|---|---|"]
    for record in reversed(records[-limit:]):
        kafka = record.measurements.get("kafka", {})
        when = datetime.fromtimestamp(record.finished_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rollback_s = f"{record.rollback_seconds:.2f}" if record.rollback_seconds is not None else ""
        reason = (record.reason or "").replace("|", "\\|").replace("\n", " ")[:160]
        rows.append(f"| {when} | {record.deployment_id} | {record.from_color} -> {record.to_color} | {record.mode} "
                    f"| {record.status} | {rollback_s} | {kafka.get('duplicates', '')} | {kafka.get('missing', '')} "
                    f"| {reason} |")
    return "\n".join(rows)


@dg.asset(group_name="deployment", description="Deployment and rollback records (newest first in the table).",
          kinds={"python"})
def deployment_history(
    context: dg.AssetExecutionContext, deployment: DeploymentResource
) -> dg.Output[list[dict[str, Any]]]:
    history = deployment.history()
    records = history.records()
    rollbacks = [r.rollback_seconds for r in records if r.rollback_seconds is not None]
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(history.path)),
        "records": len(records),
        "active_color": history.active_color(),
        "succeeded": sum(r.status == "succeeded" for r in records),
        "rolled_back": sum(r.status == "rolled_back" for r in records),
        "history": dg.MetadataValue.md(history_table(records)),
    }
    if rollbacks:
        metadata["last_rollback_seconds"] = rollbacks[-1]
        metadata["max_rollback_seconds"] = max(rollbacks)
    context.log.info(f"{len(records)} records; active color {history.active_color()}")
    return dg.Output([r.to_dict() for r in records], metadata=metadata)
