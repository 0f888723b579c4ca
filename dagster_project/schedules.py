"""Daily validation of the previous UTC day at 00:15; the 7-day report every Monday after Sunday's daily run;
the 30-day stability report on the 1st of each month. Each targets the last complete partition."""


import dagster as dg

from dagster_project.assets.validation import daily_validation_job, monthly_stability_job, weekly_validation_job

daily_validation_schedule = dg.build_schedule_from_partitioned_job(
    daily_validation_job, name="daily_validation_schedule", hour_of_day=0, minute_of_hour=15,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="00:15 UTC: the daily checks of the previous day.",
)
weekly_validation_schedule = dg.build_schedule_from_partitioned_job(
    weekly_validation_job, name="weekly_validation_schedule", hour_of_day=1, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Monday 01:00 UTC: the 7-day report of the previous Monday..Sunday.",
)
monthly_stability_schedule = dg.build_schedule_from_partitioned_job(
    monthly_stability_job, name="monthly_stability_schedule", hour_of_day=1, minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="1st of the month 01:30 UTC: the 30-day stability report of the previous month.",
)

SCHEDULES = [daily_validation_schedule, weekly_validation_schedule, monthly_stability_schedule]
