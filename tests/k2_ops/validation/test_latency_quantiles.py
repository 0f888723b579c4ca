"""The latency a period reports (p50, p99 of each histogram), read from a real Prometheus holding a known
distribution: 90 % of acknowledgements within 5 ms, 9 % within 10 ms, 1 % between 0.5 and 1 s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k2_ops.reports.build import daily_report
from k2_ops.stack import PrometheusService
from k2_ops.validation.backfill import create_blocks
from k2_ops.validation.periods import PeriodResult, latency_quantiles
from k2_ops.validation.prometheus import PrometheusClient
from k2_ops.validation.series import Series
from k2_ops.validation.synthetic import history_days

pytestmark = pytest.mark.slow

PER_MINUTE = {"0.005": 900, "0.01": 990, "0.5": 990, "1.0": 1000, "+Inf": 1000}  # cumulative per bucket


def histogram_series(start: float, minutes: int, instance: str) -> list[Series]:
    series = []
    for name in ("binance_event_to_ack_seconds_bucket", "binance_receive_to_ack_seconds_bucket"):
        for le, per_minute in PER_MINUTE.items():
            labels = {"__name__": name, "job": "k2-streamer", "instance": instance, "stream": "trade", "le": le}
            series.append(Series(labels, [(start + 60 * m, float(per_minute * m)) for m in range(minutes + 1)]))
    return series


@pytest.fixture(scope="module")
def latency_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusClient, float]]:
    root: Path = tmp_path_factory.mktemp("latency-prometheus")
    start = history_days(1)
    service = PrometheusService(root, retention="3650d")
    create_blocks(histogram_series(start, 120, "s0-blue"), service.data_dir, root / "openmetrics")
    service.start()
    try:
        yield PrometheusClient(service.url), start
    finally:
        service.stop()


def test_a_period_reports_p50_and_p99_of_each_histogram(latency_prometheus: tuple[PrometheusClient, float]) -> None:
    client, start = latency_prometheus
    figures = latency_quantiles(client, start + 600, start + 6600, ["s0-blue", "s0-green"])
    for name in ("event_to_ack", "receive_to_ack"):
        # Prometheus interpolates inside a bucket: the median sits 5/9 into (0, 5 ms]; p99 at the 10 ms bound.
        assert figures[name]["p50"] == pytest.approx(0.005 * 0.5 / 0.9, rel=1e-3)
        assert figures[name]["p99"] == pytest.approx(0.01, rel=1e-3)

    report = daily_report(PeriodResult("daily", "active", start, start + 6600, 60.0, "production", [],
                                       latency=figures))
    [table] = [t for t in report.tables if t.title.startswith("Latency")]
    assert table.rows == [["exchange event -> Kafka ack", "2.78 ms", "10 ms"],
                          ["received here -> Kafka ack", "2.78 ms", "10 ms"]]


def test_a_period_without_acknowledgements_says_so(latency_prometheus: tuple[PrometheusClient, float]) -> None:
    client, start = latency_prometheus
    figures = latency_quantiles(client, start + 600, start + 6600, ["s1-blue"])  # another shard: no series
    assert figures == {"event_to_ack": {"p50": None, "p99": None}, "receive_to_ack": {"p50": None, "p99": None}}
