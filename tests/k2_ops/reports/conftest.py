"""A memory profile as the soak runner writes it, from /metrics text produced by prometheus_client."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from k2_ops.validation import criteria, memory_profile
from k2_ops.validation.profiles import get_profile
from k2_ops.validation.scrape import parse_metrics, raw_series
from k2_ops.validation.series import Window


def _exposition(second: int) -> str:
    registry = CollectorRegistry()
    Counter("binance_messages_received", "m", ["symbol"], registry=registry).labels("btcusdt").inc(100 * second + 7)
    Counter("binance_connection_rotations", "r", ["reason"], registry=registry).labels("scheduled").inc(second // 40)
    Counter("binance_pings_sent", "p", registry=registry).inc(2 * second)
    Counter("binance_sequence_gaps", "g", ["symbol"], registry=registry).labels("btcusdt").inc(0)
    Counter("kafka_produce_errors", "e", registry=registry).inc(0)
    Gauge("process_memory_rss_bytes", "rss", registry=registry).set(60e6 + 20_000 * second)
    Gauge("memory_leak_detection_score", "s", registry=registry).set(0.1)
    Gauge("process_start_time_seconds", "t", registry=registry).set(999.0)
    return generate_latest(registry).decode()


@pytest.fixture
def soak_profile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    profile = get_profile("ci")
    scrapes = [parse_metrics(_exposition(second), at=1_000.0 + second) for second in range(0, 243)]
    soak = criteria.soak_24h(profile)
    window = Window(1_000.0, 1_242.0, 1.0, counters_from_zero=True)
    series = criteria.select_series(raw_series(scrapes), soak.inputs(), window.start, window.end)
    checks = criteria.evaluate_series(soak, series, window)
    samples = [memory_profile.sample_record(scrape, 1_000.0) for scrape in scrapes]
    document = memory_profile.build_profile(
        {
            "profile": profile.to_dict(),
            "criteria": soak.name,
            "planned_duration_seconds": 240.0,
            "metrics_url": "http://127.0.0.1:0/metrics",
        },
        samples,
    )
    path = memory_profile.write_profile(document, tmp_path_factory.mktemp("soak") / "memory_profile.json")
    checks.append(memory_profile.check_profile_written(path))
    document["checks"] = [check.to_dict() for check in checks]
    return document
