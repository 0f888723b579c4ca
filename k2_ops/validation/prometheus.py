"""Prometheus HTTP API and Alertmanager API clients (stdlib urllib only), with errors that say what failed.

- `PrometheusUnreachable`: no HTTP answer (refused, timeout, DNS); names the URL and the reason.
- `PrometheusQueryError`: Prometheus answered with an error (bad PromQL, execution failure); carries
  Prometheus' own `errorType` and message, and the query.
- `EmptyResult`: the query ran but returned no series where one was required (`query_value`).
- Authentication and TLS (basic auth, bearer token, CA, extra headers) come from `k2_ops.http_endpoint`:
  by default from K2_PROMETHEUS_* / K2_ALERTMANAGER_* in the environment; `self.url` never holds a
  password, so every message here is safe to log.

Range queries pick their step so a range never exceeds Prometheus' 11,000-points-per-series limit:
`choose_step` keeps it under 10,000 points (7 days -> 61 s, 30 days -> 260 s) and never below the
scrape resolution asked for (`min_step`).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, cast

import yaml

from k2_ops.http_endpoint import Endpoint
from k2_ops.rules import RulesError, parse_duration
from k2_ops.validation.series import Series

# Prometheus refuses range queries over 11,000 points per series; stay well under.
PROMETHEUS_MAX_POINTS = 11_000
DEFAULT_MAX_POINTS = 10_000


class PrometheusError(RuntimeError):
    """Base class of the clients' errors."""


class PrometheusUnreachable(PrometheusError):
    pass


class PrometheusQueryError(PrometheusError):
    def __init__(self, message: str, *, query: str = "", error_type: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.query = query
        self.error_type = error_type
        self.status = status


class PrometheusUnauthorized(PrometheusError):
    """Prometheus (or the proxy in front of it) answered 401 or 403."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class EmptyResult(PrometheusError):
    def __init__(self, query: str, at: float | None = None) -> None:
        when = f" at {at:.0f}" if at is not None else ""
        super().__init__(f"query returned no series{when}: {query}")
        self.query = query


class AlertmanagerUnreachable(PrometheusError):
    pass


class AlertmanagerError(PrometheusError):
    pass


def choose_step(start: float, end: float, *, min_step: float = 1.0, max_points: int = DEFAULT_MAX_POINTS) -> float:
    """A step >= min_step giving at most `max_points` points over [start, end], in whole milliseconds.

    Prefers a step that divides the span exactly, so the last point falls on `end` and a count over
    (start, end] misses nothing at the end (a day in 60 s steps, 30 days in 259.2 s steps). Without such
    a divisor (an odd span) it returns the smallest allowed step and the points stop short of `end` by
    less than one step.
    """
    if end <= start:
        raise ValueError(f"range end {end} must be after start {start}")
    if not 2 <= max_points <= PROMETHEUS_MAX_POINTS:
        raise ValueError(f"max_points must be in [2, {PROMETHEUS_MAX_POINTS}], got {max_points}")
    span_ms = round((end - start) * 1000)
    least_ms = max(1, math.ceil(min_step * 1000 - 1e-6), math.ceil(span_ms / (max_points - 1)))
    for step_ms in range(least_ms, min(2 * least_ms, span_ms) + 1):
        if span_ms % step_ms == 0:
            return step_ms / 1000
    return least_ms / 1000


def promql_duration(seconds: float) -> str:
    """A PromQL range duration (integers only) for `seconds`, rounded up to the millisecond."""
    milliseconds = max(1, math.ceil(seconds * 1000 - 1e-6))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def _read_error_body(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        # Prometheus' error answer is a JSON object ({"status": "error", "errorType": ..., "error": ...}).
        return cast(dict[str, Any], json.loads(error.read() or b"{}"))
    except (json.JSONDecodeError, OSError):
        return {}


def _series_from_result(result_type: str, result: Any) -> list[Series]:
    if result_type == "matrix":
        return [Series(item["metric"], [(float(t), float(v)) for t, v in item["values"]]) for item in result]
    if result_type == "vector":
        return [Series(item["metric"], [(float(item["value"][0]), float(item["value"][1]))]) for item in result]
    if result_type == "scalar":
        return [Series({}, [(float(result[0]), float(result[1]))])]
    raise PrometheusQueryError(f"unexpected result type {result_type!r}")


class PrometheusClient:
    def __init__(self, url: str, timeout_seconds: float = 30.0, endpoint: Endpoint | None = None) -> None:
        self.endpoint = endpoint or Endpoint.from_env(url, "prometheus")
        self.url = self.endpoint.url
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"PrometheusClient({self.url!r})"

    def _api(self, path: str, params: Mapping[str, str], query: str = "") -> Any:
        body = urllib.parse.urlencode(params).encode()
        request = self.endpoint.request(
            path, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with self.endpoint.open(request, self.timeout_seconds) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise PrometheusUnauthorized(
                    f"Prometheus at {self.url} refused the credentials ({error.code} {error.reason}): check "
                    "K2_PROMETHEUS_BASIC_AUTH(_FILE) or K2_PROMETHEUS_BEARER_TOKEN_FILE", status=error.code,
                ) from error
            detail = _read_error_body(error)
            message = detail.get("error") or error.reason
            raise PrometheusQueryError(
                f"Prometheus at {self.url} rejected the query ({error.code} {detail.get('errorType', '')}): "
                f"{message}; query: {query}",
                query=query,
                error_type=str(detail.get("errorType", "")),
                status=error.code,
            ) from error
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PrometheusUnreachable(f"Prometheus at {self.url} is unreachable: {reason}") from error
        except json.JSONDecodeError as error:
            raise PrometheusQueryError(f"Prometheus at {self.url} sent invalid JSON: {error}", query=query) from error
        if answer.get("status") != "success":
            raise PrometheusQueryError(
                f"Prometheus at {self.url}: {answer.get('error', answer)}; query: {query}",
                query=query,
                error_type=str(answer.get("errorType", "")),
            )
        return answer["data"]

    def query(self, promql: str, at: float | None = None) -> list[Series]:
        """Instant query: one point per series (or all raw samples for a range selector like `x[5m]`)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("/api/v1/query", params, promql)
        return _series_from_result(data["resultType"], data["result"])

    def query_value(self, promql: str, at: float | None = None) -> float:
        """The single value of an instant query; EmptyResult when there is none, error when several."""
        series = self.query(promql, at)
        if not series:
            raise EmptyResult(promql, at)
        if len(series) > 1:
            raise PrometheusQueryError(f"expected one series, got {len(series)}: {promql}", query=promql)
        return series[0].points[-1][1]

    def query_range(
        self, promql: str, start: float, end: float, step: float | None = None, *, min_step: float = 1.0
    ) -> list[Series]:
        """Range query; `step` defaults to `choose_step(start, end, min_step=min_step)`."""
        step = step if step is not None else choose_step(start, end, min_step=min_step)
        if (end - start) / step + 1 > PROMETHEUS_MAX_POINTS:
            raise ValueError(f"step {step} s gives more than {PROMETHEUS_MAX_POINTS} points over {end - start} s")
        data = self._api(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"},
            promql,
        )
        return _series_from_result(data["resultType"], data["result"])

    def alerts(
        self,
        start: float,
        end: float,
        *,
        alertstate: str = "firing",
        step: float | None = None,
        matchers: Mapping[str, str] | None = None,
    ) -> list[Series]:
        """The ALERTS series over [start, end], one per alert (label set), value 1 at points it was active.

        `max_over_time` over each step catches an alert that fired between two points. `matchers` are
        PromQL label matchers written as {label: 'op"value"'} or plain values (exact match).
        """
        step = step if step is not None else choose_step(start, end)
        selector = alerts_selector(alertstate=alertstate, matchers=matchers)
        return self.query_range(f"max_over_time({selector}[{promql_duration(step)}])", start, end, step)

    def firing_alert_names(self, start: float, end: float, matchers: Mapping[str, str] | None = None) -> set[str]:
        return {
            one.labels.get("alertname", "")
            for one in self.alerts(start, end, matchers=matchers)
            if any(value > 0 for value in one.values())
        }

    def rule_alerts(self) -> list[dict[str, Any]]:
        """Alerts the rule manager holds right now (pending and firing), from /api/v1/alerts."""
        try:
            with self.endpoint.get("/api/v1/alerts", self.timeout_seconds) as response:
                # /api/v1/alerts answers {"status": "success", "data": {"alerts": [{...}, ...]}}.
                return cast(list[dict[str, Any]], json.loads(response.read())["data"]["alerts"])
        except (TimeoutError, urllib.error.URLError, OSError) as error:
            raise PrometheusUnreachable(f"Prometheus at {self.url} is unreachable: {error}") from error

    def ready(self) -> bool:
        try:
            with self.endpoint.get("/-/ready", self.timeout_seconds) as response:
                return response.status == 200
        except (TimeoutError, urllib.error.URLError, OSError):
            return False

    def scrape_interval(self, job: str = "k2-streamer") -> float | None:
        """The scrape interval Prometheus is configured with for `job` (else its global one), in seconds.

        This is the resolution of data Prometheus scraped itself; backfilled data has its own.
        """
        try:
            with self.endpoint.get("/api/v1/status/config", self.timeout_seconds) as response:
                config = yaml.safe_load(json.loads(response.read())["data"]["yaml"]) or {}
        except (TimeoutError, urllib.error.URLError, OSError) as error:
            raise PrometheusUnreachable(f"Prometheus at {self.url} is unreachable: {error}") from error
        jobs = {item.get("job_name"): item for item in config.get("scrape_configs") or []}
        text = (jobs.get(job) or {}).get("scrape_interval") or (config.get("global") or {}).get("scrape_interval")
        try:
            return parse_duration(text) if text else None
        except RulesError:
            return None


def alerts_selector(alertstate: str = "firing", matchers: Mapping[str, str] | None = None) -> str:
    parts = [f'alertstate="{alertstate}"']
    for label, matcher in (matchers or {}).items():
        parts.append(f"{label}{matcher}" if matcher[:1] in ("=", "!") else f'{label}="{matcher}"')
    return "ALERTS{" + ",".join(parts) + "}"


class AlertmanagerClient:
    """Alertmanager API v2: the alerts it holds, e.g. the ones firing now."""

    def __init__(self, url: str, timeout_seconds: float = 10.0, endpoint: Endpoint | None = None) -> None:
        self.endpoint = endpoint or Endpoint.from_env(url, "alertmanager")
        self.url = self.endpoint.url
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"AlertmanagerClient({self.url!r})"

    def alerts(
        self,
        *,
        active: bool = True,
        silenced: bool = False,
        inhibited: bool = False,
        filters: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """GET /api/v2/alerts; `filters` are matchers like 'alertname="BinanceMemoryHigh"'."""
        params: list[tuple[str, str]] = [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
        ]
        params += [("filter", matcher) for matcher in filters]
        try:
            path = f"/api/v2/alerts?{urllib.parse.urlencode(params)}"
            with self.endpoint.get(path, self.timeout_seconds) as response:
                # /api/v2/alerts answers a JSON array of alert objects.
                return cast(list[dict[str, Any]], json.loads(response.read()))
        except urllib.error.HTTPError as error:
            raise AlertmanagerError(
                f"Alertmanager at {self.url} answered {error.code}: {error.read().decode(errors='replace')[:300]}"
            ) from error
        except (TimeoutError, urllib.error.URLError, OSError) as error:
            raise AlertmanagerUnreachable(
                f"Alertmanager at {self.url} is unreachable: {getattr(error, 'reason', error)}"
            ) from error

    def firing(self, alertname: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Alerts in state active (firing, not silenced or inhibited), optionally by name and labels."""
        filters = [f'alertname="{alertname}"'] if alertname else []
        filters += [f'{label}="{value}"' for label, value in labels.items()]
        return [alert for alert in self.alerts(filters=filters) if alert.get("status", {}).get("state") == "active"]

    def ready(self) -> bool:
        try:
            with self.endpoint.get("/-/ready", self.timeout_seconds) as response:
                return response.status == 200
        except (TimeoutError, urllib.error.URLError, OSError):
            return False
