"""`k2_run_failure_sensor`: every failed run is appended to `<run>/failures.jsonl` and, when a webhook URL is
configured, posted there as JSON (e.g. to Alertmanager-style receivers or a chat hook).

The webhook URL is a secret (hooks carry their token in it): it comes from `K2_FAILURE_WEBHOOK_URL` as a
Dagster `EnvVar` (the UI shows the variable's name, not its value) and logs name only its host."""


import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.resources.stack import stack_run_dir
from streamer.redact import secret_url_site


# Its value is the resource itself, which has no type argument to name (dagster#32027).
class FailureNotifier(dg.ConfigurableResource):  # type: ignore[type-arg]
    run_dir: str = ""
    failures_file: str = Field(default="", description="JSON lines of failed runs (default <run>/failures.jsonl)")
    webhook_url: str = Field(default="", description="POST each failure as JSON here; empty = no webhook")
    timeout_seconds: float = 10.0

    def path(self) -> Path:
        return Path(self.failures_file) if self.failures_file else stack_run_dir(self.run_dir) / "failures.jsonl"

    def record(self, failure: dict[str, Any]) -> str | None:
        """Append the failure; post it if a webhook is configured. Returns the webhook error, if any."""
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(failure, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
        if not self.webhook_url:
            return None
        request = urllib.request.Request(self.webhook_url, data=json.dumps(failure).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds):
                return None
        except urllib.error.HTTPError as exc:
            return f"webhook {secret_url_site(self.webhook_url)} answered {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            return f"webhook {secret_url_site(self.webhook_url)} failed: {getattr(exc, 'reason', exc)}"


def failure_record(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    run = context.dagster_run
    return {
        "run_id": run.run_id, "job": run.job_name, "recorded_at": time.time(),
        "message": context.failure_event.message or "", "tags": dict(run.tags),
    }


@dg.run_failure_sensor(name="k2_run_failure_sensor", minimum_interval_seconds=30,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Records every failed run (and posts it to a webhook if configured).")
def k2_run_failure_sensor(context: dg.RunFailureSensorContext, failure_notifier: FailureNotifier) -> None:
    error = failure_notifier.record(failure_record(context))
    if error:
        context.log.warning(error)
