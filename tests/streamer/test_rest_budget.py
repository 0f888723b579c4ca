"""The REST weight budget (streamer/rest.py), driven with explicit times: Binance's minute, its header, 429 and
418 back-off orders, and the endpoint weights."""

from __future__ import annotations

import pytest

from streamer.rest import DEFAULT_RETRY_AFTER_S, Endpoint, WeightBudget, depth_weight


def test_endpoint_weights_are_binances() -> None:
    assert Endpoint.EXCHANGE_INFO.weight({}) == 20
    assert Endpoint.HISTORICAL_TRADES.weight({"limit": 1000}) == 25
    assert Endpoint.AGG_TRADES.weight({"limit": 1000}) == 4
    assert [depth_weight(n) for n in (1, 100, 101, 500, 501, 1000, 1001, 5000)] == [5, 5, 25, 25, 50, 50, 250, 250]
    assert Endpoint.DEPTH.weight({"limit": 500}) == 25 and Endpoint.DEPTH.weight({}) == 5


def test_requests_go_until_the_windows_budget_is_spent_then_wait_for_the_next_window() -> None:
    budget = WeightBudget(100, window_s=60.0)
    now = 120.5  # windows are aligned to multiples of 60 s: this one ends at 180
    for _ in range(4):
        assert budget.wait_s(25, now) == 0
        budget.spend(25, now)
    assert budget.wait_s(25, now) == pytest.approx(59.5)
    assert budget.wait_s(1, now + 10) == pytest.approx(49.5)
    assert budget.wait_s(25, 180.0) == 0  # a new window: the count starts again
    budget.spend(25, 180.0)
    assert budget.used == 25


def test_the_exchanges_count_wins_when_higher_than_ours() -> None:
    """Other processes on the IP spend weight too: X-MBX-USED-WEIGHT-1M counts them, and the budget follows it."""
    budget = WeightBudget(100, window_s=60.0)
    budget.spend(5, 0.0)
    budget.on_answer(200, 90, None, 0.1)
    assert budget.used == 90
    assert budget.wait_s(20, 0.2) > 0 and budget.wait_s(10, 0.2) == 0
    budget.on_answer(200, 10, None, 0.3)  # a lower header never lowers our count
    assert budget.used == 90


def test_a_429_stops_every_request_until_retry_after_has_passed() -> None:
    budget = WeightBudget(1000, window_s=60.0)
    budget.on_answer(429, 1200, 7.0, 10.0)
    assert not budget.banned
    assert budget.wait_s(1, 10.0) == pytest.approx(7.0)
    assert budget.wait_s(1, 16.9) == pytest.approx(0.1)
    # Then the window's count decides: the header said 1,200 of our 1,000 were used, so the next window.
    assert budget.wait_s(1, 17.0) == pytest.approx(43.0)
    assert budget.wait_s(1, 60.0) == 0


def test_a_418_is_a_ban_for_its_retry_after_and_a_missing_retry_after_backs_off_anyway() -> None:
    budget = WeightBudget(1000, window_s=60.0)
    budget.on_answer(418, None, 120.0, 0.0)
    assert budget.banned and budget.wait_s(1, 119.0) == pytest.approx(1.0)
    assert budget.wait_s(1, 121.0) == 0 and not budget.banned
    budget.on_answer(429, None, None, 200.0)
    assert budget.wait_s(1, 200.0) == pytest.approx(DEFAULT_RETRY_AFTER_S)


def test_a_request_heavier_than_the_whole_budget_goes_alone_in_an_empty_window() -> None:
    budget = WeightBudget(10, window_s=60.0)
    assert budget.wait_s(25, 0.0) == 0  # nothing spent yet in this window
    budget.spend(25, 0.0)
    assert budget.wait_s(25, 1.0) == pytest.approx(59.0)
