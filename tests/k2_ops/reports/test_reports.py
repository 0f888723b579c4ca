"""Reports: files exist, the HTML is self-contained (charts inline, nothing external), every check row shows
observed next to threshold, and the 7-day report marks the failed checks of the failed days."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from k2_ops.reports import build_report, write_period_report
from k2_ops.validation import criteria, memory_profile, periods
from k2_ops.validation.checks import CheckResult
from k2_ops.validation.profiles import PRODUCTION
from k2_ops.validation.series import Window
from k2_ops.validation.synthetic import Fault, SyntheticHistory, WeekScenario, deployment_week, generate
from k2_ops.validation.timeline import ActiveTimeline

START = 1_790_000_000.0 // 86_400 * 86_400
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def period_result(
    history: SyntheticHistory, criteria_set: criteria.CriteriaSet, start: float, end: float, step: float
) -> periods.PeriodResult:
    """What periods.validate_* returns, computed from synthetic series instead of Prometheus."""
    queries = {**criteria_set.inputs(), **{query.key: query for query in periods.CHART_INPUTS}}
    series = criteria.select_series(generate(history), queries, start, end)
    checks = criteria.evaluate_series(criteria_set, series, Window(start, end, step))
    return periods.PeriodResult(
        criteria_set.name, history.instance, start, end, step, history.profile.name, checks, series
    )


@pytest.fixture(scope="module")
def bad_week() -> list[periods.PeriodResult]:
    history = SyntheticHistory(
        START,
        7,
        "bad-week",
        faults=(Fault("missing_rotation", 1), Fault("pong_timeout", 3), Fault("rss_over_ceiling", 5)),
    )
    daily = criteria.daily(PRODUCTION)
    return [period_result(history, daily, *history.day_window(day), 60.0) for day in range(7)]


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("src", "href"):
            link = values.get(name) or ""
            if link and not link.startswith("data:"):
                self.external.append(f"{tag} {name}={link}")
        if tag in ("link", "script", "iframe"):
            self.external.append(tag)
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None


def parse_html(path: Path) -> _Html:
    parser = _Html()
    parser.feed(path.read_text())
    return parser


def assert_check_rows(files: dict[str, Path], checks: list[CheckResult]) -> None:
    """Each check: one HTML row and one Markdown row holding its observed value and its threshold."""
    rows = parse_html(files["html"]).rows
    markdown = files["markdown"].read_text().splitlines()
    for check in checks:
        html_row = next(row for row in rows if row and row[0] == check.name)
        assert html_row[1:4] == ["PASS" if check.passed else "FAIL", check.observed_text(), check.threshold_text()]
        md_row = next(line for line in markdown if line.startswith(f"| {check.name} |"))
        assert f"| {check.observed_text()} | {check.threshold_text()} |" in md_row
    data = json.loads(files["json"].read_text())
    assert [(c["name"], c["observed"], c["threshold"]) for c in data["checks"]] == [
        (c.name, c.observed, c.threshold) for c in checks
    ]


def assert_self_contained(files: dict[str, Path]) -> None:
    html = parse_html(files["html"])
    assert html.external == [], f"external references: {html.external}"
    charts = [key for key in files if key.startswith("chart:")]
    assert len(html.images) == len(charts) >= 1
    for source in html.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_MAGIC)
    for key in charts:
        assert files[key].read_bytes().startswith(PNG_MAGIC)
        assert f"](charts/{files[key].name})" in files["markdown"].read_text()


def test_daily_report_has_charts_and_observed_vs_threshold(
    tmp_path: Path, bad_week: list[periods.PeriodResult]
) -> None:
    day = bad_week[5]
    files = write_period_report("daily", day, tmp_path)
    assert {"markdown", "html", "json"} <= set(files)
    assert {"chart:rss", "chart:message_rate", "chart:rotations", "chart:pings", "chart:reconnects"} <= set(files)
    assert_self_contained(files)
    assert_check_rows(files, day.checks)
    assert "**Result: FAIL**" in files["markdown"].read_text()
    assert json.loads(files["json"].read_text())["passed"] is False


def test_weekly_report_from_stored_daily_json_lists_every_day(
    tmp_path: Path, bad_week: list[periods.PeriodResult]
) -> None:
    # As the Dagster weekly asset does: daily results read back from their JSON (no series).
    stored = [periods.PeriodResult.from_dict(json.loads(json.dumps(day.to_dict()))) for day in bad_week]
    files = write_period_report("weekly", stored, tmp_path)
    assert_self_contained(files)
    rows = parse_html(files["html"]).rows
    header = rows[next(index for index, row in enumerate(rows) if row[:2] == ["day", "result"])]
    labels = {day.label for day in bad_week}
    # Rows of the day matrix (the "Failed checks" table also starts with a day, but has other columns).
    matrix = {
        row[0]: dict(zip(header, row, strict=True))
        for row in rows
        if row and row[0] in labels and len(row) == len(header)
    }
    assert len(matrix) == 7
    failed = {label: {name.split(" (")[0] for name, cell in row.items() if cell.startswith("FAIL ")}
              for label, row in matrix.items()}
    labels = [day.label for day in bad_week]  # in order
    assert failed == {
        labels[0]: set(),
        labels[1]: {"rotations"},
        labels[2]: set(),
        labels[3]: {"unscheduled_reconnects"},
        labels[4]: set(),
        labels[5]: {"memory_stable"},
        labels[6]: set(),
    }
    assert matrix[labels[1]]["rotations (= 6)"] == "FAIL 5"  # observed, and the threshold in the header
    markdown = files["markdown"].read_text()
    assert "## Failed checks" in markdown and "| memory_stable | ≤ 250 MB |" in markdown
    assert json.loads(files["json"].read_text())["passed"] is False


def test_a_good_week_report_passes(tmp_path: Path) -> None:
    history = SyntheticHistory(START, 7, "good-week")
    daily = criteria.daily(PRODUCTION)
    days = [period_result(history, daily, *history.day_window(day), 60.0) for day in range(7)]
    report = build_report("weekly", days)
    assert report.passed
    files = write_period_report("weekly", days, tmp_path)
    assert "**Result: PASS**" in files["markdown"].read_text()


def test_monthly_report_charts_per_day(tmp_path: Path) -> None:
    history = SyntheticHistory(START, 30, "month", scrape_interval=300.0, faults=(Fault("pong_timeout", 3),))
    month = criteria.stability_30d(PRODUCTION)
    result = period_result(history, month, START, START + 30 * 86_400, 300.0)
    files = write_period_report("monthly", result, tmp_path)
    assert {"chart:rotations_per_day", "chart:pings_per_day", "chart:rss", "chart:reconnects"} <= set(files)
    assert_self_contained(files)
    assert_check_rows(files, result.checks)


def test_soak_report_from_a_memory_profile(tmp_path: Path, soak_profile: dict[str, Any]) -> None:
    profile = soak_profile
    assert all(check["passed"] for check in profile["checks"]), profile["checks"]
    files = write_period_report("soak", profile, tmp_path)
    assert {"chart:rss", "chart:leak_score", "chart:message_rate", "chart:rotations", "chart:pings"} <= set(files)
    assert_self_contained(files)
    assert_check_rows(files, [CheckResult.from_dict(item) for item in profile["checks"]])
    text = files["markdown"].read_text()
    assert re.search(r"\| RSS start -> end \| .* MB \(growth .* MB\) \|", text)


def test_unknown_kind_and_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown report kind"):
        build_report("yearly", [])
    with pytest.raises(ValueError, match="at least one"):
        build_report("weekly", [])
    with pytest.raises(TypeError):
        build_report("soak", [])
    assert memory_profile.SCHEMA_VERSION == 1


def test_a_week_with_deployments_shows_them_and_how_it_was_judged(tmp_path: Path) -> None:
    """The weekly and daily reports of a stitched week: the deployments table, the switch days shaded
    (pixels differ from a week without switches), the notes, and a cell with the day's widened threshold."""
    week = deployment_week(START, WeekScenario.ROLLBACK_WITH_OUTAGE)
    raw = [one for history in week.histories for one in generate(history)]
    timeline = ActiveTimeline.from_records(list(week.records))
    daily = criteria.daily(PRODUCTION)
    days = [
        periods.judge_stitched(
            daily,
            criteria.select_series(raw, periods.stitched_queries(daily), START + i * 86_400, START + (i + 1) * 86_400),
            timeline,
            Window(START + i * 86_400, START + (i + 1) * 86_400, 60.0),
            PRODUCTION,
        )
        for i in range(7)
    ]
    report = build_report("weekly", days)
    assert report.facts["judged"] == "active streamer, stitched across deployments"
    assert report.facts["deployments"] == "2"
    [deployments] = [table for table in report.tables if table.title == "Deployments in this period"]
    assert [row[-1] for row in deployments.rows] == ["synthetic-deploy", "synthetic-rollback"]
    assert [row[3] for row in deployments.rows] == ["handover", "restart"]
    matrix = report.tables[0]
    rotations_column = matrix.columns.index("rotations (= 6)")
    assert matrix.rows[2][rotations_column].endswith("(= 6 ± 1)")  # Wednesday: the switch widens it
    assert matrix.rows[3][rotations_column] == "6"
    assert any(note.startswith(days[4].label + ": active streamer: green") for note in report.notes)
    assert report.passed is False and report.facts["failed days"] == days[4].label

    unswitched = dataclasses.replace(days[2], switches=[])
    plain_week = build_report("weekly", [*days[:2], unswitched, *days[3:]])
    shaded = {chart.name: chart.png for chart in report.charts}
    plain = {chart.name: chart.png for chart in plain_week.charts}
    assert shaded["uptime_per_day"] != plain["uptime_per_day"]

    files = write_period_report("daily", days[4], tmp_path / "friday")
    markdown = files["markdown"].read_text()
    assert "| judged | active streamer, stitched across deployments |" in markdown
    assert "synthetic-rollback" in markdown and "down 20" in markdown
    day_report = build_report("daily", days[4])
    assert day_report.title.endswith("— active streamer")
    assert any(table.title == "Deployments in this period" for table in day_report.tables)
