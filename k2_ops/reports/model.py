"""What a report holds, independent of its format: verdict, facts, check rows, extra tables, charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from k2_ops.validation.checks import CheckResult


@dataclass(frozen=True)
class Chart:
    name: str  # file stem, e.g. "rss"
    title: str
    png: bytes


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Report:
    kind: str  # soak | daily | weekly | monthly
    title: str
    passed: bool
    generated_at: float
    facts: dict[str, str] = field(default_factory=dict)  # shown as a two-column table
    checks: list[CheckResult] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # JSON only

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"
