"""Everything the K2 Ops Dagster code location holds: assets (with checks), jobs, schedules, sensors, resources.

Resource settings come from the environment, so the same definitions serve `make run` (everything from
the local stack's `stack.json`) and production (docker/compose.yaml):

| env | resource setting | default |
|---|---|---|
| `K2_RUN_DIR` | local stack run folder (stack.json, PID files, reports, deploy history) | `.run` |
| `K2_PROMETHEUS_URL` / `K2_ALERTMANAGER_URL` | URLs | the local stack's |
| `K2_PROMETHEUS_SCRAPE_INTERVAL_SECONDS` | scrape interval the validations assume | 15 |
| `K2_DEPLOY_BACKEND` | `process` or `compose` | process |
| `K2_DEPLOY_INSTANCE_URL_TEMPLATE` | URL of a color (compose: `http://{service}:{container_port}`) | host port |
| `K2_DEPLOY_COMPOSE_FILE` | compose backend: the compose file it drives | `docker/compose.yaml` |
| `K2_DEPLOY_COMPOSE_ENV_FILE` | compose backend: `--env-file` of every compose command | the `.env` beside it |
| `K2_DEPLOY_BUILD_CONTEXT` | compose backend: checkout `build_image` builds the streamer image from | `.` |
| `K2_DEPLOY_PYTHON_IMAGE` | compose backend: the streamer Dockerfile's `PYTHON_IMAGE` build argument | its default |
| `K2_DEPLOY_UNHEALTHY_ROLLBACK_SECONDS` | deployment_health_sensor's limit | 120 |
| `K2_KAFKA_TOPIC_PREFIX` | streamer topics | market.crypto.binance |
| `K2_KAFKA_BOOTSTRAP_SERVERS` | Kafka for the deploy audit (and process-backend streamers) | the local stack's |
| `K2_BINANCE_WS_URL` | source of streamers Dagster starts (process backend, `soak_test`) | the simulator |
| `K2_VALIDATION_START_DATE` | first daily partition (read in assets/validation.py) | 2026-01-01 |
| `K2_REPORTS_DIR` | report files | `<run>/reports` |
| `K2_FAILURE_WEBHOOK_URL` | run-failure sensor webhook (a secret: kept an EnvVar) | none |
| `K2_HANDOVER_TOKEN` | token of the colors' POST /handover/* (a secret: kept an EnvVar) | the deploy folder's file |
"""


import os
from collections.abc import Mapping

import dagster as dg

from dagster_project.assets import ALL_ASSETS, ASSET_JOBS
from dagster_project.assets.reporting import ReportsResource
from dagster_project.jobs import blue_green_deploy, incident_snapshot, rollback
from dagster_project.resources import AlertmanagerResource, DeploymentResource, PrometheusResource
from dagster_project.schedules import SCHEDULES
from dagster_project.sensors import (
    FailureNotifier,
    alertmanager_sensor,
    deployment_health_sensor,
    k2_run_failure_sensor,
)


def resources(env: Mapping[str, str] = os.environ) -> dict[str, object]:
    """The resources, configured from `env` (the process environment)."""

    def _env(name: str, default: str = "") -> str:
        return env.get(name, default)

    return {
        "prometheus": PrometheusResource(
            url=_env("K2_PROMETHEUS_URL"),
            scrape_interval_seconds=float(_env("K2_PROMETHEUS_SCRAPE_INTERVAL_SECONDS", "15")),
        ),
        "alertmanager": AlertmanagerResource(url=_env("K2_ALERTMANAGER_URL")),
        "deployment": DeploymentResource(
            backend=_env("K2_DEPLOY_BACKEND", "process"),
            topic_prefix=_env("K2_KAFKA_TOPIC_PREFIX", "market.crypto.binance"),
            kafka_bootstrap_servers=_env("K2_KAFKA_BOOTSTRAP_SERVERS"),
            ws_url=_env("K2_BINANCE_WS_URL"),
            instance_url_template=_env("K2_DEPLOY_INSTANCE_URL_TEMPLATE", "http://{host_ip}:{host_port}"),
            compose_file=_env("K2_DEPLOY_COMPOSE_FILE", "docker/compose.yaml"),
            compose_env_file=_env("K2_DEPLOY_COMPOSE_ENV_FILE"),
            build_context=_env("K2_DEPLOY_BUILD_CONTEXT", "."),
            python_image=_env("K2_DEPLOY_PYTHON_IMAGE"),
            unhealthy_rollback_seconds=float(_env("K2_DEPLOY_UNHEALTHY_ROLLBACK_SECONDS", "120")),
            # An EnvVar: the UI shows the variable's name, never the token.
            handover_token=dg.EnvVar("K2_HANDOVER_TOKEN") if _env("K2_HANDOVER_TOKEN") else "",
        ),
        "reports": ReportsResource(root=_env("K2_REPORTS_DIR")),
        # An EnvVar keeps the hook's token out of the UI's resource config; unset means no webhook.
        "failure_notifier": FailureNotifier(
            webhook_url=dg.EnvVar("K2_FAILURE_WEBHOOK_URL") if _env("K2_FAILURE_WEBHOOK_URL") else ""
        ),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[blue_green_deploy, rollback, incident_snapshot, *ASSET_JOBS],
    schedules=SCHEDULES,
    sensors=[alertmanager_sensor, k2_run_failure_sensor, deployment_health_sensor],
    resources=resources(),
)
