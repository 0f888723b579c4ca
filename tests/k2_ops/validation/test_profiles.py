"""Profiles: production values, compressed scaling with unchanged expected counts, the streamer env."""

from __future__ import annotations

from typing import Any

import pytest

from k2_ops.validation import criteria
from k2_ops.validation.profiles import (
    PRODUCTION,
    ProfileError,
    ValidationProfile,
    compressed,
    get_profile,
)
from streamer.config import load_config


def test_production_profile_is_the_seed_schedule() -> None:
    p = PRODUCTION
    assert (p.day_seconds, p.rotation_seconds, p.ping_interval_seconds) == (86_400, 14_400, 180)
    assert (p.ping_timeout_seconds, p.health_timeout_seconds, p.memory_sample_seconds) == (10, 30, 30)
    assert p.scale == 1.0
    assert p.rotations_in(p.day_seconds) == 6
    assert p.pings_in(p.day_seconds) == 480
    assert p.rotations_in(p.hours(12)) == 3
    assert p.rotations_in(p.days(30)) == 180 and p.pings_in(p.days(30)) == 14_400


@pytest.mark.parametrize("day_seconds", [120.0, 240.0, 600.0, 3_600.0, 43_200.0, 86_400.0])
def test_compressed_profiles_scale_intervals_and_keep_the_counts(day_seconds: float) -> None:
    p = compressed(day_seconds)
    scale = day_seconds / 86_400
    assert p.scale == pytest.approx(scale)
    assert p.rotation_seconds == pytest.approx(14_400 * scale)
    assert p.ping_interval_seconds == pytest.approx(180 * scale)
    assert p.rotations_in(p.day_seconds) == 6
    assert p.pings_in(p.day_seconds) == 480
    assert p.rotations_in(p.hours(24)) == 6 and p.rotations_in(p.hours(12)) == 3
    # The pong deadline stays below the ping period, and the machine-bound intervals keep their floors.
    assert p.ping_timeout_seconds < p.ping_interval_seconds
    assert p.ping_timeout_seconds >= min(10 * scale, p.ping_interval_seconds)
    assert p.health_timeout_seconds >= max(30 * scale, 2.0) - 1e-9
    assert p.memory_sample_seconds >= 0.5


def test_ci_profile_a_day_of_four_minutes() -> None:
    p = get_profile("ci")
    assert p.day_seconds == 240
    assert p.rotation_seconds == pytest.approx(40.0)
    assert p.ping_interval_seconds == pytest.approx(0.5)
    assert p.ping_timeout_seconds == pytest.approx(0.4)
    assert p.hours(12) == pytest.approx(120.0)


def test_criteria_sets_follow_the_profile_counts() -> None:
    for profile in (PRODUCTION, compressed(240.0)):
        daily = criteria.daily(profile)
        assert daily.duration_seconds == profile.day_seconds
        assert "6 rotations per day" in daily.get("rotations").description
        assert "480 pings per day" in daily.get("pings").description
        assert "3 rotations" in criteria.validation_12h(profile).get("rotations").description
        month = criteria.stability_30d(profile)
        assert month.duration_seconds == pytest.approx(30 * profile.day_seconds)
        assert month.get("rotations").description == "180 rotations per connection"
        assert month.get("pings").description == "14400 pings per connection"


def test_streamer_env_is_accepted_by_the_streamer_config() -> None:
    for profile in (PRODUCTION, get_profile("ci"), compressed(600.0)):
        env = profile.streamer_env()
        assert set(env) >= {
            "K2_CONNECTION_MAX_LIFETIME_SECONDS",
            "K2_PING_INTERVAL_SECONDS",
            "K2_PING_TIMEOUT_SECONDS",
            "K2_HEALTH_CHECK_TIMEOUT_SECONDS",
            "K2_MEMORY_SAMPLE_INTERVAL_SECONDS",
        }
        config = load_config(env)
        assert config.connection_max_lifetime_s == pytest.approx(profile.rotation_seconds)
        assert config.ping_interval_s == pytest.approx(profile.ping_interval_seconds)
        assert config.ping_timeout_s == pytest.approx(profile.ping_timeout_seconds)
        assert config.health_timeout_s == pytest.approx(profile.health_timeout_seconds)
        assert config.memory_sample_interval_s == pytest.approx(profile.memory_sample_seconds)


def test_profile_round_trips_through_a_dict() -> None:
    p = compressed(240.0)
    assert ValidationProfile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("weekly", "unknown profile"),
        ("compressed:abc", "compressed:<day seconds>"),
        ("compressed:0", "day_seconds must be > 0"),
        ("compressed:100000", "<= 86400"),
    ],
)
def test_bad_profile_names_are_refused_clearly(spec: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        get_profile(spec)


def test_bad_profile_values_name_the_setting() -> None:
    with pytest.raises(ProfileError, match="ping_timeout_seconds"):
        ValidationProfile("x", ping_interval_seconds=10.0, ping_timeout_seconds=10.0)
    with pytest.raises(ProfileError, match="rotation_seconds"):
        ValidationProfile("x", rotation_seconds=0)
    with pytest.raises(ProfileError, match="day_seconds"):
        ValidationProfile("x", day_seconds=float("nan"))


def test_rotations_and_pings_are_expected_per_connection_times_the_connections() -> None:
    """A pool of 20 connections: the daily check expects 6 rotations and 480 pings per connection x 20, read
    from binance_connection_slots; a streamer exporting no slots gauge counts as one connection."""
    from k2_ops.validation.series import Series, Window

    day = criteria.daily(PRODUCTION)
    window = Window(0.0, 86_400.0, 600.0)
    steps = [i * 600.0 for i in range(145)]

    def counter(total: float) -> list[Series]:
        return [Series({"__name__": "c_total"}, [(t, total * t / 86_400.0) for t in steps])]

    def slots(value: float) -> list[Series]:
        return [Series({"__name__": "binance_connection_slots"}, [(t, value) for t in steps])]

    def run(rotations: float, pings: float, connections: list[Series]) -> dict[str, Any]:
        series = {criteria.SCHEDULED_ROTATIONS.key: counter(rotations), criteria.PINGS.key: counter(pings),
                  criteria.CONNECTION_SLOTS.key: connections}
        return {c.name: c.evaluate(series, window) for c in day.criteria if c.name in ("rotations", "pings")}

    pool = run(120, 9_600, slots(20.0))
    assert pool["rotations"].passed and pool["rotations"].threshold == 120
    assert pool["pings"].passed and pool["pings"].threshold == 9_600 and pool["pings"].tolerance == 100
    assert "6 per connection x 20 connection(s)" in pool["rotations"].evidence
    assert not run(6, 480, slots(20.0))["rotations"].passed  # one connection's figures are not the pool's
    single = run(6, 480, [])
    assert single["rotations"].passed and single["pings"].passed and single["rotations"].threshold == 6
    assert criteria.connections_in(slots(19.6), window) == 20
