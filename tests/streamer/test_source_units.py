"""Pure parts of dialing and the heartbeat: backoff, TLS context, attempt budget, client frame budget; and the
error-log counter."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time

import pytest
from prometheus_client import generate_latest

from streamer.connect import AttemptBudget, backoff_delay, make_ssl_context
from streamer.heartbeat import FrameBudget
from streamer.integrity import SequenceTracker
from streamer.metrics import ErrorCountingHandler, StreamerMetrics


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    assert backoff_delay(0, 1.0, 60.0, rng) == 0.0  # the first retry is immediate
    for attempt in range(1, 40):
        bound = min(60.0, 1.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > 0.8 * bound  # full jitter spreads over the whole range
        assert min(delays) < 0.2 * bound


def test_the_attempt_budget_waits_until_the_oldest_attempt_leaves_the_window() -> None:
    budget = AttemptBudget(max_attempts=3, window_s=300.0)
    for now in (0.0, 10.0, 20.0):
        assert budget.wait(now) == 0.0
        budget.record(now)
    assert budget.wait(30.0) == 270.0  # the 4th attempt in 300 s must wait for the one at 0 to age out
    assert budget.wait(300.5) == 0.0  # it has
    budget.record(300.5)
    assert budget.wait(301.0) == 9.0  # now the one at 10 is the oldest of three


def test_the_frame_budget_counts_what_it_lets_through() -> None:
    budget = FrameBudget(per_second=2, window_s=1.1)
    assert budget.wait(0.0) == 0.0 and budget.wait(0.5) == 0.0
    assert budget.wait(0.6) == pytest.approx(0.5)  # a third frame waits until the first leaves the 1.1 s window
    assert budget.wait(1.1) == 0.0  # it has left: this one is let through (and counted)
    assert budget.wait(1.2) == pytest.approx(0.4)


def test_ssl_context_verifies_by_default() -> None:
    context = make_ssl_context(True, None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_ssl_context_can_add_a_ca(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import trustme

    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    before = make_ssl_context(True, None).cert_store_stats()["x509_ca"]
    context = make_ssl_context(True, str(path))
    assert context.cert_store_stats()["x509_ca"] == before + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_ssl_context_without_verification_is_explicit() -> None:
    context = make_ssl_context(False, None)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_frame_budget_never_exceeds_its_rate() -> None:
    async def send(n: int) -> list[float]:
        budget = FrameBudget(per_second=4)
        times = []
        for _ in range(n):
            await budget.acquire()
            times.append(time.monotonic())
        return times

    times = asyncio.run(send(10))
    for i in range(len(times) - 4):
        assert times[i + 4] - times[i] >= 0.999  # any 5 consecutive frames span at least a second


def test_error_logs_are_counted_by_level() -> None:
    metrics = StreamerMetrics("green", SequenceTracker())
    logger = logging.getLogger("test.streamer.errors")
    handler = ErrorCountingHandler(metrics)
    logger.addHandler(handler)
    try:
        logger.warning("not counted")
        logger.error("one")
        logger.error("two")
        logger.critical("three")
    finally:
        logger.removeHandler(handler)
    text = generate_latest(metrics.registry).decode()
    assert 'streamer_log_errors_total{instance="green",level="error"} 2.0' in text
    assert 'streamer_log_errors_total{instance="green",level="critical"} 1.0' in text
