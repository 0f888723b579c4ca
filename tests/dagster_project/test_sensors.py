"""Sensors against real services: Alertmanager holding a firing alert, a streamer whose /readyz fails after a
cutover, a failed run posted to a webhook."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.jobs.deploy import rollback
from dagster_project.jobs.incident import incident_snapshot
from dagster_project.resources import AlertmanagerResource
from dagster_project.sensors import FailureNotifier, alertmanager_sensor, deployment_health_sensor
from dagster_project.sensors.failures import k2_run_failure_sensor
from k2_ops.deploy.model import DeployConfig
from k2_ops.stack.http import http_json
from k2_ops.stack.process import wait_until

pytestmark = pytest.mark.slow


def push_alert(alertmanager_url: str, labels: dict[str, str], minutes: float = 10.0) -> None:
    now = datetime.now(UTC)
    http_json(f"{alertmanager_url}/api/v2/alerts", method="POST", body=[{
        "labels": labels, "annotations": {"summary": "pushed by the sensor test"},
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
    }])


def mine(requests: list[dg.RunRequest], run_tag: str) -> list[dg.RunRequest]:
    # The Alertmanager is shared by the whole session: only look at this test's alerts.
    return [r for r in requests
            if r.run_config["ops"]["capture_incident"]["config"]["labels"].get("testrun") == run_tag]


def test_alertmanager_sensor_one_run_per_firing_k2_alert(deploy, resources, alertmanager, prometheus,
                                                        dagster_instance) -> None:
    run_tag = uuid.uuid4().hex[:8]
    push_alert(alertmanager.url, {"alertname": "BinanceStreamDown", "instance": "blue", "severity": "critical",
                                  "testrun": run_tag})
    push_alert(alertmanager.url, {"alertname": "BinanceMemoryHigh", "instance": "blue", "severity": "critical",
                                  "testrun": run_tag})
    push_alert(alertmanager.url, {"alertname": "SomebodyElsesAlert", "instance": "blue", "testrun": run_tag})
    am = AlertmanagerResource(url=alertmanager.url)
    wait_until(lambda: len([a for a in am.firing_alerts() if a["labels"].get("testrun") == run_tag]) == 3,
               30.0, "Alertmanager holds the pushed alerts", interval_s=0.2)

    first = alertmanager_sensor(dg.build_sensor_context(instance=dagster_instance, resources={"alertmanager": am}))
    requests = mine(first.run_requests, run_tag)
    assert sorted(r.tags["k2/alertname"] for r in requests) == ["BinanceMemoryHigh", "BinanceStreamDown"]
    assert len({r.run_key for r in requests}) == 2
    assert all(r.job_name in (None, "incident_snapshot") for r in requests)

    # Next evaluation with the cursor: the same alerts are still firing, nothing new is requested.
    second = alertmanager_sensor(dg.build_sensor_context(instance=dagster_instance, cursor=first.cursor,
                                                         resources={"alertmanager": am}))
    assert mine(second.run_requests, run_tag) == []

    # The requested run captures the snapshot: metrics around the alert, /readyz of blue.
    deploy.resource.orchestrator().ensure_running("blue", DeployConfig(ready_timeout_seconds=60.0))
    # Three samples, not one: the snapshot's range query evaluates at ~1 s steps ending at the capture, so a
    # single sample taken within the last step before it may fall between two evaluation points (empty series).
    wait_until(lambda: bool(prometheus.query('count_over_time(process_memory_rss_bytes{instance="blue"}[1m]) >= 3')),
               30.0, "Prometheus holds three samples of blue", interval_s=0.5)
    request = next(r for r in requests if r.tags["k2/alertname"] == "BinanceStreamDown")
    result = incident_snapshot.execute_in_process(run_config=request.run_config, resources=resources,
                                                  instance=dagster_instance)
    assert result.success
    snapshot = json.loads(Path(result.output_for_node("capture_incident")["path"]).read_text())
    assert snapshot["alert"]["labels"]["alertname"] == "BinanceStreamDown"
    assert snapshot["readyz"]["ready"] is True
    assert snapshot["metrics"]["rss_bytes"]["series"], snapshot["errors"]
    assert "allocations" in snapshot


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@dg.op
def explode() -> None:
    raise RuntimeError("the op failed on purpose")


@dg.job
def always_fails() -> None:
    explode()


def test_run_failure_sensor_records_and_posts(tmp_path, webhook, dagster_instance) -> None:
    url, received = webhook
    result = always_fails.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    run = dagster_instance.get_run_by_id(result.run_id)
    notifier = FailureNotifier(failures_file=str(tmp_path / "failures.jsonl"), webhook_url=url)
    context = dg.build_run_status_sensor_context(
        sensor_name="k2_run_failure_sensor", dagster_instance=dagster_instance, dagster_run=run,
        dagster_event=result.get_run_failure_event(), resources={"failure_notifier": notifier},
    ).for_run_failure()
    k2_run_failure_sensor(context)
    recorded = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert [(r["run_id"], r["job"]) for r in recorded] == [(result.run_id, "always_fails")]
    assert [r["run_id"] for r in received] == [result.run_id]
    assert "explode" in received[0]["message"]


def test_a_failing_webhook_is_reported_without_its_secret(tmp_path) -> None:
    token = "T0K2/B0K2/s3cr3t-hook-token"
    with socket.socket() as closed:  # a port nothing listens on: the POST is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    notifier = FailureNotifier(failures_file=str(tmp_path / "failures.jsonl"),
                               webhook_url=f"http://127.0.0.1:{port}/services/{token}?key=also-secret")
    error = notifier.record({"run_id": "r1", "job": "j", "message": "m"})
    assert error is not None and error.startswith(f"webhook http://127.0.0.1:{port}/... failed")
    assert token not in error and "s3cr3t" not in error and "also-secret" not in error
    assert (tmp_path / "failures.jsonl").read_text().count("r1") == 1  # recorded even though the post failed


def test_deployment_health_sensor_rolls_back_an_unready_active_color(deploy, resources, dagster_instance) -> None:
    orchestrator = deploy.resource.orchestrator()
    config = DeployConfig(mode="handover", dual_operation_seconds=2.0, validation_seconds=2.0,
                          poll_interval_seconds=0.5, ready_timeout_seconds=60.0)
    orchestrator.ensure_running("blue", config)
    record = orchestrator.run(config)
    assert record.active_color == "green"
    sensor_resources = {"deployment": deploy.resource}

    healthy = deployment_health_sensor(dg.build_sensor_context(instance=dagster_instance,
                                                               resources=sensor_resources))
    assert healthy.run_requests == []

    # Green dies after the cutover.
    deploy.resource.make_backend().stop("green", 5.0)
    cursor = healthy.cursor
    requests: list[dg.RunRequest] = []
    began = time.monotonic()
    while not requests and time.monotonic() - began < 30.0:
        evaluation = deployment_health_sensor(dg.build_sensor_context(
            instance=dagster_instance, cursor=cursor, resources=sensor_resources))
        cursor, requests = evaluation.cursor, evaluation.run_requests
        time.sleep(0.2)
    assert len(requests) == 1
    assert requests[0].run_key == f"health-rollback-{record.deployment_id}"
    assert "green /readyz failing" in requests[0].run_config["ops"]["rollback_to_previous"]["config"]["reason"]
    # Once requested, never again for this deployment.
    again = deployment_health_sensor(dg.build_sensor_context(instance=dagster_instance, cursor=cursor,
                                                             resources=sensor_resources))
    assert again.run_requests == []

    result = rollback.execute_in_process(run_config=requests[0].run_config, resources=resources,
                                         instance=dagster_instance)
    assert result.success
    rolled = result.output_for_node("rollback_to_previous")
    assert rolled["active_color"] == "blue"
    assert rolled["measurements"]["rollback"]["method"] == "restart"  # green was gone: blue restarted
    assert deploy.resource.make_backend().is_running("blue")
    print(f"\nhealth-sensor rollback (green dead, blue restarted): {rolled['rollback_seconds']:.2f} s")
