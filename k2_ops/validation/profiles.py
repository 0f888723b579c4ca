"""Validation profiles: how long a "day" is, and every streamer interval derived from it.

`production` is real time: a day is 86,400 s, rotation every 4 h, client ping every 180 s, pong deadline
10 s, health timeout 30 s, RSS sampled every 30 s. A compressed profile makes a day N seconds and scales
every interval by N / 86,400, so the expected counts stay the same (6 rotations and 480 pings per "day").

Some intervals cannot shrink with the clock because they measure the machine, not the schedule; a
compressed profile keeps them above a floor (all documented in `compressed()`):
- the pong deadline is a network round trip plus event-loop lag: at least min(0.8 x ping interval, 1 s);
- the health timeout must exceed the longest normal gap between two market messages: at least 2 s;
- RSS sampling and the soak's own sampling: at least every 0.5 s (each sample costs a syscall and a scrape);
- the leak score (the streamer's trend in MB per real hour) fits at least 30 s of RSS samples and ignores
  at least the first 60 s: start-up allocations (imports, caches, TLS and Kafka buffers) take real
  seconds whatever the clock, and on a short window they read as a steep "leak".
Message rates (> 10 msg/s) and memory thresholds (MB) are not time-scaled: they are properties of the
process, measured in real seconds and bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PRODUCTION_DAY_SECONDS = 86_400.0
HOUR = 3_600.0


class ProfileError(ValueError):
    """A profile setting or a profile name is invalid; the message names it."""


@dataclass(frozen=True)
class ValidationProfile:
    name: str
    day_seconds: float = PRODUCTION_DAY_SECONDS
    rotation_seconds: float = 4 * HOUR
    ping_interval_seconds: float = 180.0
    ping_timeout_seconds: float = 10.0
    health_timeout_seconds: float = 30.0
    memory_sample_seconds: float = 30.0
    # The streamer's leak score: trend over this sliding window, ignoring samples this young after start.
    memory_window_seconds: float = HOUR
    memory_warmup_seconds: float = 300.0
    # Steady RSS growth (MB per real hour) that gives a leak score of 0.5. Leaks grow with work done
    # (messages, rotations), and a compressed day does a production day's work faster, so compressed
    # profiles scale this by 86,400 / day seconds: the score then means the same per day of work.
    leak_reference_mb_per_hour: float = 10.0
    # The soak runner's sampling period of the streamer's /metrics.
    soak_sample_seconds: float = 30.0
    # Start-up allocations (imports, buffers, Kafka client) are not growth: memory growth is measured after.
    warmup_seconds: float = 600.0
    # "Sustained" message rate: every chunk of this length must be above the minimum.
    sustained_rate_seconds: float = HOUR

    def __post_init__(self) -> None:
        for name in (
            "day_seconds",
            "rotation_seconds",
            "ping_interval_seconds",
            "ping_timeout_seconds",
            "health_timeout_seconds",
            "memory_sample_seconds",
            "soak_sample_seconds",
            "sustained_rate_seconds",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ProfileError(f"ValidationProfile.{name} must be a finite number of seconds > 0, got {value!r}")
        for name in ("warmup_seconds", "memory_warmup_seconds"):
            if getattr(self, name) < 0:
                raise ProfileError(f"ValidationProfile.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.ping_timeout_seconds >= self.ping_interval_seconds:
            raise ProfileError(
                f"ValidationProfile.ping_timeout_seconds ({self.ping_timeout_seconds:g}) must not exceed "
                f"ping_interval_seconds ({self.ping_interval_seconds:g}): a pong deadline longer than the "
                "ping period would overlap the next ping"
            )
        if self.rotation_seconds > self.day_seconds:
            raise ProfileError(
                f"ValidationProfile.rotation_seconds ({self.rotation_seconds:g}) must fit in a day "
                f"({self.day_seconds:g} s)"
            )

    @property
    def scale(self) -> float:
        """Profile seconds per production second (1.0 for production)."""
        return self.day_seconds / PRODUCTION_DAY_SECONDS

    def hours(self, hours: float) -> float:
        """`hours` of profile time in real seconds (12 h of a 240 s day = 120 s)."""
        return hours * HOUR * self.scale

    def days(self, days: float) -> float:
        return days * self.day_seconds

    def rotations_in(self, seconds: float) -> int:
        """Scheduled rotations due in `seconds` of streaming (the 24 h soak: 6)."""
        return int(seconds / self.rotation_seconds + 1e-9)

    def pings_in(self, seconds: float) -> int:
        return int(seconds / self.ping_interval_seconds + 1e-9)

    def streamer_env(self) -> dict[str, str]:
        """The streamer's interval settings for this profile (names from the streamer's config contract)."""
        return {
            "K2_CONNECTION_MAX_LIFETIME_SECONDS": _seconds(self.rotation_seconds),
            "K2_PING_INTERVAL_SECONDS": _seconds(self.ping_interval_seconds),
            "K2_PING_TIMEOUT_SECONDS": _seconds(self.ping_timeout_seconds),
            "K2_HEALTH_CHECK_TIMEOUT_SECONDS": _seconds(self.health_timeout_seconds),
            "K2_MEMORY_SAMPLE_INTERVAL_SECONDS": _seconds(self.memory_sample_seconds),
            "K2_MEMORY_WINDOW_SECONDS": _seconds(self.memory_window_seconds),
            "K2_MEMORY_WARMUP_SECONDS": _seconds(self.memory_warmup_seconds),
            "K2_LEAK_REFERENCE_MB_PER_HOUR": _seconds(self.leak_reference_mb_per_hour),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationProfile:
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})


def _seconds(value: float) -> str:
    return repr(float(value)).removesuffix(".0")


PRODUCTION = ValidationProfile("production")


def compressed(day_seconds: float, name: str | None = None) -> ValidationProfile:
    """A day of `day_seconds`; every interval scaled by day_seconds / 86,400, floors as the module says."""
    if not isinstance(day_seconds, int | float) or not math.isfinite(day_seconds) or day_seconds <= 0:
        raise ProfileError(f"compressed profile: day_seconds must be > 0, got {day_seconds!r}")
    if day_seconds > PRODUCTION_DAY_SECONDS:
        raise ProfileError(f"compressed profile: day_seconds must be <= 86400, got {day_seconds!r}")
    scale = day_seconds / PRODUCTION_DAY_SECONDS
    base = PRODUCTION
    ping_interval = base.ping_interval_seconds * scale
    ping_timeout = max(base.ping_timeout_seconds * scale, min(0.8 * ping_interval, 1.0))
    sample = max(base.soak_sample_seconds * scale, 0.5)
    return ValidationProfile(
        name=name or f"compressed-{_seconds(day_seconds)}s",
        day_seconds=float(day_seconds),
        rotation_seconds=base.rotation_seconds * scale,
        ping_interval_seconds=ping_interval,
        ping_timeout_seconds=min(ping_timeout, ping_interval),
        health_timeout_seconds=max(base.health_timeout_seconds * scale, 2.0),
        memory_sample_seconds=max(base.memory_sample_seconds * scale, 0.5),
        memory_window_seconds=max(base.memory_window_seconds * scale, 30.0),
        memory_warmup_seconds=max(base.memory_warmup_seconds * scale, 60.0),
        leak_reference_mb_per_hour=base.leak_reference_mb_per_hour / scale,
        soak_sample_seconds=sample,
        warmup_seconds=max(base.warmup_seconds * scale, 10 * sample),
        sustained_rate_seconds=max(base.sustained_rate_seconds * scale, 10 * sample),
    )


# A compressed day short enough for CI: 24 "hours" in 4 minutes, a rotation every 40 s, a ping every 0.5 s.
CI_DAY_SECONDS = 240.0


def get_profile(spec: str) -> ValidationProfile:
    """`production`, `ci` (a 240 s day) or `compressed:<day seconds>` (e.g. `compressed:600`)."""
    text = spec.strip().lower()
    if text == "production":
        return PRODUCTION
    if text == "ci":
        return compressed(CI_DAY_SECONDS, name="ci")
    if text.startswith("compressed:"):
        try:
            day = float(text.split(":", 1)[1])
        except ValueError as exc:
            raise ProfileError(f"profile {spec!r}: expected compressed:<day seconds>, e.g. compressed:240") from exc
        return compressed(day)
    raise ProfileError(f"unknown profile {spec!r}: use production, ci or compressed:<day seconds>")
