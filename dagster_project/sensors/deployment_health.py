"""`deployment_health_sensor`: after a cutover, an active color whose /readyz keeps failing is rolled back.

The deployment history says whether the last change was a completed cutover and which color is active;
`k2_ops.deploy.watch.decide` counts how long /readyz has failed (cursor) and asks for one rollback per
deployment once it failed for longer than `DeploymentResource.unhealthy_rollback_seconds`.

After a rollback (manual, or automatic after a cutover) it does not act: rolling "back" again would return to
the color that was just judged bad or deliberately left. An unready color then is for a human, and the alerts
say so (BinanceStreamerTargetDown, BinanceStreamDown).
"""


import json
import time

import dagster as dg

from dagster_project.jobs.deploy import rollback
from dagster_project.resources import DeploymentResource
from k2_ops.deploy.probe import read_readiness
from k2_ops.deploy.watch import WatchState, decide


@dg.sensor(job=rollback, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="After a cutover, rolls back when the active color's /readyz fails for too long.")
def deployment_health_sensor(context: dg.SensorEvaluationContext, deployment: DeploymentResource
                             ) -> dg.SensorResult | dg.SkipReason:
    last = deployment.history().last()
    if last is None or last.kind != "deploy" or last.status != "succeeded":
        return dg.SkipReason("no completed cutover to watch")
    info = deployment.make_backend().instance(last.active_color)
    if info is None:
        return dg.SkipReason(f"no instance state for the active color {last.active_color}")
    readiness = read_readiness(info.base_url)
    state = WatchState.from_dict(json.loads(context.cursor) if context.cursor else None)
    state, launch = decide(state, last.deployment_id, readiness.ready, time.time(),
                           deployment.unhealthy_rollback_seconds)
    cursor = json.dumps(state.to_dict())
    if not launch:
        reason = ("active color ready" if readiness.ready else
                  f"{last.active_color} unready since {state.unready_since:.0f}: {readiness.reason()}")
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    unready_for = time.time() - (state.unready_since or time.time())
    reason = (f"deployment_health_sensor: {last.active_color} /readyz failing for {unready_for:.1f} s "
              f"after deployment {last.deployment_id}: {readiness.reason()}")
    context.log.warning(reason)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=f"health-rollback-{last.deployment_id}",
            run_config={"ops": {"rollback_to_previous": {"config": {"reason": reason[:2000]}}}},
            tags={"k2/trigger": "deployment_health_sensor", "k2/deployment_id": last.deployment_id},
        )],
        cursor=cursor,
    )
