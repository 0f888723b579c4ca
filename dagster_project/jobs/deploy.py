"""`blue_green_deploy` and `rollback`: each deployment step is one op, so the UI shows where a deploy is.

Every op hands the `DeploymentState` (a dict) to the next. An op whose step fails rolls back at once (the old
color keeps or resumes streaming, the new one stops), records the rollback time in the deployment history,
and fails the run with the reason; the later steps are skipped. Terminating the run while a step runs rolls
back the same way before the run ends.
"""


from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.resources import DeploymentResource
from k2_ops.deploy.model import DEFAULT_IMAGE, DeployConfig, DeploymentState
from k2_ops.deploy.orchestrator import BlueGreenDeployment, DeploymentFailed


class BlueGreenDeployConfig(dg.Config):
    image: str = Field(default=DEFAULT_IMAGE, description="image (tag) of the new version")
    mode: str = Field(default="dual", description="dual (both produce; duplicates counted) or handover (exact)")
    dual_operation_seconds: float = Field(default=600.0, description="both colors streaming side by side")
    validation_seconds: float = Field(default=900.0, description="how long the new color is watched after cutover")
    ready_timeout_seconds: float = Field(default=120.0, description="deadline for /readyz of the new color")
    first_data_timeout_seconds: float = Field(default=60.0, description="the new color must receive data by then")
    stop_grace_seconds: float = Field(default=30.0, description="graceful stop (flush, close 1000) before a kill")
    poll_interval_seconds: float = 1.0
    min_rate_per_second: float = Field(default=10.0, description="minimum message rate during validation")
    rate_tolerance: float = Field(default=0.25, description="new color's rate may be this much below the old's")
    handover_flush_timeout_seconds: float = 30.0
    progress_interval_seconds: float = Field(default=30.0, description="a progress line this often while watching")
    target_env: dict[str, str] = Field(default_factory=dict, description="K2_* settings of the new version only")
    shard: int = Field(default=0, description="the shard to deploy (0 .. the resource's shard_count - 1)")

    def deploy_config(self) -> DeployConfig:
        return DeployConfig(**self.model_dump())


def _run_step(context: dg.OpExecutionContext, deployment: DeploymentResource, state: DeploymentState,
              step: str) -> tuple[BlueGreenDeployment, Any]:
    orchestrator = deployment.orchestrator(log=context.log.info, shard=state.config.shard)
    try:
        # Terminating the run (UI, `dagster run terminate`) raises DagsterExecutionInterruptedError inside the
        # running op: the orchestrator rolls back then too and raises it again for Dagster to end the run.
        return orchestrator, orchestrator.run_step(state, step,
                                                   interrupt_reason="the run was terminated during this step")
    except DeploymentFailed as failure:
        record = failure.record
        seconds = record.rollback_seconds or 0.0
        outcome = (f"rolled back to {record.active_color} in {seconds:.2f} s" if record.status == "rolled_back"
                   else "ROLLBACK FAILED (see the reason)")
        context.log.error(f"deployment step failed: {failure} -- {outcome}")
        raise dg.Failure(
            description=f"{record.reason} -- {outcome}",
            metadata={"reason": record.reason or "", "rollback_seconds": seconds, "status": record.status,
                      "active_color": record.active_color, "deployment_id": record.deployment_id},
            allow_retries=False,
        ) from failure.__cause__


def _output(state: DeploymentState, step: str, result: Any = None) -> dg.Output[dict[str, Any]]:
    metadata: dict[str, Any] = {"seconds": state.steps.get(step, 0.0), "source": state.source,
                                "target": state.target}
    if isinstance(result, dict) and result:
        metadata["result"] = dg.MetadataValue.json(result)
    elif isinstance(result, str):
        metadata["result"] = result
    return dg.Output(state.to_dict(), metadata=metadata)


@dg.op(description="Plan the deployment (old color -> new color) and build the image (compose backend).")
def build_image(context: dg.OpExecutionContext, config: BlueGreenDeployConfig,
                deployment: DeploymentResource) -> dg.Output[dict[str, Any]]:
    orchestrator = deployment.orchestrator(log=context.log.info, shard=config.shard)
    state = orchestrator.plan(config.deploy_config(), run_id=context.run_id)
    context.log.info(f"deployment {state.deployment_id}: {state.source} -> {state.target}, image {config.image}, "
                     f"{config.mode} mode, backend {deployment.backend}")
    _, result = _run_step(context, deployment, state, "build_image")
    return _output(state, "build_image", result)


def _step_op(name: str, step: str, description: str) -> dg.OpDefinition:
    @dg.op(name=name, description=description)
    def _op(context: dg.OpExecutionContext, state: dict[str, Any],
            deployment: DeploymentResource) -> dg.Output[dict[str, Any]]:
        current = DeploymentState.from_dict(state)
        _, result = _run_step(context, deployment, current, step)
        return _output(current, step, result)

    return _op


start_new_color = _step_op(
    "start_new_color", "start_target", "Start the new color beside the active one (standby in handover mode).")
wait_until_ready = _step_op(
    "wait_until_ready", "wait_target_ready", "Poll the new color's /readyz until ready, with a deadline.")
dual_operation = _step_op(
    "dual_operation", "dual_operation", "Both colors stream; the new one must get data in time; rates compared.")
cutover = _step_op(
    "cutover", "cutover", "Handover (exact) or stop of the old color (graceful: flush, close 1000).")
validate_new_color = _step_op(
    "validate_new_color", "validate_target", "Watch the new color: rate, errors, no reconnects, /readyz.")


@dg.op(description="Count duplicates and gaps in Kafka by (symbol, trade id) and append the deployment record.")
def record_deployment(context: dg.OpExecutionContext, state: dict[str, Any],
                      deployment: DeploymentResource) -> dg.Output[dict[str, Any]]:
    current = DeploymentState.from_dict(state)
    _, record = _run_step(context, deployment, current, "record_deployment")
    kafka = record.measurements.get("kafka", {})
    context.log_event(dg.AssetMaterialization(
        asset_key="deployment_history",
        description=f"{record.deployment_id}: {record.from_color} -> {record.to_color} {record.status}",
        metadata={"active_color": record.active_color, "deployment_id": record.deployment_id},
    ))
    return dg.Output(record.to_dict(), metadata={
        "status": record.status, "active_color": record.active_color, "mode": record.mode,
        "duplicates": int(kafka.get("duplicates", 0)), "missing": int(kafka.get("missing", 0)),
        "note": record.measurements.get("note", ""), "record": dg.MetadataValue.json(record.to_dict()),
    })


@dg.job(
    description="Blue-green deployment of the streamer with automatic rollback on any failure.",
    executor_def=dg.in_process_executor,
    tags={"k2/kind": "deployment"},
)
def blue_green_deploy() -> None:
    record_deployment(validate_new_color(cutover(dual_operation(wait_until_ready(start_new_color(build_image()))))))


class RollbackConfig(dg.Config):
    reason: str = "manual rollback"
    shard: int = Field(default=0, description="the shard to roll back (0 .. the resource's shard_count - 1)")
    ready_timeout_seconds: float = 120.0
    stop_grace_seconds: float = 30.0
    handover_flush_timeout_seconds: float = 30.0


@dg.op(description="Go back to the previously active color (exact handover when possible), measured.")
def rollback_to_previous(context: dg.OpExecutionContext, config: RollbackConfig,
                         deployment: DeploymentResource) -> dg.Output[dict[str, Any]]:
    orchestrator = deployment.orchestrator(log=context.log.info, shard=config.shard)
    deploy_config = DeployConfig(shard=config.shard, ready_timeout_seconds=config.ready_timeout_seconds,
                                 stop_grace_seconds=config.stop_grace_seconds,
                                 handover_flush_timeout_seconds=config.handover_flush_timeout_seconds)
    try:
        record = orchestrator.manual_rollback(deploy_config, run_id=context.run_id, reason=config.reason)
    except Exception as exc:
        raise dg.Failure(description=f"rollback failed: {exc}", allow_retries=False) from exc
    context.log_event(dg.AssetMaterialization(asset_key="deployment_history",
                                              description=f"rollback to {record.active_color}"))
    return dg.Output(record.to_dict(), metadata={
        "rollback_seconds": record.rollback_seconds or 0.0, "active_color": record.active_color,
        "method": record.measurements["rollback"]["method"], "reason": config.reason,
    })


@dg.job(description="Manual rollback to the previous color, measured.", executor_def=dg.in_process_executor,
        tags={"k2/kind": "deployment"})
def rollback() -> None:
    rollback_to_previous()
