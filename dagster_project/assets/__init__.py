from dagster_project.assets.deployment import deployment_history
from dagster_project.assets.soak import soak_memory_profile, soak_report, soak_test
from dagster_project.assets.validation import (
    daily_validation_job,
    daily_validation_report,
    monthly_stability_job,
    monthly_stability_report,
    weekly_validation_job,
    weekly_validation_report,
)

ALL_ASSETS = [daily_validation_report, weekly_validation_report, monthly_stability_report, soak_memory_profile,
              soak_report, deployment_history]
ASSET_JOBS = [daily_validation_job, weekly_validation_job, monthly_stability_job, soak_test]

__all__ = ["ALL_ASSETS", "ASSET_JOBS"]
