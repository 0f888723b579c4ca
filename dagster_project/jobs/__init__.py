from dagster_project.jobs.deploy import blue_green_deploy, rollback
from dagster_project.jobs.incident import incident_snapshot

__all__ = ["blue_green_deploy", "incident_snapshot", "rollback"]
