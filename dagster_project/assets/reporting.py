"""Report files and UI metadata of the validation assets.

Markdown check tables are built here (they are the Dagster UI's view); the HTML report with charts comes
from the validation team's `k2_ops.reports` when present, see `write_html_report`.
"""


import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_project.resources.stack import stack_run_dir


# Its value is the resource itself, which has no type argument to name (dagster#32027).
class ReportsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    root: str = Field(default="", description="where report files go (default <run>/reports)")
    run_dir: str = ""

    def folder(self, *parts: str) -> Path:
        base = Path(self.root) if self.root else stack_run_dir(self.run_dir) / "reports"
        path = base.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def checks_table(checks: Sequence[Any]) -> str:
    """Markdown: one row per check with observed vs threshold and the evidence line."""
    rows = ["| check | result | observed | threshold | evidence |", "|---|---|---|---|---|"]
    for check in checks:
        rows.append(f"| {_cell(check.name)} | {'PASS' if check.passed else 'FAIL'} | {_cell(check.observed_text())} "
                    f"| {_cell(check.threshold_text())} | {_cell(check.evidence)} |")
    return "\n".join(rows)


def days_table(days: Sequence[dict[str, Any]], check_names: Sequence[str]) -> str:
    """Markdown: one row per day, one column per daily check ("PASS 6" / "FAIL 5": verdict and observed value;
    the column names the threshold, a cell its day's own when that differs), `-` where the day was not
    validated."""
    thresholds: dict[str, str] = {}
    # A day with a switch of the active color allows one scheduled event more or fewer: the columns name the
    # threshold of days without one, and such a day's cell names its own.
    for day in sorted(days, key=lambda d: bool(d.get("switches"))):
        for check in day.get("checks", ()):
            thresholds.setdefault(check["name"], check.get("threshold_text", ""))
    columns = [f"{name} ({thresholds[name]})" if thresholds.get(name) else name for name in check_names]
    header = "| day | result | " + " | ".join(columns) + " |"
    rows = [header, "|" + "---|" * (len(check_names) + 2)]
    for day in days:
        if day.get("missing"):
            rows.append(f"| {day['label']} | NOT VALIDATED | " + " | ".join("-" for _ in check_names) + " |")
            continue
        by_name = {c["name"]: c for c in day["checks"]}
        cells = []
        for name in check_names:
            check = by_name.get(name)
            own = "" if check is None or check.get("threshold_text", "") == thresholds.get(name, "") else (
                f" ({check.get('threshold_text')})")
            cells.append("-" if check is None else
                         f"{'PASS' if check['passed'] else 'FAIL'} {check.get('observed_text', '')}".rstrip() + own)
        rows.append(f"| {day['label']} | {'PASS' if day['passed'] else 'FAIL'} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    return path


def write_html_report(kind: str, results: Any, out_dir: Path) -> dict[str, Path]:
    """HTML (with charts), Markdown and JSON from `k2_ops.reports` when it exists; {} otherwise.

    Needed from the validation library (issue 4, item 7):
    `k2_ops.reports.write_period_report(kind: str, results: PeriodResult | Sequence[PeriodResult],
    out_dir: Path) -> dict[str, Path]` with keys "html", "markdown", "json" and "charts" entries
    ("chart:<name>" -> PNG path).
    """
    try:
        from k2_ops.reports import write_period_report
    except ImportError:
        return {}
    return dict(write_period_report(kind, results, out_dir))


# Charts shown inline in the UI's metadata (Markdown image data URIs); bigger ones stay files only.
MAX_INLINE_CHART_BYTES = 150_000


def charts_markdown(charts: dict[str, Path]) -> str:
    parts = []
    for name, path in charts.items():
        data = path.read_bytes()
        if len(data) <= MAX_INLINE_CHART_BYTES:
            parts.append(f"**{name}**\n\n![{name}](data:image/png;base64,{base64.b64encode(data).decode()})")
        else:
            parts.append(f"**{name}**: `{path}`")
    return "\n\n".join(parts)


def report_metadata(files: dict[str, Path]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    charts: dict[str, Path] = {}
    for key, path in files.items():
        if key == "html":
            metadata["html_report"] = dg.MetadataValue.path(str(path))
        elif key == "markdown":
            metadata["markdown_report"] = dg.MetadataValue.path(str(path))
        elif key.startswith("chart:"):
            charts[key.removeprefix("chart:")] = Path(path)
    if charts:
        metadata["charts"] = dg.MetadataValue.md(charts_markdown(charts))
    return metadata
