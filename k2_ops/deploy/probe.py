"""Readiness polling on `/readyz` with a deadline, and samples of a streamer's `/metrics` for rates.

Polling reads the instance itself rather than Prometheus: it works the same for a subprocess and a
container (published port), and does not wait for scrapes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from k2_ops.deploy.model import DeploymentError

RECEIVED = "binance_messages_received_total"
PRODUCED = "kafka_messages_produced_total"
RECONNECTS = "binance_reconnects_total"
LOG_ERRORS = "streamer_log_errors_total"
PRODUCE_ERRORS = "kafka_produce_errors_total"
GAPS = "binance_sequence_gaps_total"
WATCHED = (RECEIVED, PRODUCED, RECONNECTS, LOG_ERRORS, PRODUCE_ERRORS, GAPS)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    status: int | None
    body: object

    def reason(self) -> str:
        if self.status is None:
            return f"/readyz unreachable ({self.body})"
        checks = self.body.get("checks") if isinstance(self.body, dict) else None
        if isinstance(checks, dict):  # the streamer's answer: name what fails
            failing = [f"{name}: {check.get('reason')}" for name, check in sorted(checks.items())
                       if isinstance(check, dict) and not check.get("ok")]
            if failing:
                return f"/readyz answered {self.status}: " + "; ".join(failing)
        return f"/readyz answered {self.status}: {json.dumps(self.body, sort_keys=True)[:400]}"


def read_readiness(base_url: str, timeout_s: float = 2.0) -> Readiness:
    url = base_url.rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Readiness(200 <= response.status < 300, response.status, _json_or_text(response.read()))
    except urllib.error.HTTPError as exc:
        return Readiness(False, exc.code, _json_or_text(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        return Readiness(False, None, str(getattr(exc, "reason", exc)))


def _json_or_text(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")[:400]


def wait_ready(
    base_url: str,
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    abort: Callable[[], str | None] | None = None,
    what: str = "instance",
) -> float:
    """Poll `/readyz` until it answers 2xx; return the seconds it took, or raise with the last answer."""
    start = time.monotonic()
    deadline = start + timeout_s
    last: Readiness | None = None
    while True:
        last = read_readiness(base_url)
        if last.ready:
            return time.monotonic() - start
        if abort is not None and (reason := abort()):
            raise DeploymentError(f"{what} stopped before becoming ready: {reason}")
        if time.monotonic() >= deadline:
            raise DeploymentError(f"{what} not ready within {timeout_s:g} s; last {last.reason()}")
        time.sleep(interval_s)


def parse_totals(exposition: str, names: Iterable[str] = WATCHED) -> dict[str, float]:
    """Sum each wanted sample name over all its label sets (a missing counter counts as 0)."""
    wanted = set(names)
    totals = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in wanted:
                totals[sample.name] += float(sample.value)
    return totals


@dataclass(frozen=True)
class MetricsSample:
    at: float  # monotonic seconds
    totals: Mapping[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        return float(self.totals.get(name, 0.0))


def read_metrics(base_url: str, timeout_s: float = 5.0) -> MetricsSample:
    url = base_url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise DeploymentError(f"cannot read {url}: {getattr(exc, 'reason', exc)}") from exc
    return MetricsSample(time.monotonic(), parse_totals(text))


def increase(before: MetricsSample, after: MetricsSample, name: str) -> float:
    # A restarted process resets its counters; count from zero then rather than going negative.
    delta = after.get(name) - before.get(name)
    return after.get(name) if delta < 0 else delta


def rate(before: MetricsSample, after: MetricsSample, name: str) -> float:
    seconds = after.at - before.at
    return increase(before, after, name) / seconds if seconds > 0 else 0.0


def compare_rates(source_rate: float, target_rate: float, tolerance: float) -> str | None:
    """None when the target keeps up with the source within the tolerance, else the reason."""
    floor = (1.0 - tolerance) * source_rate
    if target_rate + 1e-9 < floor:
        return (
            f"target receives {target_rate:.1f} msg/s, below {(1 - tolerance) * 100:.0f} % of the "
            f"source's {source_rate:.1f} msg/s"
        )
    return None


def validation_problems(before: MetricsSample, after: MetricsSample, min_rate: float) -> list[str]:
    """What is wrong with an instance over a validation period: rate, errors, reconnects, gaps."""
    problems = []
    received_rate = rate(before, after, RECEIVED)
    if received_rate < min_rate:
        problems.append(f"message rate {received_rate:.2f} msg/s is below {min_rate:g} msg/s")
    for name, what in (
        (LOG_ERRORS, "error log records"),
        (PRODUCE_ERRORS, "Kafka produce errors"),
        (RECONNECTS, "unscheduled reconnects"),
        (GAPS, "sequence gaps"),
    ):
        count = increase(before, after, name)
        if count > 0:
            problems.append(f"{count:g} {what} ({name})")
    return problems


def progress_text(
    step: str, elapsed_s: float, window_s: float, rates: Mapping[str, float], gaps: Mapping[str, float]
) -> str:
    """One progress line of a watched window: how far, what each color receives, sequence gaps so far."""
    left = max(0.0, window_s - elapsed_s)
    rate_text = ", ".join(f"{color} {value:.1f} msg/s" for color, value in rates.items())
    gap_text = ", ".join(f"{color} {value:.0f}" for color, value in gaps.items())
    return (
        f"{step}: {elapsed_s:.0f} / {window_s:.0f} s, {left:.0f} s left; {rate_text}; "
        f"sequence gaps so far: {gap_text}"
    )
