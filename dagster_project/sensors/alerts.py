"""`alertmanager_sensor`: one `incident_snapshot` run per firing K2 alert, never two for the same alert.

The cursor holds the keys (fingerprint + start time) of the K2 alerts firing at the last evaluation that
were already handled; keys of resolved alerts drop out, so the cursor stays small. Each run request also
carries the key as its run key, so Dagster itself refuses a duplicate.
"""


import json

import dagster as dg

from dagster_project.jobs.incident import incident_snapshot
from dagster_project.resources import AlertmanagerResource
from k2_ops.deploy.incident import alert_key, is_firing, is_k2_alert, k2_alert_names, new_alerts


def _read_cursor(cursor: str | None) -> list[str]:
    try:
        value = json.loads(cursor) if cursor else []
    except json.JSONDecodeError:
        return []
    return [str(item) for item in value] if isinstance(value, list) else []


@dg.sensor(job=incident_snapshot, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches incident_snapshot once per firing K2 alert in Alertmanager.")
def alertmanager_sensor(context: dg.SensorEvaluationContext, alertmanager: AlertmanagerResource
                        ) -> dg.SensorResult | dg.SkipReason:
    try:
        alerts = alertmanager.firing_alerts()
    except Exception as exc:
        return dg.SkipReason(f"Alertmanager not reachable: {exc}")
    names = k2_alert_names()
    seen = _read_cursor(context.cursor)
    fresh = new_alerts(alerts, seen, names)
    firing_keys = {alert_key(a) for a in alerts if is_firing(a) and is_k2_alert(a, names)}
    requests = []
    for alert in fresh:
        labels = dict(alert.get("labels", {}))
        key = alert_key(alert)
        requests.append(dg.RunRequest(
            run_key=key,
            run_config={"ops": {"capture_incident": {"config": {
                "alertname": labels.get("alertname", ""),
                "labels": {k: str(v) for k, v in labels.items() if k != "alertname"},
                "fingerprint": str(alert.get("fingerprint", "")),
                "starts_at": str(alert.get("startsAt", "")),
            }}}},
            tags={"k2/alertname": labels.get("alertname", ""), "k2/instance": labels.get("instance", "")},
        ))
    cursor = json.dumps(sorted(firing_keys))
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{len(firing_keys)} K2 alert(s) firing, all handled"),
                               cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
