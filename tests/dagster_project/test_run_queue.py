"""At most one deployment at a time: two blue_green_deploy runs launched at once in a real `dagster dev`. The
run queue (tag k2/kind=deployment, limit 1, from docker/dagster/dagster.yaml) holds the second while the first
runs; then the second runs from where the first left off. Neither disturbs the other: each is a complete
deployment with no gap and no duplicate in Kafka."""

from __future__ import annotations

import time

import pytest

from k2_ops.deploy.model import DeployConfig

from .ui import launch, run_status

pytestmark = pytest.mark.slow

SHORT_DEPLOY = {
    "mode": "handover", "dual_operation_seconds": 3.0, "validation_seconds": 3.0, "poll_interval_seconds": 0.5,
    "ready_timeout_seconds": 60.0,
}
DONE = ("SUCCESS", "FAILURE", "CANCELED")


def test_a_second_deploy_waits_in_the_queue_until_the_first_ends(dagster_ui) -> None:
    """Two real blue-green deploys through `dagster dev`'s run queue, one after the other (~30 s): the
    queueing is observed by polling both runs, not assumed."""
    ui, deployment = dagster_ui
    deployment.orchestrator().ensure_running("blue", DeployConfig(ready_timeout_seconds=60.0))
    runs = [
        launch(ui.url, "blue_green_deploy", {"ops": {"build_image": {"config": {**SHORT_DEPLOY, "image": image}}}})
        for image in ("k2-platform:v2.1-first", "k2-platform:v2.2-second")
    ]
    # Poll both until done: record every pair of statuses seen, so the queueing is observed, not assumed.
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 300.0
    while time.monotonic() < deadline:
        statuses = (run_status(ui.url, runs[0]), run_status(ui.url, runs[1]))
        seen.add(statuses)
        assert statuses[0] != "STARTED" or statuses[1] in ("QUEUED", "NOT_STARTED"), seen
        assert statuses[1] != "STARTED" or statuses[0] in DONE, seen
        if all(status in DONE for status in statuses):
            break
        time.sleep(0.5)
    assert statuses == ("SUCCESS", "SUCCESS"), seen
    assert ("STARTED", "QUEUED") in seen, seen

    first, second = deployment.history().records()[-2:]
    assert (first.image, first.from_color, first.to_color) == ("k2-platform:v2.1-first", "blue", "green")
    assert (second.image, second.from_color, second.to_color) == ("k2-platform:v2.2-second", "green", "blue")
    assert first.status == second.status == "succeeded"
    assert second.started_at >= first.finished_at
    for record in (first, second):
        kafka = record.measurements["kafka"]
        assert (kafka["duplicates"], kafka["missing"]) == (0, 0), record.measurements
    assert deployment.history().active_color() == "blue"
    backend = deployment.make_backend()
    assert backend.is_running("blue") and not backend.is_running("green")
