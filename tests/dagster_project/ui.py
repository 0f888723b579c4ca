"""The GraphQL API of a real `dagster dev` (fixture `dagster_ui` in conftest.py): launch runs, read their
status. The daemon runs what is launched, through the instance's run queue (`k2_ops.stack.apps`)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def launch(url: str, job: str, run_config: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    params = {"selector": {"repositoryLocationName": "k2_ops", "repositoryName": "__repository__", "jobName": job},
              "runConfigData": run_config,
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
    answer = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def run_status(url: str, run_id: str) -> str:
    return str(graphql(url, STATUS, {"id": run_id})["runOrError"]["status"])


def wait_run(url: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = run_status(url, run_id)
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} still {status} after {timeout_s} s")
