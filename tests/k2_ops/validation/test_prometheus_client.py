"""The Prometheus and Alertmanager clients against the real services: results, steps within the
11,000-point limit, and clear errors (unreachable, bad query with Prometheus' message, empty result)."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from k2_ops.stack import AlertmanagerService, allocate_port, wait_until
from k2_ops.validation.prometheus import (
    PROMETHEUS_MAX_POINTS,
    AlertmanagerClient,
    AlertmanagerUnreachable,
    EmptyResult,
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnreachable,
    choose_step,
    promql_duration,
)

from .conftest import HistoryPrometheus

DAY = 86_400.0


@pytest.mark.parametrize(("days", "min_step"), [(1, 1.0), (1, 15.0), (7, 1.0), (7, 15.0), (30, 15.0), (30, 120.0)])
def test_choose_step_stays_under_the_point_limit_and_ends_on_the_end(days: int, min_step: float) -> None:
    step = choose_step(0.0, days * DAY, min_step=min_step)
    points = days * DAY / step + 1
    assert step >= min_step
    assert points <= 10_001 < PROMETHEUS_MAX_POINTS
    assert (days * DAY / step).is_integer()  # the last point is exactly the window end


def test_choose_step_refuses_an_empty_range() -> None:
    with pytest.raises(ValueError):
        choose_step(10.0, 10.0)
    assert promql_duration(259.2) == "259200ms"
    assert promql_duration(120) == "120s"


def test_unreachable_prometheus_is_named_plainly() -> None:
    url = f"http://127.0.0.1:{allocate_port()}"
    with pytest.raises(PrometheusUnreachable, match=f"Prometheus at {url} is unreachable"):
        PrometheusClient(url, timeout_seconds=2).query("up")
    assert not PrometheusClient(url, timeout_seconds=2).ready()


def test_bad_query_carries_prometheus_own_message(history_prometheus: HistoryPrometheus) -> None:
    with pytest.raises(PrometheusQueryError, match="parse error") as caught:
        history_prometheus.client.query("sum(rate(")
    assert caught.value.error_type == "bad_data"
    assert caught.value.status == 400
    assert caught.value.query == "sum(rate("


def test_prometheus_itself_refuses_more_than_11000_points(history_prometheus: HistoryPrometheus) -> None:
    """The limit our step choice avoids is real: bypass the guard and Prometheus says so."""
    client = history_prometheus.client
    with pytest.raises(ValueError, match="11000 points"):
        client.query_range("up", 0.0, 30 * DAY, step=60.0)
    with pytest.raises(PrometheusQueryError, match="11,000 points"):
        client._api("/api/v1/query_range", {"query": "up", "start": "0", "end": str(30 * DAY), "step": "60"}, "up")


def test_empty_result_is_its_own_error(history_prometheus: HistoryPrometheus) -> None:
    with pytest.raises(EmptyResult, match="no series"):
        history_prometheus.client.query_value('binance_pings_sent_total{instance="no-such-instance"}')
    assert history_prometheus.client.query('binance_pings_sent_total{instance="no-such-instance"}') == []


def test_instant_and_range_queries_return_series(history_prometheus: HistoryPrometheus) -> None:
    client = history_prometheus.client
    start = history_prometheus.week_start
    value = client.query_value('binance_pings_sent_total{instance="good-week"}', at=start + DAY)
    at_start = client.query_value('binance_pings_sent_total{instance="good-week"}', at=start)
    assert value - at_start == 480
    series = client.query_range('binance_connection_rotations_total{instance="good-week"}', start, start + DAY)
    assert len(series) == 1 and series[0].labels["reason"] == "scheduled"
    assert series[0].points[0][0] == start and series[0].points[-1][0] == start + DAY
    assert client.query("1 + 1")[0].points[0][1] == 2  # scalar results too


def test_alerts_helper_reads_the_alerts_series(history_prometheus: HistoryPrometheus) -> None:
    start = history_prometheus.week_start
    client = history_prometheus.client
    assert client.firing_alert_names(start, start + 7 * DAY, matchers={"instance": "alert-week"}) == {
        "KafkaProduceErrors"
    }
    assert client.firing_alert_names(start, start + 7 * DAY, matchers={"instance": "good-week"}) == set()
    assert client.firing_alert_names(start, start + 2 * DAY, matchers={"instance": "alert-week"}) == set()
    assert client.rule_alerts() == []  # nothing fires now: the history is in the past


def post_alert(alertmanager_url: str, name: str, instance: str) -> None:
    now = datetime.now(UTC)
    body = json.dumps(
        [
            {
                "labels": {"alertname": name, "instance": instance, "severity": "critical"},
                "annotations": {"summary": "test alert"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=5)).isoformat(),
            }
        ]
    ).encode()
    request = urllib.request.Request(
        f"{alertmanager_url}/api/v2/alerts", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_alertmanager_client_lists_firing_alerts(own_alertmanager: AlertmanagerService) -> None:
    client = AlertmanagerClient(own_alertmanager.url)
    assert client.ready()
    post_alert(own_alertmanager.url, "BinanceMemoryHigh", "blue")
    post_alert(own_alertmanager.url, "BinanceStreamDown", "green")
    wait_until(lambda: len(client.firing()) >= 2, 10.0, "alerts visible in Alertmanager")
    firing = client.firing("BinanceMemoryHigh")
    assert [alert["labels"]["instance"] for alert in firing] == ["blue"]
    assert client.firing("BinanceStreamDown", instance="blue") == []
    assert {alert["labels"]["alertname"] for alert in client.alerts()} >= {"BinanceMemoryHigh", "BinanceStreamDown"}


def test_unreachable_alertmanager_is_named_plainly() -> None:
    url = f"http://127.0.0.1:{allocate_port()}"
    with pytest.raises(AlertmanagerUnreachable, match=f"Alertmanager at {url} is unreachable"):
        AlertmanagerClient(url, timeout_seconds=2).firing()
    assert not AlertmanagerClient(url, timeout_seconds=2).ready()


def test_scrape_interval_comes_from_the_prometheus_config(history_prometheus: HistoryPrometheus) -> None:
    configured = history_prometheus.service.scrape_interval_s
    assert history_prometheus.client.scrape_interval() == configured
    assert history_prometheus.client.scrape_interval(job="no-such-job") == configured  # the global one
    with pytest.raises(PrometheusUnreachable):
        PrometheusClient(f"http://127.0.0.1:{allocate_port()}", timeout_seconds=2).scrape_interval()
