"""Soak runner: run (or attach to) a streamer for a duration, sample its /metrics, write the memory
profile, evaluate the 24 h soak or 12 h validation criteria, and report.

Spawned mode starts `python -m streamer` with the profile's intervals (`ValidationProfile.streamer_env`)
on top of the source/Kafka settings given in `streamer_env` (K2_BINANCE_WS_URL, K2_SSL_CA_FILE,
K2_KAFKA_BOOTSTRAP_SERVERS, K2_SCHEMA_REGISTRY_URL, ...), on a free loopback metrics port. Attached
mode samples a running streamer's /metrics URL and starts nothing.

The soak clock starts when the streamer is ready (/readyz 200; attached: first successful scrape) and
runs `duration + grace`: the grace (5 % of a rotation, at least 3 samples) lets the rotation due exactly
at the end happen before the last sample. The criteria are evaluated from the samples (no Prometheus
needed); with `prometheus_url` they are evaluated from Prometheus too (named `prometheus_<criterion>`),
and both must pass. Outputs in `out_dir`: memory_profile.json (schema in `memory_profile`),
soak_report.{md,html,json} with charts, streamer.log (spawned).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2_ops.stack.process import launch_on_port, terminate
from k2_ops.validation import criteria, memory_profile
from k2_ops.validation.checks import CheckResult
from k2_ops.validation.criteria import CriteriaSet
from k2_ops.validation.profiles import ValidationProfile
from k2_ops.validation.prometheus import PrometheusClient, PrometheusError
from k2_ops.validation.scrape import Scrape, ScrapeError, fetch_metrics, metrics_url, parse_metrics, raw_series
from k2_ops.validation.series import Window
from streamer.config import kafka_client_environment
from streamer.summary import summary_from_log

log = logging.getLogger(__name__)

# criteria option -> (criteria set name, its length in profile hours)
CRITERIA = {"24h": ("soak_24h", 24.0), "12h": ("validation_12h", 12.0)}
PROFILE_FILE = "memory_profile.json"
# A started soak streamer writes here, never into the production topics (K2_KAFKA_TOPIC_PREFIX).
SOAK_TOPIC_PREFIX = "market.crypto.binance.soak"


class SoakError(RuntimeError):
    """The soak could not run (bad setting, streamer never ready); the message says which and why."""


@dataclass(frozen=True)
class SoakConfig:
    profile: ValidationProfile
    out_dir: Path
    duration_seconds: float | None = None  # None: the criteria's 24 h / 12 h on the profile clock
    criteria: str = "24h"
    sample_interval_seconds: float | None = None  # None: profile.soak_sample_seconds
    grace_seconds: float | None = None
    streamer_env: Mapping[str, str] = field(default_factory=dict)
    attach_url: str | None = None
    instance: str = "soak"
    leak_bytes_per_second: float = 0.0
    ready_timeout_seconds: float = 120.0
    stop_timeout_seconds: float = 60.0
    prometheus_url: str | None = None
    prometheus_scrape_interval: float = 1.0
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.criteria not in CRITERIA:
            raise SoakError(f"criteria must be one of {sorted(CRITERIA)}, got {self.criteria!r}")
        for name in ("duration_seconds", "sample_interval_seconds", "grace_seconds"):
            value = getattr(self, name)
            lowest_ok = 0.0 if name == "grace_seconds" else math.ulp(0.0)
            if value is not None and (not math.isfinite(value) or value < lowest_ok):
                raise SoakError(f"SoakConfig.{name} must be a number of seconds > 0 (grace >= 0), got {value!r}")
        if self.leak_bytes_per_second < 0:
            raise SoakError(f"SoakConfig.leak_bytes_per_second must be >= 0, got {self.leak_bytes_per_second}")
        if self.attach_url and self.leak_bytes_per_second:
            raise SoakError("leak_bytes_per_second needs a spawned streamer; it cannot be set with attach_url")

    @property
    def criteria_set_name(self) -> str:
        return CRITERIA[self.criteria][0]

    @property
    def duration(self) -> float:
        return (
            self.duration_seconds
            if self.duration_seconds is not None
            else self.profile.hours(CRITERIA[self.criteria][1])
        )

    @property
    def interval(self) -> float:
        return self.sample_interval_seconds or self.profile.soak_sample_seconds

    @property
    def grace(self) -> float:
        if self.grace_seconds is not None:
            return self.grace_seconds
        return max(0.05 * self.profile.rotation_seconds, 3 * self.interval)

    def criteria_set(self) -> CriteriaSet:
        if self.criteria == "24h":
            return criteria.soak_24h(self.profile, duration_seconds=self.duration)
        return criteria.validation_12h(self.profile, duration_seconds=self.duration)


@dataclass
class SoakResult:
    profile_path: Path
    checks: list[CheckResult]
    passed: bool
    summary: dict[str, Any]
    report_files: dict[str, Path]
    exit_code: int | None
    out_dir: Path

    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, TimeoutError, OSError):
        return None


class StreamerProcess:
    """The spawned streamer: its own session (our signals reach only it), log file, stopped by its PID with
    SIGTERM (graceful flush) and SIGKILL after `timeout`."""

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = command
        # No K2_* setting of this process leaks into the soaked streamer, but for how to reach Kafka
        # (security protocol, SASL, TLS files, librdkafka pass-through), which it shares with every client.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
        self.env = {**inherited, **kafka_client_environment(os.environ), **env}
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # the log is appended to across starts: this start's part begins here

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._log_offset = log_file.tell()
            self._proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.log_path.parent,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self._proc.pid

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def exit_reason(self) -> str | None:
        code = self.exit_code()
        return None if code is None else f"exited with code {code}; last log lines:\n{self.log_tail()}"

    def stop(self, timeout: float) -> int | None:
        if self._proc is None:
            return None
        if terminate(self._proc, timeout):
            log.warning("streamer (pid %d) ignored SIGTERM for %.0f s; killed it", self._proc.pid, timeout)
        return self._proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines this start of the streamer wrote."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                text = log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class SoakRunner:
    """One soak run. `on_ready(host_port)` / `on_finished()` let a caller register the streamer with its
    Prometheus (e.g. `PrometheusService.add_scrape_target`) for the Prometheus-side evaluation."""

    def __init__(
        self,
        config: SoakConfig,
        progress: Callable[[str], None] = print,
        on_ready: Callable[[str], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.on_ready = on_ready
        self.on_finished = on_finished
        self.scrapes: list[Scrape] = []
        self.scrape_failures = 0
        self.process: StreamerProcess | None = None
        self.exit_code: int | None = None
        self.spawn_env: dict[str, str] = {}

    # --- streamer -----------------------------------------------------------------------------------

    def _spawn(self) -> str:
        config = self.config

        def launch(port: int) -> tuple[int, Callable[[], str | None]]:
            self.spawn_env = {
                **config.streamer_env,
                **config.profile.streamer_env(),
                "K2_INSTANCE": config.instance,
                "K2_METRICS_HOST": "127.0.0.1",
                "K2_METRICS_PORT": str(port),
            }
            if config.leak_bytes_per_second:
                self.spawn_env["K2_TEST_LEAK_BYTES_PER_SECOND"] = repr(float(config.leak_bytes_per_second))
            self.process = StreamerProcess(
                [config.python, "-P", "-m", "streamer"], self.spawn_env, config.out_dir / "streamer.log"
            )
            return self.process.start(), self.process.exit_reason

        port = launch_on_port("soak streamer", launch, timeout_s=config.ready_timeout_seconds)
        assert self.process is not None
        base = f"http://127.0.0.1:{port}"
        self.progress(
            f"soak: started streamer (pid {self.process.pid}) metrics {base}/metrics, log {self.process.log_path}"
        )
        deadline = time.monotonic() + config.ready_timeout_seconds
        while _http_status(f"{base}/readyz") != 200:
            if self.process.exit_code() is not None:
                raise SoakError(
                    f"streamer failed to start (exit code {self.process.exit_code()}); last log lines:\n"
                    f"{self.process.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = self.process.log_tail()
                self.process.stop(config.stop_timeout_seconds)
                raise SoakError(
                    f"streamer not ready within {config.ready_timeout_seconds:g} s on {base}/readyz; "
                    f"last log lines:\n{tail}"
                )
            time.sleep(0.1)
        return base

    def _streamer_gone(self) -> bool:
        return self.process is not None and self.process.exit_code() is not None

    # --- sampling -----------------------------------------------------------------------------------

    def _scrape(self, url: str) -> Scrape | None:
        try:
            scrape = parse_metrics(
                fetch_metrics(url, timeout_seconds=max(1.0, min(5.0, self.config.interval * 4))), time.time()
            )
        except ScrapeError as error:
            self.scrape_failures += 1
            log.warning("soak: %s", error)
            return None
        self.scrapes.append(scrape)
        return scrape

    def _progress_line(self, started: float, total: float) -> str:
        elapsed = time.time() - started
        last = self.scrapes[-1] if self.scrapes else None
        rss = last.total("process_memory_rss_bytes") if last else None
        rate = None
        if last is not None and len(self.scrapes) >= 2:
            earlier = self.scrapes[max(0, len(self.scrapes) - 11)]
            before = earlier.total("binance_messages_received_total")
            after = last.total("binance_messages_received_total")
            if before is not None and after is not None and last.time > earlier.time:
                rate = max(0.0, after - before) / (last.time - earlier.time)

        def number(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        return (
            f"soak {min(100.0, 100 * elapsed / total):5.1f}%  elapsed {elapsed:,.0f} s / {total:,.0f} s  "
            f"ETA {max(0.0, total - elapsed):,.0f} s  RSS {number(rss / 1e6 if rss else None, '.1f')} MB  "
            f"rate {number(rate, '.1f')} msg/s  rotations "
            f"{number(last.total('binance_connection_rotations_total') if last else None, '.0f')}  "
            f"pings {number(last.total('binance_pings_sent_total') if last else None, '.0f')}  "
            f"reconnects {number(last.total('binance_reconnects_total') if last else None, '.0f')}"
        )

    def _sample_until(self, url: str, started: float, end: float) -> None:
        interval = self.config.interval
        total = end - started
        progress_every = min(max(interval, total / 50), 600.0)
        next_progress = started
        next_sample = started
        while True:
            now = time.time()
            if now >= next_sample:
                self._scrape(url)
                next_sample += interval
                if next_sample < now:  # fell behind (slow scrape): skip, do not burst
                    next_sample = now + interval
            if now >= next_progress:
                self.progress(self._progress_line(started, total))
                next_progress += progress_every
            if self.process is not None and self._streamer_gone():
                self.exit_code = self.process.exit_code()
                self.progress(
                    f"soak: streamer exited early with code {self.exit_code}; last log lines:\n"
                    f"{self.process.log_tail()}"
                )
                return
            if now >= end:
                return
            time.sleep(max(0.0, min(next_sample, end) - time.time()))

    # --- run ----------------------------------------------------------------------------------------

    def run(self) -> SoakResult:
        config = self.config
        config.out_dir.mkdir(parents=True, exist_ok=True)
        spawned = config.attach_url is None
        criteria_set = config.criteria_set()
        self.progress(
            f"soak: {criteria_set.title} on profile {config.profile.name}: {config.duration:g} s "
            f"+ {config.grace:g} s grace, sampling every {config.interval:g} s, output {config.out_dir}"
        )
        try:
            attach_url = config.attach_url
            base = self._spawn() if attach_url is None else attach_url.rstrip("/").removesuffix("/metrics")
            url = metrics_url(base)
            if not spawned and self._scrape(url) is None:
                raise SoakError(f"cannot scrape the streamer to attach to at {url}")
            if self.on_ready is not None:
                self.on_ready(base.removeprefix("http://").removeprefix("https://"))
            started = self.scrapes[0].time if self.scrapes else time.time()
            end = started + config.duration + config.grace
            self._sample_until(url, started, end)
            if not self._streamer_gone():
                self._scrape(url)
            self.progress(self._progress_line(started, end - started))
        finally:
            if self.on_finished is not None:
                self.on_finished()
            if self.process is not None:
                code = self.process.stop(config.stop_timeout_seconds)
                self.exit_code = code if self.exit_code is None else self.exit_code
        return self._finish(criteria_set, started, end, spawned, base)

    def _finish(
        self, criteria_set: CriteriaSet, started: float, end: float, spawned: bool, base: str
    ) -> SoakResult:
        config = self.config
        samples = [memory_profile.sample_record(scrape, started) for scrape in self.scrapes]
        shutdown_summary = summary_from_log(self.process.log_text()) if self.process is not None else None
        metadata = {
            "profile": config.profile.to_dict(),
            "criteria": criteria_set.name,
            "instance": config.instance,
            "metrics_url": metrics_url(base),
            "mode": "spawned" if spawned else "attached",
            "planned_duration_seconds": config.duration,
            "grace_seconds": config.grace,
            "sample_interval_seconds": config.interval,
            "started_at": started,
            "ended_at": time.time(),
            "streamer_env": self.spawn_env,
            "leak_bytes_per_second": config.leak_bytes_per_second,
            "exit_code": self.exit_code,
            "shutdown_summary": shutdown_summary,
            "scrape_failures": self.scrape_failures,
        }
        profile = memory_profile.build_profile(metadata, samples, counters_from_zero=spawned)
        path = memory_profile.write_profile(profile, config.out_dir / PROFILE_FILE)
        window = Window(started, max(end, started + config.interval), config.interval, counters_from_zero=spawned)
        series = criteria.select_series(raw_series(self.scrapes), criteria_set.inputs(), window.start, window.end)
        checks = criteria.evaluate_series(criteria_set, series, window)
        if criteria_set.name == "soak_24h":
            checks.append(memory_profile.check_profile_written(path))
        if spawned:
            checks.append(memory_profile.check_shutdown_delivery(shutdown_summary))
        if self.exit_code not in (None, 0):
            checks.append(
                CheckResult(
                    "streamer_exit",
                    False,
                    float(self.exit_code),
                    0,
                    "",
                    f"the streamer exited with code {self.exit_code}",
                    "==",
                    kind="zero-events",
                )
            )
        if config.prometheus_url:
            checks += self._prometheus_checks(criteria_set, started, window.end)
        profile["checks"] = [check.to_dict() for check in checks]
        memory_profile.write_profile(profile, path)
        from k2_ops.reports import write_period_report  # reports import validation: import here, not at top

        files = write_period_report("soak", profile, config.out_dir)
        passed = all(check.passed for check in checks)
        for check in checks:
            self.progress(
                f"  {'PASS' if check.passed else 'FAIL'} {check.name}: observed {check.observed_text()} "
                f"(threshold {check.threshold_text()}) — {check.evidence}"
            )
        self.progress(f"soak: {'PASSED' if passed else 'FAILED'}; profile {path}; report {files['html']}")
        return SoakResult(path, checks, passed, profile["summary"], files, self.exit_code, config.out_dir)

    def _prometheus_checks(self, criteria_set: CriteriaSet, start: float, end: float) -> list[CheckResult]:
        client = PrometheusClient(self.config.prometheus_url or "")
        try:
            results = criteria.evaluate(
                criteria_set,
                client,
                start,
                end,
                instance=self.config.instance,
                scrape_interval=self.config.prometheus_scrape_interval,
            )
        except PrometheusError as error:
            return [CheckResult("prometheus_evaluation", False, None, 0, "", str(error), "==", kind="artifact")]
        return [dataclasses.replace(result, name=f"prometheus_{result.name}") for result in results]


def run_soak(
    profile: ValidationProfile,
    duration_seconds: float | None,
    out_dir: Path,
    *,
    criteria: str = "24h",
    sample_interval_seconds: float | None = None,
    streamer_env: Mapping[str, str] | None = None,
    attach_url: str | None = None,
    progress: Callable[[str], None] = print,
    **options: Any,
) -> SoakResult:
    """One call for the Dagster `soak_test` job and the CLI; `options` are further SoakConfig fields."""
    config = SoakConfig(
        profile=profile,
        out_dir=Path(out_dir),
        duration_seconds=duration_seconds,
        criteria=criteria,
        sample_interval_seconds=sample_interval_seconds,
        streamer_env=dict(streamer_env or {}),
        attach_url=attach_url,
        **options,
    )
    return SoakRunner(config, progress).run()


__all__ = ["CRITERIA", "SoakConfig", "SoakError", "SoakResult", "SoakRunner", "run_soak"]
