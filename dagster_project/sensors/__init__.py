from dagster_project.sensors.alerts import alertmanager_sensor
from dagster_project.sensors.deployment_health import deployment_health_sensor
from dagster_project.sensors.failures import FailureNotifier, k2_run_failure_sensor

__all__ = ["FailureNotifier", "alertmanager_sensor", "deployment_health_sensor", "k2_run_failure_sensor"]
