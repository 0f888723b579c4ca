"""Leak score on synthetic RSS series, the monitor's warm-up / tracemalloc logic, and the test-only leak."""

from __future__ import annotations

import asyncio
import logging
import random
import tracemalloc

import pytest

from streamer.memory import MB, MemoryMonitor, leak_score, theil_sen


def series(
    mb_per_hour: float,
    noise_mb: float = 0.0,
    hours: float = 1.0,
    n: int = 120,
    base_mb: float = 200.0,
    seed: int = 1,
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    points = []
    for i in range(n):
        t = i * hours * 3600 / (n - 1)
        mb = base_mb + mb_per_hour * t / 3600 + rng.gauss(0, noise_mb)
        points.append((t, mb * MB))
    return points


def test_theil_sen_recovers_a_line_despite_outliers() -> None:
    points = [(float(t), 3.0 * t + 7.0) for t in range(50)]
    points[10] = (10.0, 10_000.0)
    points[30] = (30.0, -5_000.0)
    slope, intercept = theil_sen(points)
    assert slope == pytest.approx(3.0) and intercept == pytest.approx(7.0)


def test_flat_memory_scores_near_zero() -> None:
    assert leak_score(series(0.0, noise_mb=0.5)).score < 0.05
    assert leak_score(series(0.0)).score == 0.0


def test_shrinking_memory_scores_zero() -> None:
    assert leak_score(series(-20.0, noise_mb=0.1)).score == 0.0


def test_ten_mb_per_hour_scores_about_half() -> None:
    estimate = leak_score(series(10.0, noise_mb=0.1))
    assert estimate.slope_mb_per_hour == pytest.approx(10.0, rel=0.05)
    assert 0.4 <= estimate.score <= 0.55


def test_fifty_mb_per_hour_scores_near_one() -> None:
    assert leak_score(series(50.0, noise_mb=0.2)).score > 0.95


def test_score_rises_with_the_slope() -> None:
    scores = [leak_score(series(rate, noise_mb=0.1)).score for rate in (1, 2, 5, 10, 20, 50, 100)]
    assert scores == sorted(scores)
    assert scores[0] < 0.01 and scores[-1] > 0.98


def test_noisy_fit_scores_low_even_with_a_slope() -> None:
    """A 10 MB/h trend buried in 40 MB of noise over one hour is not evidence of a leak."""
    estimate = leak_score(series(10.0, noise_mb=40.0))
    assert estimate.fit < 0.3 and estimate.score < 0.15


def test_outliers_do_not_hide_a_leak() -> None:
    points = series(50.0, noise_mb=0.2)
    for i in (5, 40, 90):
        points[i] = (points[i][0], points[i][1] + 300 * MB)  # GC pauses, bursts
    assert leak_score(points).score > 0.9


def test_too_few_samples_score_zero() -> None:
    assert leak_score(series(50.0, n=7)).score == 0.0


def test_monitor_ignores_warm_up_and_slides_its_window() -> None:
    now = [0.0]
    rss = [100 * MB]
    monitor = MemoryMonitor(10.0, window_s=600.0, warmup_s=300.0, read_rss=lambda: rss[0], clock=lambda: now[0])
    for _ in range(30):  # 300 s of fast warm-up growth (imports, buffers): ignored
        monitor.sample()
        now[0] += 10.0
        rss[0] += 5 * MB
    assert not monitor.samples and monitor.estimate.score == 0.0
    for _ in range(120):  # then flat for 1200 s
        monitor.sample()
        now[0] += 10.0
    assert monitor.estimate.score < 0.05
    assert monitor.samples[0][0] >= now[0] - 600.0 - 10.0  # only the window is kept


def test_monitor_starts_tracemalloc_and_reports_allocators(caplog: pytest.LogCaptureFixture) -> None:
    assert not tracemalloc.is_tracing()
    now = [0.0]
    rss = [100 * MB]
    monitor = MemoryMonitor(30.0, window_s=3600.0, warmup_s=0.0, read_rss=lambda: rss[0], clock=lambda: now[0])
    kept = []
    caplog.set_level(logging.WARNING, logger="streamer.memory")
    try:
        for _ in range(60):  # 100 MB/h for 30 min
            monitor.sample()
            kept.append(bytearray(10_000))
            now[0] += 30.0
            rss[0] += 100 * MB * 30 / 3600
        assert monitor.estimate.score > 0.8
        assert tracemalloc.is_tracing()
        assert monitor.top_allocators  # a snapshot diff was taken and logged
        assert any("top allocators" in r.getMessage() for r in caplog.records)
        assert any("tracemalloc started" in r.getMessage() for r in caplog.records)
    finally:
        tracemalloc.stop()


def test_test_leak_retains_memory_at_the_configured_rate() -> None:
    """The leak retains `rate` bytes per second of its own clock. A sampler in the same event loop notes when it
    first saw a chunk (F, after the leak's clock started) and the last time it saw the total still short of
    its final value (G-, before the last chunk); so the final total lies in [rate x (G- - F), rate x (end - start)]
    however late a busy machine runs either task. That the chunks are resident RSS in a real process is asserted
    with the streamer itself (tests/streamer/test_process.py, the leak test: RSS trend > 1000 MB/h), not with
    the RSS of this pytest process, which memory freed by earlier tests can absorb."""
    rate = 40 * 2**20  # bytes per second

    async def leak_until(target_bytes: int) -> tuple[MemoryMonitor, float, float, float, float]:
        monitor = MemoryMonitor(1.0, 60.0, 0.0, leak_bytes_per_s=rate)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        started = loop.time()
        task = asyncio.create_task(monitor.run_test_leak())
        first_seen: float | None = None
        short_seen = started
        try:
            while (total := sum(len(b) for b in monitor._retained)) < target_bytes:
                assert loop.time() < deadline, f"only {total} bytes retained after 60 s"
                now = loop.time()
                short_seen = now
                await asyncio.sleep(0.01)
                if first_seen is None and monitor._retained:
                    first_seen = loop.time()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert first_seen is not None
        return monitor, started, first_seen, short_seen, loop.time()

    monitor, started, first_seen, short_seen, ended = asyncio.run(leak_until(rate))
    retained = sum(len(b) for b in monitor._retained)
    print(f"retained {retained / 2**20:.1f} MiB; bounds {rate * (short_seen - first_seen) / 2**20:.1f} .. "
          f"{rate * (ended - started) / 2**20:.1f} MiB")
    assert rate * (short_seen - first_seen) - 1 <= retained <= rate * (ended - started)
    assert all(chunk.count(0x5A) == len(chunk) for chunk in monitor._retained)  # written, not reserved


def test_a_single_step_is_not_a_leak() -> None:
    """One more allocator arena (a step) in a short window extrapolates to a steep slope: steady says no."""
    points = [(float(t), (62.2 if t < 30 else 62.5) * MB) for t in range(0, 60)]
    estimate = leak_score(points)
    assert estimate.slope_mb_per_hour > 10  # steep when extrapolated to an hour...
    assert estimate.steady <= 0.25 and estimate.score < 0.3  # ...but not steady growth


def test_a_staircase_leak_is_still_a_leak() -> None:
    """A real leak shows as arena-sized steps too, but in every part of the window."""
    points = [(float(t), (200 + (t // 360) * 1.0) * MB) for t in range(0, 3600, 30)]  # 1 MB every 6 min
    estimate = leak_score(points)
    assert estimate.steady == 1.0
    assert 0.4 <= estimate.score <= 0.6


def test_reference_slope_scales_with_a_compressed_clock() -> None:
    """On a clock 360x faster, 3600 MB/h plays the part of 10 MB/h."""
    fast = [(t / 360, y) for t, y in series(10.0, noise_mb=0.1)]  # 10 MB in 10 s: 3600 MB/h
    assert 0.4 <= leak_score(fast, reference_mb_per_hour=3600).score <= 0.55
    assert leak_score(fast).score > 0.99  # unscaled, the same series looks like a violent leak
