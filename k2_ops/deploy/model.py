"""Colors, the deploy configuration and the state one deployment carries from step to step."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from streamer.shards import Shard

COLORS = ("blue", "green")
MODES = ("dual", "handover")
DEFAULT_IMAGE = "k2-platform:v2.0-stable"


class DeploymentError(RuntimeError):
    """A deployment step failed; the message is the reason shown to the operator."""


def other_color(color: str) -> str:
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}; allowed: {', '.join(COLORS)}")
    return COLORS[1 - COLORS.index(color)]


def instance_name(color: str, shard: Shard) -> str:
    """A color's K2_INSTANCE and Prometheus `instance` label: the color itself when one streamer covers the
    market, prefixed by the shard when it is split (`s1-blue`), so every shard x color is its own series."""
    return color if shard.whole_market else f"s{shard.index}-{color}"


@dataclass(frozen=True)
class DeployConfig:
    """One deployment's settings. Every duration is a float in seconds so tests compress them."""

    image: str = DEFAULT_IMAGE
    mode: str = "dual"
    dual_operation_seconds: float = 600.0
    validation_seconds: float = 900.0
    ready_timeout_seconds: float = 120.0
    first_data_timeout_seconds: float = 60.0
    stop_grace_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    min_rate_per_second: float = 10.0
    # The new instance must receive at least (1 - tolerance) of the old one's message rate.
    rate_tolerance: float = 0.25
    handover_flush_timeout_seconds: float = 30.0
    # A progress line (elapsed / remaining, rates, gaps so far) this often during the dual-operation and
    # validation windows.
    progress_interval_seconds: float = 30.0
    # Extra environment of the new instance only: the new version's configuration.
    target_env: Mapping[str, str] = field(default_factory=dict)
    # Which shard this deployment replaces (0 .. the settings' shard_count - 1); each shard deploys on its own.
    shard: int = 0

    def __post_init__(self) -> None:
        if not self.image.strip():
            raise ValueError("image: must not be empty (e.g. k2-platform:v2.0-stable)")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; allowed: {' or '.join(MODES)}")
        for name in ("dual_operation_seconds", "validation_seconds", "stop_grace_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; allowed: >= 0 seconds")
        for name in (
            "ready_timeout_seconds",
            "first_data_timeout_seconds",
            "poll_interval_seconds",
            "handover_flush_timeout_seconds",
            "progress_interval_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}; allowed: > 0 seconds")
        if self.min_rate_per_second < 0:
            raise ValueError(f"min_rate_per_second={self.min_rate_per_second}; allowed: >= 0")
        if self.shard < 0:
            raise ValueError(f"shard={self.shard}; allowed: 0 .. shard_count - 1")
        if not 0 <= self.rate_tolerance <= 1:
            raise ValueError(f"rate_tolerance={self.rate_tolerance}; allowed: 0 .. 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_env"] = dict(self.target_env)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeployConfig:
        return cls(**dict(data))


@dataclass
class DeploymentState:
    """What a deployment knows so far; serialisable so each Dagster op can hand it to the next."""

    source: str
    target: str
    config: DeployConfig
    deployment_id: str = field(
        default_factory=lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    )
    started_at: float = field(default_factory=time.time)
    run_id: str | None = None
    # Seconds each finished step took, in order.
    steps: dict[str, float] = field(default_factory=dict)
    cutover_at: float | None = None
    # When the target was started producing (dual mode) and the changes of the producing color so far.
    target_started_at: float | None = None
    switches: list[dict[str, Any]] = field(default_factory=list)
    # Handover: the last id per stream the source produced, and the target's release report.
    positions: dict[str, int] = field(default_factory=dict)
    release: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.target != other_color(self.source):
            raise ValueError(f"target {self.target!r} must be the other color than source {self.source!r}")

    @property
    def cutover_done(self) -> bool:
        return self.cutover_at is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentState:
        values = dict(data)
        values["config"] = DeployConfig.from_dict(values["config"])
        return cls(**values)
