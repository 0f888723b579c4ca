"""The one-line JSON summary the streamer logs when it stops, and how tools read it back from a log.

After a graceful stop (SIGTERM/SIGINT) the last thing the streamer logs is `stopped; summary {...}`: how
many events it accepted, produced and Kafka acknowledged, what was left unacknowledged, and so on. It is
written after the final flush, so it is the authoritative count (the /metrics endpoint is gone by then).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MARKER = "stopped; summary "


def format_summary(summary: Mapping[str, Any]) -> str:
    return MARKER + json.dumps(dict(summary), sort_keys=True)


def summary_from_log(text: str) -> dict[str, Any] | None:
    """The last shutdown summary in a streamer log, or None when the streamer never stopped gracefully."""
    for line in reversed(text.splitlines()):
        if MARKER in line:
            try:
                parsed = json.loads(line.split(MARKER, 1)[1])
            except json.JSONDecodeError:
                return None  # a truncated last line (killed mid-write) is no summary
            return parsed if isinstance(parsed, dict) else None
    return None
