"""Which color was the active streamer when, and the active streamer's series stitched across cutovers.

The validations judge *the streamer*, not one color: a day with a blue-green cutover or a rollback has the
old color's series before the switch and the new color's after it. The deployment history says when the
producing color changed (`DeploymentRecord.switches`) and when both produced on purpose (dual mode's
`overlap`); `ActiveTimeline` holds that for a period and `stitch` turns the per-color series of one metric
into the series the checks read, with no I/O.

Invariants of the stitched series:
- every point comes from the color that was active at the point's time (a switch at `t` gives the new
  color the points at `t` and after), so an event is counted once, by one color: no double rotations or
  pings while both colors run, no count of a standby's data;
- a counter is stitched by increments: at each point, what the active color's counter grew by since its
  own previous point (a reset or a child created by its first event counts from 0), summed into one
  cumulative series per label set without `instance`. The increments of the step holding a switch come
  from the new color, so the handover instant is counted once;
- a gauge keeps one series per active span (never joined across a switch, so a switch is not read as a
  change of value such as a restart); a point where the active color has no sample stays missing, which
  an uptime counts as down;
- series without an `instance` label (alerts of rules that drop it) pass through unchanged.

When the history is missing there is no timeline to stitch with: the caller judges one color and labels
the result so (`Judgement.PER_COLOR`).
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from k2_ops.deploy.history import DeploymentRecord
from k2_ops.deploy.model import COLORS
from k2_ops.validation.series import Point, Series, counter_increments

# The `instance` label of stitched series: the active streamer, whichever color it was.
ACTIVE_INSTANCE = "active"


class Judgement(enum.Enum):
    """How a period was judged."""

    STITCHED = "stitched"  # the active streamer across cutovers, from the deployment history
    PER_COLOR = "per-color"  # one color's series only (asked for, or the history is missing)


class SeriesKind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"


@dataclass(frozen=True)
class Switch:
    """The producing color changed from `from_color` to `to_color` at `at` (unix seconds)."""

    at: float
    from_color: str
    to_color: str
    deployment_id: str
    kind: str  # the record's kind: "deploy" or "rollback"
    approximate: bool = False  # placed at the record's finished_at (a record without switch instants)


@dataclass(frozen=True)
class Overlap:
    """Both colors produced during [start, end] on purpose (a dual-mode deployment)."""

    start: float
    end: float
    deployment_id: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Deployment:
    """One history record as a period's report shows it."""

    deployment_id: str
    kind: str
    status: str
    mode: str
    started_at: float
    finished_at: float
    from_color: str
    to_color: str
    active_color: str

    @classmethod
    def of(cls, record: DeploymentRecord) -> Deployment:
        return cls(
            record.deployment_id,
            record.kind,
            record.status,
            record.mode,
            record.started_at,
            record.finished_at,
            record.from_color,
            record.to_color,
            record.active_color,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "text": self.text()}

    def text(self) -> str:
        when = datetime.fromtimestamp(self.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"{when} UTC {self.kind} {self.from_color} -> {self.to_color} ({self.mode}): {self.status}, "
            f"{self.active_color} active after [{self.deployment_id}]"
        )


@dataclass(frozen=True)
class ActiveTimeline:
    """The active color over time: `initial_color` until the first switch, then each switch's `to_color`."""

    initial_color: str
    switches: tuple[Switch, ...] = ()
    overlaps: tuple[Overlap, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    _times: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.initial_color not in COLORS:
            raise ValueError(f"initial_color={self.initial_color!r}; allowed: {', '.join(COLORS)}")
        ordered = tuple(sorted(self.switches, key=lambda switch: switch.at))
        object.__setattr__(self, "switches", ordered)
        object.__setattr__(self, "_times", tuple(switch.at for switch in ordered))

    @classmethod
    def from_records(cls, records: Sequence[DeploymentRecord], default_color: str = "blue") -> ActiveTimeline:
        """The timeline a deployment history describes (records oldest first)."""
        switches: list[Switch] = []
        overlaps: list[Overlap] = []
        for record in records:
            if record.switches:
                switches += [
                    Switch(float(item["at"]), item["from_color"], item["to_color"], record.deployment_id, record.kind)
                    for item in record.switches
                ]
            else:
                # An older record: it says which color was active after it, not when the change happened.
                before = switches[-1].to_color if switches else record.from_color
                if record.active_color != before:
                    switches.append(
                        Switch(
                            record.finished_at,
                            before,
                            record.active_color,
                            record.deployment_id,
                            record.kind,
                            approximate=True,
                        )
                    )
            if record.overlap is not None:
                overlaps.append(Overlap(float(record.overlap[0]), float(record.overlap[1]), record.deployment_id))
        ordered = sorted(switches, key=lambda switch: switch.at)
        initial = ordered[0].from_color if ordered else (records[0].from_color if records else default_color)
        return cls(initial, tuple(ordered), tuple(overlaps), tuple(Deployment.of(record) for record in records))

    def span_index(self, t: float) -> int:
        """How many switches happened at or before `t` (the stretch of one color `t` falls in)."""
        return bisect.bisect_right(self._times, t)

    def color_at(self, t: float) -> str:
        index = self.span_index(t)
        return self.initial_color if index == 0 else self.switches[index - 1].to_color

    def spans(self, start: float, end: float) -> list[tuple[float, float, str]]:
        """[(begin, end, color)] covering [start, end] in order, one per stretch of one active color."""
        edges = [start, *(switch.at for switch in self.switches if start < switch.at < end), end]
        return [(begin, finish, self.color_at(begin)) for begin, finish in itertools.pairwise(edges)]

    def switches_between(self, start: float, end: float) -> list[Switch]:
        return [switch for switch in self.switches if start < switch.at <= end]

    def overlaps_between(self, start: float, end: float) -> list[Overlap]:
        return [
            Overlap(max(start, one.start), min(end, one.end), one.deployment_id)
            for one in self.overlaps
            if one.start < end and one.end > start
        ]

    def deployments_between(self, start: float, end: float) -> list[Deployment]:
        return [one for one in self.deployments if one.started_at < end and one.finished_at > start]


# --- stitching (pure) ----------------------------------------------------------------------------------


def _without_instance(series: Series) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((key, value) for key, value in series.labels.items() if key != "instance"))


def stitch_counter(series: Sequence[Series], timeline: ActiveTimeline) -> list[Series]:
    """One cumulative series per label set (without instance) counting only the active color's events.

    It starts at the earliest point of any color with the active color's value there (0 when the active
    color has no point then), so `appeared_in_window` reads it as the per-color series would be read: a
    counter already there at the period start counts from its level, one that appears later from 0.
    """
    grouped: dict[tuple[tuple[str, str], ...], list[Series]] = {}
    passthrough: list[Series] = []
    for one in series:
        if "instance" not in one.labels:
            passthrough.append(one)
        elif one.points:
            grouped.setdefault(_without_instance(one), []).append(one)
    stitched: list[Series] = []
    for labels, members in grouped.items():
        by_color = {one.labels["instance"]: one for one in members}
        increments = {color: dict(counter_increments(one.points)) for color, one in by_color.items()}
        first_point = {color: one.points[0] for color, one in by_color.items()}
        times = sorted({t for one in members for t, _ in one.points})
        opening = first_point.get(timeline.color_at(times[0]))
        total = opening[1] if opening is not None and opening[0] == times[0] else 0.0
        points: list[Point] = [(times[0], total)]
        for t in times[1:]:
            color = timeline.color_at(t)
            if color not in by_color:
                continue
            if t in increments[color]:
                total += increments[color][t]
            elif first_point[color][0] == t:
                total += first_point[color][1]  # a child created by its first event, or a fresh process
            else:
                continue  # the active color has no sample here (not scraped, not running)
            points.append((t, total))
        stitched.append(Series({**dict(labels), "instance": ACTIVE_INSTANCE}, points))
    return stitched + passthrough


def stitch_gauge(series: Sequence[Series], timeline: ActiveTimeline) -> list[Series]:
    """Each color's points while it was active, one series per active span (never joined across a switch)."""
    result: list[Series] = []
    for one in series:
        color = one.labels.get("instance")
        if color is None:
            result.append(one)
            continue
        span: list[Point] = []
        span_index = -1
        for t, value in one.points:
            if timeline.color_at(t) != color:
                continue
            index = timeline.span_index(t)
            if span and index != span_index:
                result.append(Series({**one.labels, "instance": ACTIVE_INSTANCE}, span))
                span = []
            span_index = index
            span.append((t, value))
        if span:
            result.append(Series({**one.labels, "instance": ACTIVE_INSTANCE}, span))
    return result


def stitch(series: Sequence[Series], timeline: ActiveTimeline, kind: SeriesKind) -> list[Series]:
    return stitch_counter(series, timeline) if kind is SeriesKind.COUNTER else stitch_gauge(series, timeline)


@dataclass(frozen=True)
class InactiveProduction:
    """What colors produced while *not* active: inside a recorded dual-mode overlap (deliberate) or outside
    any (unexpected: two producers, so duplicates in Kafka), per color."""

    in_overlaps: dict[str, float]
    outside: dict[str, float]


def inactive_production(
    series: Iterable[Series], timeline: ActiveTimeline, start: float, end: float, slack_seconds: float
) -> InactiveProduction:
    """Increments of a counter (Kafka deliveries) made while the series' color was not active.

    An increment observed at `t` happened in the step before it, so one within `slack_seconds` after an
    overlap's end still belongs to the overlap.
    """
    in_overlaps: dict[str, float] = {}
    outside: dict[str, float] = {}
    overlaps = timeline.overlaps_between(start - slack_seconds, end)
    for one in series:
        color = one.labels.get("instance")
        if color is None:
            continue
        for (before, _), (t, amount) in zip(one.points, counter_increments(one.points), strict=False):
            # The increment happened in (before, t]: a color active at either end produced it as the active one.
            if not (start < t <= end) or amount <= 0 or color in (timeline.color_at(before), timeline.color_at(t)):
                continue
            inside = any(overlap.start <= t <= overlap.end + slack_seconds for overlap in overlaps)
            target = in_overlaps if inside else outside
            target[color] = target.get(color, 0.0) + amount
    return InactiveProduction(in_overlaps, outside)
