"""/metrics parsing (prometheus_client's own exposition) and the memory profile document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from k2_ops.validation import criteria, memory_profile
from k2_ops.validation.profiles import PRODUCTION
from k2_ops.validation.scrape import Scrape, ScrapeError, metrics_url, parse_metrics, raw_series
from k2_ops.validation.series import Window


def exposition(messages: int, rotations: int, rss: float, reconnect_reason: str | None = None) -> str:
    """What a streamer exports, produced by prometheus_client itself (counters get `_total`)."""
    registry = CollectorRegistry()
    received = Counter("binance_messages_received", "m", ["instance", "symbol", "stream"], registry=registry)
    received.labels("soak", "btcusdt", "trade").inc(messages)
    received.labels("soak", "ethusdt", "trade").inc(messages)
    rotated = Counter("binance_connection_rotations", "r", ["instance", "reason"], registry=registry)
    rotated.labels("soak", "scheduled").inc(rotations)
    Counter("binance_pings_sent", "p", ["instance"], registry=registry).labels("soak").inc(2 * rotations)
    if reconnect_reason:
        Counter("binance_reconnects", "c", ["instance", "reason"], registry=registry).labels(
            "soak", reconnect_reason
        ).inc()
    Gauge("process_memory_rss_bytes", "rss", ["instance"], registry=registry).labels("soak").set(rss)
    Gauge("process_start_time_seconds", "start", registry=registry).set(1_000.0)
    return generate_latest(registry).decode()


def test_parse_metrics_reads_counters_gauges_and_skips_created() -> None:
    scrape = parse_metrics(exposition(10, 2, 60e6), at=5.0)
    assert scrape.time == 5.0
    assert scrape.total("binance_messages_received_total") == 20
    assert scrape.total("binance_messages_received_total", symbol="btcusdt") == 10
    assert scrape.total("binance_connection_rotations_total", reason="scheduled") == 2
    assert scrape.maximum("process_memory_rss_bytes") == 60e6
    assert scrape.total("binance_reconnects_total") is None
    assert not any(name.endswith("_created") for name, _, _ in scrape.samples)


def test_unparsable_text_and_urls() -> None:
    with pytest.raises(ScrapeError):
        parse_metrics("this is { not metrics", at=0.0)
    assert metrics_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/metrics"
    assert metrics_url("http://127.0.0.1:8000/metrics") == "http://127.0.0.1:8000/metrics"


def soak_scrapes() -> list[Scrape]:
    scrapes = []
    for second in range(0, 101):
        reason = "health_timeout" if second >= 50 else None  # the labelled child appears at its first event
        scrapes.append(
            parse_metrics(exposition(10 * second + 5, second // 40, 60e6 + second * 1e5, reason), at=1_000.0 + second)
        )
    return scrapes


def test_scrapes_feed_the_same_criteria_as_prometheus() -> None:
    scrapes = soak_scrapes()
    soak = criteria.soak_24h(PRODUCTION, duration_seconds=100.0)
    window = Window(1_000.0, 1_100.0, 1.0, counters_from_zero=True)
    series = criteria.select_series(raw_series(scrapes), soak.inputs(), window.start, window.end)
    results = {r.name: r for r in criteria.evaluate_series(soak, series, window)}
    assert results["message_rate"].observed == pytest.approx(2 * 1005 / 100)  # both symbols, from zero
    assert results["connection_drops"].observed == 1 and "health_timeout: 1" in results["connection_drops"].evidence
    # 0.1 MB/s over 100 s, measured after the warm-up (capped at a quarter of the window), edge medians.
    assert results["memory_growth"].observed == pytest.approx(10.0 * 0.72, abs=0.3)
    assert results["runs_full_duration"].passed


def test_memory_profile_summary_schema_and_written_check(tmp_path: Path) -> None:
    scrapes = soak_scrapes()
    samples = [memory_profile.sample_record(scrape, 1_000.0) for scrape in scrapes]
    assert set(samples[0]) == set(memory_profile.SAMPLE_KEYS)
    profile = memory_profile.build_profile({"criteria": "soak_24h"}, samples)
    summary = profile["summary"]
    assert summary["samples"] == 101
    assert summary["messages"] == 2 * 1005
    assert summary["rotations"] == 2 and summary["pings"] == 4
    assert summary["reconnects"] == 1
    assert summary["rss_growth_mb"] == pytest.approx(10.0)
    assert summary["restarts"] == 0
    path = memory_profile.write_profile(profile, tmp_path / "memory_profile.json")
    assert memory_profile.profile_problems(json.loads(path.read_text())) == []
    written = memory_profile.check_profile_written(path)
    assert written.passed and "101 samples" in written.evidence


def test_memory_profile_written_check_fails_on_missing_or_broken_files(tmp_path: Path) -> None:
    assert not memory_profile.check_profile_written(tmp_path / "absent.json").passed
    (tmp_path / "broken.json").write_text("{")
    assert not memory_profile.check_profile_written(tmp_path / "broken.json").passed
    (tmp_path / "empty.json").write_text(
        json.dumps({"schema_version": 1, "metadata": {}, "summary": {}, "samples": []})
    )
    result = memory_profile.check_profile_written(tmp_path / "empty.json")
    assert not result.passed and "no samples" in result.evidence


def _shutdown(**changes: int) -> dict[str, int]:
    return {"received": 24266, "produced": 24266, "delivered": 24266, "unacknowledged": 0, "produce_errors": 0,
            **changes}


def test_kafka_delivery_passes_only_when_kafka_acknowledged_every_accepted_message() -> None:
    passed = memory_profile.check_shutdown_delivery(_shutdown())
    assert passed.passed and passed.observed == 0
    assert "24266 accepted, 24266 acknowledged" in passed.evidence
    short = memory_profile.check_shutdown_delivery(_shutdown(delivered=24264, unacknowledged=2))
    assert not short.passed and short.observed == 2 and "2 unacknowledged" in short.evidence
    errors = memory_profile.check_shutdown_delivery(_shutdown(produce_errors=1))
    assert not errors.passed


def test_kafka_delivery_fails_without_a_shutdown_summary() -> None:
    result = memory_profile.check_shutdown_delivery(None)
    assert not result.passed and "no shutdown summary" in result.evidence
