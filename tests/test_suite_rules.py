"""The suite's own rules, checked by tests/conftest.py at the end of every run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import LONG_TEST_SECONDS, long_tests_without_a_reason


def explained() -> None:
    """Starts a whole stack: that takes a minute."""


def unexplained() -> None:
    pass


@dataclass
class Item:  # what the rule reads of a pytest item
    nodeid: str
    function: Any


def test_a_long_test_must_say_why_in_its_docstring() -> None:
    items: list[Any] = [Item("a::explained", explained), Item("a::unexplained", unexplained),
                        Item("a::quick", unexplained)]
    seconds = {"a::explained": LONG_TEST_SECONDS + 1, "a::unexplained": LONG_TEST_SECONDS + 30, "a::quick": 1.0}
    assert long_tests_without_a_reason(items, seconds) == [f"a::unexplained ({LONG_TEST_SECONDS + 30:.0f} s)"]
