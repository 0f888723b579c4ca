"""Deployment history: one JSON object per line, appended, never rewritten.

Each record says which color became active, so the active color after any sequence of deployments and
rollbacks is the `active_color` of the last record (blue before the first deployment).

Each record also says *when* the active color changed (`switches`: the instant the new color took over
producing, one per change, in order) and, for dual mode, the span both colors produced (`overlap`). The
validations read these to judge the streamer across deployments (`k2_ops.validation.timeline`). Records
written before these fields existed have none; their change is placed at `finished_at` and marked approximate.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k2_ops.deploy.model import COLORS

STATUSES = ("succeeded", "rolled_back", "failed", "manual_rollback")


@dataclass
class DeploymentRecord:
    deployment_id: str
    kind: str  # "deploy" or "rollback"
    status: str
    from_color: str
    to_color: str
    active_color: str
    image: str
    mode: str
    started_at: float
    finished_at: float = field(default_factory=time.time)
    run_id: str | None = None
    reason: str | None = None
    rollback_seconds: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    # Each change of the producing color: {"at": unix seconds, "from_color": ..., "to_color": ...}, in order.
    switches: list[dict[str, Any]] = field(default_factory=list)
    # Dual mode: [start, end] unix seconds during which both colors produced (deliberate overlap).
    overlap: list[float] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}; allowed: {', '.join(STATUSES)}")
        for name in ("from_color", "to_color", "active_color"):
            if getattr(self, name) not in COLORS:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: {', '.join(COLORS)}")
        for switch in self.switches:
            if switch.get("from_color") not in COLORS or switch.get("to_color") not in COLORS:
                raise ValueError(f"switch {switch!r} must name two colors of {', '.join(COLORS)}")
            if not isinstance(switch.get("at"), int | float):
                raise ValueError(f"switch {switch!r} needs its instant 'at' (unix seconds)")
        if self.overlap is not None and (len(self.overlap) != 2 or self.overlap[1] < self.overlap[0]):
            raise ValueError(f"overlap={self.overlap!r} must be [start, end] with end >= start")

    @property
    def duration_seconds(self) -> float:
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def switch_entry(at: float, from_color: str, to_color: str) -> dict[str, Any]:
    """One element of `DeploymentRecord.switches`."""
    return {"at": round(at, 3), "from_color": from_color, "to_color": to_color}


class DeploymentHistory:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: DeploymentRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_dict(), sort_keys=True) + "\n"
        # One write call on an O_APPEND descriptor: concurrent writers never interleave inside a line.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def exists(self) -> bool:
        return self.path.is_file()

    def records(self) -> list[DeploymentRecord]:
        """Every readable record, oldest first. A damaged line is skipped rather than hiding the rest."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                records.append(DeploymentRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
        return records

    def last(self) -> DeploymentRecord | None:
        records = self.records()
        return records[-1] if records else None

    def active_color(self, default: str = "blue") -> str:
        last = self.last()
        return last.active_color if last else default

    def previous_color(self) -> str | None:
        """The color that was active before the last change, i.e. where a manual rollback goes."""
        last = self.last()
        if last is None or last.active_color == last.from_color:
            return None
        return last.from_color
