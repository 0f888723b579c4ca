"""`memory_profile.json`: what a soak run measured, sample by sample.

Schema (version 1), all times in unix seconds, memory in bytes unless the key says MB:

    {
      "schema_version": 1,
      "metadata": {
        "profile": {...ValidationProfile fields, "scale"...},
        "criteria": "soak_24h" | "validation_12h",
        "instance": "soak",                        # K2_INSTANCE of the streamer
        "metrics_url": "http://127.0.0.1:PORT/metrics",
        "mode": "spawned" | "attached",
        "planned_duration_seconds": 240.0,         # the soak's duration
        "grace_seconds": 2.0,                      # sampled beyond it so a rotation due at the end counts
        "sample_interval_seconds": 0.5,
        "started_at": 1790000000.0,                # soak clock start (streamer ready)
        "ended_at": 1790000242.0,
        "streamer_env": {"K2_...": "..."},         # what the soak set (spawned mode)
        "leak_bytes_per_second": 0.0,              # K2_TEST_LEAK_BYTES_PER_SECOND
        "exit_code": 0 | null,                     # the streamer's, when spawned
        "shutdown_summary": {...} | null,          # spawned: what the streamer logged after its final flush
                                                   # (received, produced, delivered, unacknowledged, ...)
        "scrape_failures": 0
      },
      "summary": {
        "samples": 485, "duration_seconds": 242.0,
        "rss_start_mb": 61.2, "rss_end_mb": 63.0, "rss_min_mb": 60.8, "rss_max_mb": 64.1, "rss_growth_mb": 1.8,
        "max_leak_score": 0.12, "messages": 24100, "average_rate": 99.6,
        "rotations": 6, "scheduled_rotations": 6, "pings": 480, "reconnects": 0, "pong_timeouts": 0,
        "sequence_gaps": 0, "missing_messages": 0, "kafka_produced": 24100, "produce_errors": 0,
        "log_errors": 0, "restarts": 0
      },
      "samples": [
        {"time": 1790000000.5, "elapsed_seconds": 0.5, "rss_bytes": 61200000, "leak_score": 0.0,
         "messages": 50, "rotations": 0, "scheduled_rotations": 0, "pings": 1, "reconnects": 0,
         "pong_timeouts": 0, "sequence_gaps": 0, "missing_messages": 0, "kafka_produced": 48,
         "produce_errors": 0, "log_errors": 0, "connection_status": 1, "process_start_time": 1789999998.1},
        ...
      ],
      "checks": [ {CheckResult.to_dict()}, ... ]   # added once the criteria are evaluated
    }

Counters in samples are the streamer's own totals since it started (summed over label sets); summary
counts are increases over the soak (resets included), RSS growth is end minus start sample.
A missing metric is null. `leak score` is the streamer's `memory_leak_detection_score`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from k2_ops.validation.checks import CheckResult
from k2_ops.validation.scrape import Scrape
from k2_ops.validation.series import counter_increase

SCHEMA_VERSION = 1
MB = 1e6
SAMPLE_KEYS = (
    "time",
    "elapsed_seconds",
    "rss_bytes",
    "leak_score",
    "messages",
    "rotations",
    "scheduled_rotations",
    "pings",
    "reconnects",
    "pong_timeouts",
    "sequence_gaps",
    "missing_messages",
    "kafka_produced",
    "produce_errors",
    "log_errors",
    "connection_status",
    "process_start_time",
)
COUNTER_KEYS = (
    "messages",
    "rotations",
    "scheduled_rotations",
    "pings",
    "reconnects",
    "pong_timeouts",
    "sequence_gaps",
    "missing_messages",
    "kafka_produced",
    "produce_errors",
    "log_errors",
)


def sample_record(scrape: Scrape, started_at: float) -> dict[str, Any]:
    """One `samples` entry from a scrape (pure)."""
    return {
        "time": scrape.time,
        "elapsed_seconds": round(scrape.time - started_at, 3),
        "rss_bytes": scrape.total("process_memory_rss_bytes"),
        "leak_score": scrape.maximum("memory_leak_detection_score"),
        "messages": scrape.total("binance_messages_received_total"),
        "rotations": scrape.total("binance_connection_rotations_total"),
        "scheduled_rotations": scrape.total("binance_connection_rotations_total", reason="scheduled"),
        "pings": scrape.total("binance_pings_sent_total"),
        "reconnects": scrape.total("binance_reconnects_total"),
        "pong_timeouts": scrape.total("binance_pong_timeouts_total"),
        "sequence_gaps": scrape.total("binance_sequence_gaps_total"),
        "missing_messages": scrape.total("binance_missing_messages_total"),
        "kafka_produced": scrape.total("kafka_messages_produced_total"),
        "produce_errors": scrape.total("kafka_produce_errors_total"),
        "log_errors": scrape.total("streamer_log_errors_total"),
        "connection_status": scrape.maximum("binance_connection_status"),
        "process_start_time": scrape.maximum("process_start_time_seconds"),
    }


def _values(samples: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(sample["time"], float(sample[key])) for sample in samples if sample.get(key) is not None]


def summarize(samples: Sequence[Mapping[str, Any]], counters_from_zero: bool = True) -> dict[str, Any]:
    """The summary block (pure). Counter totals are increases over the samples (from 0 for a spawned run)."""
    summary: dict[str, Any] = {"samples": len(samples)}
    if not samples:
        return summary
    duration = samples[-1]["elapsed_seconds"] if counters_from_zero else samples[-1]["time"] - samples[0]["time"]
    summary["duration_seconds"] = duration
    rss = [value / MB for _, value in _values(samples, "rss_bytes")]
    if rss:
        summary.update(
            rss_start_mb=rss[0],
            rss_end_mb=rss[-1],
            rss_min_mb=min(rss),
            rss_max_mb=max(rss),
            rss_growth_mb=rss[-1] - rss[0],
        )
    scores = [value for _, value in _values(samples, "leak_score")]
    summary["max_leak_score"] = max(scores) if scores else None
    for key in COUNTER_KEYS:
        points = _values(samples, key)
        summary[key] = counter_increase(points, from_zero=counters_from_zero) if points else None
    if summary.get("messages") is not None and duration > 0:
        summary["average_rate"] = summary["messages"] / duration
    starts = {value for _, value in _values(samples, "process_start_time")}
    summary["restarts"] = max(0, len(starts) - 1)
    return summary


def build_profile(
    metadata: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], counters_from_zero: bool = True
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "metadata": dict(metadata),
        "summary": summarize(samples, counters_from_zero),
        "samples": list(samples),
    }


def write_profile(profile: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # NaN is not JSON: a missing value is null.
    tmp.write_text(json.dumps(profile, indent=1, allow_nan=False, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def profile_problems(profile: Any) -> list[str]:
    """What is wrong with a memory profile document (empty when it follows the schema)."""
    if not isinstance(profile, Mapping):
        return ["not a JSON object"]
    problems = []
    if profile.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version is {profile.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for block in ("metadata", "summary"):
        if not isinstance(profile.get(block), Mapping):
            problems.append(f"{block} missing")
    samples = profile.get("samples")
    if not isinstance(samples, list) or not samples:
        problems.append("no samples")
    else:
        for index, sample in enumerate(samples):
            missing = [key for key in SAMPLE_KEYS if key not in sample]
            if missing:
                problems.append(f"sample {index} lacks {', '.join(missing)}")
                break
        times = [sample.get("time", 0) for sample in samples]
        if times != sorted(times):
            problems.append("samples are not in time order")
    return problems


def check_profile_written(path: Path) -> CheckResult:
    """The soak criterion "memory profile JSON written": the file exists, parses and follows the schema."""
    name = "memory_profile_written"
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        return CheckResult(name, False, 0, 1, "", f"{path} not written", ">=", kind="artifact")
    except json.JSONDecodeError as error:
        return CheckResult(name, False, 0, 1, "", f"{path} is not JSON: {error}", ">=", kind="artifact")
    problems = profile_problems(profile)
    samples = len(profile.get("samples") or []) if isinstance(profile, Mapping) else 0
    evidence = (
        f"{path.name}: {samples} samples, schema v{SCHEMA_VERSION}"
        if not problems
        else f"{path.name}: {'; '.join(problems)}"
    )
    return CheckResult(
        name,
        not problems,
        1 if not problems else 0,
        1,
        "",
        evidence,
        ">=",
        kind="artifact",
        details={"path": str(path), "samples": samples},
    )


def check_shutdown_delivery(shutdown: Mapping[str, Any] | None) -> CheckResult:
    """Spawned soaks: Kafka acknowledged every event the streamer accepted, by its own count after the final
    flush (`streamer.summary`). The last /metrics sample cannot show this: it is taken while messages are
    still in flight, and the endpoint is gone once the flush is done."""
    name = "kafka_delivery"
    if shutdown is None:
        return CheckResult(
            name,
            False,
            None,
            0,
            "messages",
            "the streamer logged no shutdown summary (killed, or crashed)",
            "==",
            kind="zero-events",
        )
    received = int(shutdown.get("received", 0))
    delivered = int(shutdown.get("delivered", 0))
    unacknowledged = int(shutdown.get("unacknowledged", 0))
    errors = int(shutdown.get("produce_errors", 0))
    undelivered = received - delivered
    passed = undelivered == 0 and unacknowledged == 0 and errors == 0
    return CheckResult(
        name,
        passed,
        float(undelivered),
        0,
        "messages",
        f"at shutdown: {received} accepted, {delivered} acknowledged by Kafka, {unacknowledged} unacknowledged, "
        f"{errors} produce errors",
        "==",
        kind="zero-events",
        details={key: shutdown.get(key) for key in ("received", "produced", "delivered", "unacknowledged")},
    )
