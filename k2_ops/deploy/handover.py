"""Client of the streamer's handover control endpoint (see streamer/health.py), and the checks on its answers.

Exact handover, per stream key ("btcusdt@trade"): the old instance stops producing and reports the last id
Kafka acknowledged (`POST /handover/standby`); the new one, which connected in standby and buffered, drops
what it buffered up to that id and produces from the next one on (`POST /handover/release`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from k2_ops.deploy.model import DeploymentError


def _post(url: str, body: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise DeploymentError(f"POST {url} answered {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeploymentError(f"POST {url} failed: {getattr(exc, 'reason', exc)}") from exc


def enter_standby(base_url: str, flush_timeout_s: float) -> dict[str, int]:
    """Stop producing on `base_url`; return its last Kafka-acknowledged id per stream key."""
    answer = _post(
        f"{base_url.rstrip('/')}/handover/standby",
        {"flush_timeout_seconds": flush_timeout_s},
        flush_timeout_s + 10.0,
    )
    if not answer.get("flushed", False):
        raise DeploymentError(f"{base_url}: Kafka did not acknowledge everything before the handover: {answer}")
    positions = answer.get("positions")
    if not isinstance(positions, dict):
        raise DeploymentError(f"{base_url}: standby answer has no positions: {answer}")
    return {str(key): int(value) for key, value in positions.items()}


def release(base_url: str, after: Mapping[str, int] | None, timeout_s: float = 30.0) -> dict[str, Any]:
    """Make `base_url` produce everything after `after` (None: everything it buffered) and go on producing."""
    body = {"after": dict(after)} if after else {}
    return _post(f"{base_url.rstrip('/')}/handover/release", body, timeout_s)


def release_gaps(report: Mapping[str, Any]) -> dict[str, int]:
    """Stream keys where the released instance could not continue at the next id, with the missing count."""
    streams = report.get("streams", {})
    return {key: int(item.get("gap", 0)) for key, item in streams.items() if int(item.get("gap", 0)) > 0}


def missing_positions(positions: Mapping[str, int], expected_keys: list[str] | None) -> list[str]:
    """Stream keys the old instance never produced (nothing to hand over for them: not an error, a note)."""
    if not expected_keys:
        return []
    return sorted(set(expected_keys) - set(positions))
