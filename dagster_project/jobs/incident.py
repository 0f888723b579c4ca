"""`incident_snapshot`: the metric window around an alert, `/readyz`, and top allocators if tracemalloc runs."""


from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.resources import DeploymentResource, PrometheusResource
from k2_ops.deploy.incident import capture


class IncidentConfig(dg.Config):
    alertname: str = Field(default="manual", description="the alert's name")
    labels: dict[str, str] = Field(default_factory=dict, description="the alert's labels (instance = color)")
    fingerprint: str = ""
    starts_at: str = Field(default="", description="when it started firing (RFC 3339); empty = now")
    window_before_seconds: float = Field(default=900.0, description="metrics captured before the alert started")
    window_after_seconds: float = Field(default=60.0, description="metrics captured after it started")


@dg.op(description="Capture metrics around the alert, the instance's /readyz and top allocators into a JSON file.")
def capture_incident(context: dg.OpExecutionContext, config: IncidentConfig, prometheus: PrometheusResource,
                     deployment: DeploymentResource) -> dg.Output[dict[str, Any]]:
    labels = {"alertname": config.alertname, **config.labels}
    alert = {"labels": labels, "fingerprint": config.fingerprint, "startsAt": config.starts_at}
    try:
        prom = prometheus.client()
    except LookupError as exc:
        context.log.warning(f"no Prometheus: {exc}")
        prom = None
    color = labels.get("instance") or deployment.history().active_color()
    info = deployment.make_backend().instance(color) if color in ("blue", "green") else None
    path, snapshot = capture(
        alert=alert, prometheus=prom, instance_url=info.base_url if info else None,
        window_before_s=config.window_before_seconds, window_after_s=config.window_after_seconds,
        out_dir=deployment.deploy_dir().parent / "incidents",
    )
    for name, error in snapshot["errors"].items():
        context.log.warning(f"incident snapshot: {name} not captured: {error}")
    readyz = snapshot.get("readyz", {})
    top = (snapshot.get("allocations") or {}).get("top_allocators") or []
    context.log.info(f"incident {config.alertname} on {color}: snapshot {path}")
    return dg.Output(
        {"path": str(path), "key": snapshot["key"]},
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "alertname": config.alertname,
            "instance": color,
            "readyz": dg.MetadataValue.json(readyz or {"error": snapshot["errors"].get("readyz", "")}),
            "metrics_captured": len(snapshot["metrics"]),
            "errors": dg.MetadataValue.json(snapshot["errors"]),
            "top_allocators": dg.MetadataValue.md(
                "\n".join(f"- {item}" for item in top[:10]) or "(tracemalloc not running)"),
        },
    )


@dg.job(description="Snapshot of the streamer around an alert (launched by alertmanager_sensor).",
        executor_def=dg.in_process_executor, tags={"k2/kind": "incident"})
def incident_snapshot() -> None:
    capture_incident()
