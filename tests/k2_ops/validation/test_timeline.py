"""The active-color timeline and stitching, driven with made-up records and series (pure, no I/O)."""

from __future__ import annotations

import pytest

from k2_ops.deploy.history import DeploymentRecord, switch_entry
from k2_ops.validation.series import Series, Window, series_increase, time_fraction, value_changes
from k2_ops.validation.timeline import (
    ACTIVE_INSTANCE,
    ActiveTimeline,
    inactive_production,
    stitch_counter,
    stitch_gauge,
)


def record(
    deployment_id: str, from_color: str, to_color: str, active: str, finished: float, **extra: object
) -> DeploymentRecord:
    return DeploymentRecord(
        deployment_id=deployment_id, kind="deploy", status="succeeded", from_color=from_color, to_color=to_color,
        active_color=active, image="img", mode="handover", started_at=finished - 50, finished_at=finished, **extra,
    )


def counter(instance: str, points: list[tuple[float, float]], **labels: str) -> Series:
    return Series({"__name__": "binance_pings_sent_total", "instance": instance, **labels}, points)


CUTOVER = ActiveTimeline.from_records([record("d1", "blue", "green", "green", 120.0,
                                              switches=[switch_entry(100.0, "blue", "green")])])


def test_the_active_color_changes_at_the_switch_instant() -> None:
    assert [CUTOVER.color_at(t) for t in (0.0, 99.9, 100.0, 500.0)] == ["blue", "blue", "green", "green"]
    assert CUTOVER.spans(0.0, 200.0) == [(0.0, 100.0, "blue"), (100.0, 200.0, "green")]
    assert CUTOVER.spans(150.0, 200.0) == [(150.0, 200.0, "green")]
    assert [s.at for s in CUTOVER.switches_between(0.0, 200.0)] == [100.0]
    assert CUTOVER.switches_between(100.0, 200.0) == []  # a window starting at the switch holds none


def test_an_older_record_without_instants_switches_at_its_end_marked_approximate() -> None:
    timeline = ActiveTimeline.from_records([record("old", "blue", "green", "green", 300.0),
                                            record("rolled-back", "green", "blue", "green", 400.0)])
    [switch] = timeline.switches  # the rolled-back record did not change the active color
    assert (switch.at, switch.to_color, switch.approximate) == (300.0, "green", True)
    assert ActiveTimeline.from_records([]).color_at(1e9) == "blue"


def test_a_counter_counts_each_step_once_from_the_active_color() -> None:
    # Both colors ping 1 per 10 s; green started (standby) at 60, took over at 100, blue stopped at 100.
    blue = counter("blue", [(t, t / 10) for t in range(0, 101, 10)])
    green = counter("green", [(t, (t - 60) / 10) for t in range(60, 201, 10)])
    [stitched] = stitch_counter([blue, green], CUTOVER)
    assert stitched.labels["instance"] == ACTIVE_INSTANCE
    assert series_increase(stitched, Window(0.0, 200.0, 10.0)) == 20  # not 24 (green's standby pings)
    assert [v for _, v in stitched.points][-1] - stitched.points[0][1] == 20


def test_a_counter_reset_and_a_child_created_by_its_first_event_count_from_zero() -> None:
    blue = counter("blue", [(0.0, 5.0), (10.0, 7.0), (20.0, 1.0), (30.0, 2.0)], reason="error")  # restart at 20
    timeline = ActiveTimeline.from_records([])
    [stitched] = stitch_counter([blue], timeline)
    assert series_increase(stitched, Window(0.0, 30.0, 10.0)) == 2 + 1 + 1
    # A child green creates after the switch counts its first value in full; one it had before, not.
    late = counter("green", [(150.0, 1.0), (160.0, 1.0)], reason="pong_timeout")
    early = counter("green", [(90.0, 3.0), (110.0, 4.0)], reason="error")
    by_reason = {s.labels["reason"]: s for s in stitch_counter([late, early], CUTOVER)}
    window = Window(0.0, 200.0, 10.0)
    assert series_increase(by_reason["pong_timeout"], window) == 1
    assert series_increase(by_reason["error"], window) == 1


def test_gauges_stay_per_span_so_a_switch_is_no_restart_and_a_gap_is_down() -> None:
    start_time = [Series({"instance": "blue"}, [(t, 1.0) for t in range(0, 101, 10)]),
                  Series({"instance": "green"}, [(t, 55.0) for t in range(60, 201, 10)])]
    stitched = stitch_gauge(start_time, CUTOVER)
    assert value_changes(stitched) == 0 and len(stitched) == 2
    status = [Series({"instance": "blue"}, [(t, 1.0) for t in range(0, 101, 10)]),
              Series({"instance": "green"}, [(t, 1.0) for t in range(60, 201, 10) if not 130 <= t <= 150])]
    assert time_fraction(stitch_gauge(status, CUTOVER), Window(0.0, 200.0, 10.0)) == pytest.approx(18 / 21)


def test_production_by_the_inactive_color_is_split_into_overlap_and_unexpected() -> None:
    timeline = ActiveTimeline.from_records([record("dual", "blue", "green", "green", 120.0,
                                                   switches=[switch_entry(100.0, "blue", "green")],
                                                   overlap=[60.0, 100.0])])
    green = counter("green", [(t, t - 60) for t in range(60, 201, 10)])  # produces from its start
    blue = counter("blue", [(t, t) for t in range(0, 101, 10)] + [(t, 100 + (t - 150)) for t in (150, 160)])
    production = inactive_production([blue, green], timeline, 0.0, 200.0, 10.0)
    assert production.in_overlaps == {"green": 30.0}  # (60,70] .. (80,90]; (90,100] ends at the switch
    assert production.outside == {"blue": 10.0}  # blue came back and produced while green was active
