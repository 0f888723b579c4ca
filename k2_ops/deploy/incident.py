"""Incident snapshots of a deployed streamer: which alerts are K2's, one key per alert, and the capture.

A snapshot holds the metric window around the alert's start (from Prometheus), the instance's `/readyz`
and, when tracemalloc runs in the streamer, its top allocators (`/debug/allocations`). Whatever cannot be
read is recorded with the reason instead of failing the capture: an incident is exactly when things are down.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from k2_ops.deploy.probe import read_readiness
from k2_ops.paths import rules_dir

# The metrics an on-call engineer looks at first, per instance.
SNAPSHOT_QUERIES: dict[str, str] = {
    "rss_bytes": "process_memory_rss_bytes{selector}",
    "leak_score": "memory_leak_detection_score{selector}",
    "message_rate": "sum by (instance) (rate(binance_messages_received_total{selector}[1m]))",
    "produce_rate": "sum by (instance) (rate(kafka_messages_produced_total{selector}[1m]))",
    "connection_status": "binance_connection_status{selector}",
    "reconnects": "sum by (instance, reason) (increase(binance_reconnects_total{selector}[5m]))",
    "pong_timeouts": "sum by (instance) (increase(binance_pong_timeouts_total{selector}[5m]))",
    "sequence_gaps": "sum by (instance) (increase(binance_sequence_gaps_total{selector}[5m]))",
    "produce_errors": "sum by (instance) (increase(kafka_produce_errors_total{selector}[5m]))",
    "producer_queue": "kafka_producer_queue_messages{selector}",
}


@cache
def k2_alert_names(rules_file: Path | None = None) -> frozenset[str]:
    """Every alert name defined in the K2 rules file."""
    path = rules_file or rules_dir() / "k2_alerts.yml"
    document = yaml.safe_load(path.read_text())
    return frozenset(rule["alert"] for group in document.get("groups", []) for rule in group.get("rules", [])
                     if "alert" in rule)


def is_k2_alert(alert: Mapping[str, Any], names: Iterable[str]) -> bool:
    return alert.get("labels", {}).get("alertname") in set(names)


def is_firing(alert: Mapping[str, Any]) -> bool:
    state: object = alert.get("status", {}).get("state", "active")
    return state == "active"


def alert_key(alert: Mapping[str, Any]) -> str:
    """One key per alert occurrence: its fingerprint (label set) plus when it started firing, so an alert
    that resolves and fires again later is a new incident, and the same firing alert is never counted twice."""
    labels = alert.get("labels", {})
    fingerprint = alert.get("fingerprint") or hashlib.sha256(
        json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return f"{fingerprint}@{alert.get('startsAt', '')}"


def new_alerts(alerts: Sequence[Mapping[str, Any]], seen: Iterable[str], names: Iterable[str]
               ) -> list[Mapping[str, Any]]:
    """Firing K2 alerts not seen before, once each, in a stable order."""
    seen_keys = set(seen)
    wanted = set(names)
    fresh: dict[str, Mapping[str, Any]] = {}
    for alert in alerts:
        if is_firing(alert) and is_k2_alert(alert, wanted):
            key = alert_key(alert)
            if key not in seen_keys:
                fresh.setdefault(key, alert)
    return [fresh[key] for key in sorted(fresh)]


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def selector(labels: Mapping[str, str]) -> str:
    instance = labels.get("instance")
    return f'{{instance="{instance}"}}' if instance else ""


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def capture(
    *,
    alert: Mapping[str, Any],
    prometheus: Any | None,
    instance_url: str | None,
    window_before_s: float,
    window_after_s: float,
    out_dir: Path,
    now: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the snapshot JSON for `alert`; return its path and content."""
    labels = dict(alert.get("labels", {}))
    now = time.time() if now is None else now
    started = parse_time(alert.get("startsAt")) or now
    start, end = started - window_before_s, min(now, started + window_after_s)
    snapshot: dict[str, Any] = {
        "alert": dict(alert), "key": alert_key(alert), "captured_at": now,
        "window": {"start": start, "end": max(end, start + 1.0)}, "metrics": {}, "errors": {},
    }
    if prometheus is None:
        snapshot["errors"]["prometheus"] = "no Prometheus configured"
    else:
        for name, template in SNAPSHOT_QUERIES.items():
            promql = template.replace("{selector}", selector(labels))
            try:
                series = prometheus.query_range(promql, start, max(end, start + 1.0))
                snapshot["metrics"][name] = {"query": promql, "series": [
                    {"labels": dict(s.labels), "points": [list(p) for p in s.points]} for s in series]}
            except Exception as exc:
                snapshot["errors"][name] = f"{type(exc).__name__}: {exc}"
    if instance_url:
        readiness = read_readiness(instance_url)
        snapshot["readyz"] = {"url": f"{instance_url}/readyz", "ready": readiness.ready, "status": readiness.status,
                              "body": readiness.body}
        try:
            snapshot["allocations"] = _get_json(f"{instance_url.rstrip('/')}/debug/allocations")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            snapshot["errors"]["allocations"] = f"{getattr(exc, 'reason', exc)}"
    else:
        snapshot["errors"]["readyz"] = f"no known instance for {labels.get('instance', '(no instance label)')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    safe_key = hashlib.sha256(snapshot["key"].encode()).hexdigest()[:10]
    path = out_dir / f"{labels.get('alertname', 'alert')}-{labels.get('instance', 'all')}-{stamp}-{safe_key}.json"
    path.write_text(json.dumps(snapshot, indent=1, sort_keys=True, default=str))
    return path, snapshot
