"""Memory monitor: RSS sampling, a robust leak score, tracemalloc on suspicion.

Every K2_MEMORY_SAMPLE_INTERVAL_SECONDS the monitor samples the RSS (psutil) into `process_memory_rss_bytes`
and recomputes `memory_leak_detection_score` from the samples of the last K2_MEMORY_WINDOW_SECONDS, ignoring
those of the first K2_MEMORY_WARMUP_SECONDS after start (imports, caches and buffers filling up are growth
that is not a leak).

The score (function `leak_score`):

    slope  = Theil-Sen estimate of the RSS trend: the median of the pairwise slopes (y_j - y_i) / (t_j - t_i),
             in MB/h (MB = 2^20 bytes). Robust: a few outliers (a GC pause, a burst) do not move it.
    trend  = 0                                 if slope <= 0
           = 1 / (1 + (R / slope) ** 2.5)      otherwise (log-logistic: 0.5 at R, 0.98 at 5 R, 0.018 at R/5)
             with R = K2_LEAK_REFERENCE_MB_PER_HOUR, 10 MB/h by default. On a compressed clock (a "day" of
             N seconds) scale R by 86400 / N, as every interval is scaled: seconds-long windows otherwise turn
             ordinary start-up settling (a few hundred KB) into "hundreds of MB/h".
    sigma  = 1.4826 * MAD(residuals of the Theil-Sen line)   (robust noise, as a standard deviation)
    rise   = |slope| * (window span), in the same units
    fit    = rise^2 / (rise^2 + (2 * sigma)^2)  (1 for a clean line; 0.5 when the rise is only 2 sigma)
    steady = share of the window's 4 quarters that each grew by at least 25 % of the line's rise over a
             quarter (a quarter's growth: median of its last 3 samples minus median of its first 3). A leak
             grows all the time (1.0); a one-off step, e.g. the allocator taking one more arena, grows in
             one quarter only (0.25), however steep it looks when extrapolated to an hour.
    score  = trend * fit * steady, in [0, 1]; 0 with fewer than 8 samples after warm-up.

So (with R = 10) steady growth of 10 MB/h scores about 0.5, 50 MB/h about 1; noise, or one step, scores low.

tracemalloc (which slows allocation down) is started when the score first passes 0.5, or at start with
K2_TRACEMALLOC=1; a baseline snapshot is taken then. While the score is above 0.8 the top allocators since
the baseline are logged every 10 samples (first 10 samples after the baseline) and kept for
GET /debug/allocations.

K2_TEST_LEAK_BYTES_PER_SECOND (test only) retains memory at that steady rate, written so it counts in RSS.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from streamer.metrics import StreamerMetrics

log = logging.getLogger(__name__)

MB = float(1 << 20)
MIDPOINT_MB_PER_HOUR = 10.0  # trend = 0.5 here
STEEPNESS = 2.5  # exponent of the log-logistic: 50 MB/h -> 0.98
MIN_SAMPLES = 8
QUARTERS = 4
QUARTER_SHARE = 0.25  # a quarter "grew" if it holds at least this share of the line's rise per quarter
MAX_FIT_POINTS = 120  # Theil-Sen is O(n^2): thin the window to at most this many points
START_TRACEMALLOC_AT = 0.5
REPORT_ALLOCATORS_AT = 0.8


@dataclass(frozen=True)
class LeakEstimate:
    score: float
    slope_mb_per_hour: float
    fit: float
    samples: int
    steady: float = 0.0


def _thin(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(k * step)] for k in range(limit)]


def theil_sen(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line through (t, y) points."""
    slopes = [
        (y2 - y1) / (t2 - t1)
        for i, (t1, y1) in enumerate(points)
        for t2, y2 in points[i + 1 :]
        if t2 != t1
    ]
    if not slopes:
        return 0.0, statistics.median(y for _, y in points)
    slope = statistics.median(slopes)
    intercept = statistics.median(y - slope * t for t, y in points)
    return slope, intercept


def leak_score(
    points: Sequence[tuple[float, float]], reference_mb_per_hour: float = MIDPOINT_MB_PER_HOUR
) -> LeakEstimate:
    """Score RSS samples (seconds, bytes) already restricted to the window after warm-up (see module doc)."""
    if len(points) < MIN_SAMPLES:
        return LeakEstimate(0.0, 0.0, 0.0, len(points))
    fit_points = [(t, y / MB) for t, y in _thin(points, MAX_FIT_POINTS)]
    slope_per_s, intercept = theil_sen(fit_points)
    slope = slope_per_s * 3600.0  # MB/h
    residuals = [y - (intercept + slope_per_s * t) for t, y in fit_points]
    center = statistics.median(residuals)
    sigma = 1.4826 * statistics.median(abs(r - center) for r in residuals)
    rise = abs(slope_per_s) * (fit_points[-1][0] - fit_points[0][0])
    fit = 1.0 if rise == 0 and sigma == 0 else rise * rise / (rise * rise + (2.0 * sigma) ** 2)
    trend = 0.0 if slope <= 0 else 1.0 / (1.0 + (reference_mb_per_hour / slope) ** STEEPNESS)
    steady = _steadiness(fit_points, slope_per_s)
    score = min(1.0, max(0.0, trend * fit * steady))
    return LeakEstimate(score, slope, fit, len(points), steady)


def _steadiness(points: Sequence[tuple[float, float]], slope_per_s: float) -> float:
    """Share of the window's quarters that each carry their part of the growth (see module doc)."""
    if slope_per_s <= 0:
        return 0.0
    start, span = points[0][0], points[-1][0] - points[0][0]
    if span <= 0:
        return 0.0
    expected = slope_per_s * span / QUARTERS
    grew = 0
    for q in range(QUARTERS):
        low, high = start + span * q / QUARTERS, start + span * (q + 1) / QUARTERS
        quarter = [y for t, y in points if low <= t <= high]
        if len(quarter) < 2:
            continue
        edge = min(3, len(quarter) // 2) or 1
        growth = statistics.median(quarter[-edge:]) - statistics.median(quarter[:edge])
        if growth >= QUARTER_SHARE * expected:
            grew += 1
    return grew / QUARTERS


class MemoryMonitor:
    def __init__(
        self,
        sample_interval_s: float,
        window_s: float,
        warmup_s: float,
        metrics: StreamerMetrics | None = None,
        start_tracemalloc: bool = False,
        leak_bytes_per_s: float = 0.0,
        read_rss: Callable[[], float] | None = None,
        reference_mb_per_hour: float = MIDPOINT_MB_PER_HOUR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sample_interval_s = sample_interval_s
        self.window_s = window_s
        self.warmup_s = warmup_s
        self.metrics = metrics
        self.leak_bytes_per_s = leak_bytes_per_s
        self.clock = clock
        self.reference_mb_per_hour = reference_mb_per_hour
        self.started = clock()
        self.samples: deque[tuple[float, float]] = deque()
        self.estimate = LeakEstimate(0.0, 0.0, 0.0, 0)
        self.top_allocators: list[str] = []
        self._baseline: tracemalloc.Snapshot | None = None
        self._samples_since_report = 10**9
        self._retained: list[bytes] = []  # the test-only leak
        process = psutil.Process()
        self.read_rss = read_rss or (lambda: float(process.memory_info().rss))
        if start_tracemalloc:
            self._start_tracemalloc("K2_TRACEMALLOC=1")

    def _start_tracemalloc(self, why: str) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(10)
            log.warning("tracemalloc started (%s); allocation tracking slows the process down", why)
        self._baseline = tracemalloc.take_snapshot()
        self._samples_since_report = 0  # the first diff is worth logging once allocations have accumulated

    def sample(self) -> LeakEstimate:
        now = self.clock()
        rss = self.read_rss()
        if self.metrics is not None:
            self.metrics.g(self.metrics.rss).set(rss)
        # RSS climbs while imports, caches and Kafka buffers settle after start: samples from the warm-up
        # would read as a leak, so the trend only sees what comes after it.
        if now - self.started >= self.warmup_s:
            self.samples.append((now - self.started, rss))
        # A sliding window: the score describes recent growth, and a leak that stopped ages out of it.
        while self.samples and self.samples[0][0] < now - self.started - self.window_s:
            self.samples.popleft()
        self.estimate = leak_score(self.samples, self.reference_mb_per_hour)
        if self.metrics is not None:
            self.metrics.g(self.metrics.leak_score).set(self.estimate.score)
            self.metrics.g(self.metrics.leak_slope).set(self.estimate.slope_mb_per_hour)
        # tracemalloc costs CPU and memory on every allocation, so it starts only once a leak looks likely
        # (score > 0.5); its first snapshot is the baseline the allocator report diffs against.
        if self.estimate.score > START_TRACEMALLOC_AT and self._baseline is None:
            self._start_tracemalloc(f"leak score {self.estimate.score:.2f} > {START_TRACEMALLOC_AT}")
        # Above 0.8 log the top allocators, at most every 10 samples so a real leak does not flood the log.
        self._samples_since_report += 1
        if self.estimate.score > REPORT_ALLOCATORS_AT and self._samples_since_report >= 10:
            self._samples_since_report = 0
            self.report_allocators()
        return self.estimate

    def report_allocators(self, limit: int = 10) -> list[str]:
        if self._baseline is None:
            return []
        snapshot = tracemalloc.take_snapshot()
        diff = snapshot.compare_to(self._baseline, "lineno")
        self.top_allocators = [str(stat) for stat in diff[:limit]]
        log.warning(
            "memory leak suspected (score %.2f, %.1f MB/h); top allocators since tracemalloc started:\n  %s",
            self.estimate.score,
            self.estimate.slope_mb_per_hour,
            "\n  ".join(self.top_allocators) or "(none)",
        )
        return self.top_allocators

    async def run(self) -> None:
        while True:
            # One RSS sample per interval; a failed sample (e.g. psutil cannot read /proc) is logged and the
            # loop goes on: memory monitoring must never stop the streamer.
            try:
                self.sample()
            except Exception:
                log.exception("memory sampling failed; retrying next interval")
            await asyncio.sleep(self.sample_interval_s)

    async def run_test_leak(self) -> None:
        """Retain leak_bytes_per_s, in small steps, written (not just reserved) so RSS really grows."""
        carry = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            carry += self.leak_bytes_per_s * (now - last)
            last = now
            size = int(carry)
            if size > 0:
                carry -= size
                self._retained.append(b"\x5a" * size)
