"""A `Report` as Markdown (charts as PNG files beside it), self-contained HTML (charts inline as base64,
styles inline, no external reference) and JSON for machines."""

from __future__ import annotations

import base64
import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from k2_ops.reports.model import Report, Table
from k2_ops.validation.checks import CheckResult

CHECK_COLUMNS = ["check", "result", "observed", "threshold", "evidence"]

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1000px;
       color: #222; }
h1 { margin-bottom: 0.2em; }
.verdict { display: inline-block; padding: 0.2em 0.8em; border-radius: 4px; color: #fff; font-weight: bold; }
.PASS { background: #2e7d32; } .FAIL { background: #c62828; }
table { border-collapse: collapse; margin: 1em 0; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.pass { color: #2e7d32; font-weight: bold; } td.fail { color: #c62828; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; }
"""


def check_row(check: CheckResult) -> list[str]:
    return [
        check.name,
        "PASS" if check.passed else "FAIL",
        check.observed_text(),
        check.threshold_text(),
        check.evidence,
    ]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _timestamp(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def to_markdown(report: Report, chart_paths: dict[str, str]) -> str:
    """Markdown; `chart_paths` maps chart name to the PNG path relative to the Markdown file."""
    lines = [f"# {report.title}", "", f"**Result: {report.verdict}** — generated {_timestamp(report.generated_at)}", ""]
    if report.facts:
        lines += [*_md_table(["", ""], [[key, value] for key, value in report.facts.items()]), ""]
    if report.checks:
        lines += ["## Checks", "", *_md_table(CHECK_COLUMNS, [check_row(check) for check in report.checks]), ""]
    for table in report.tables:
        lines += [f"## {table.title}", "", *_md_table(table.columns, table.rows), ""]
    if report.charts:
        lines += ["## Charts", ""]
        for chart in report.charts:
            lines += [f"![{chart.title}]({chart_paths[chart.name]})", ""]
    for note in report.notes:
        lines += [f"> {note}", ""]
    return "\n".join(lines)


def _html_table(columns: list[str], rows: list[list[str]], result_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            css = ""
            if index == result_column or cell in ("PASS", "FAIL"):
                css = ' class="pass"' if cell == "PASS" else ' class="fail"' if cell == "FAIL" else ""
            cells.append(f"<td{css}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: Report) -> str:
    """One HTML file with everything inside: styles, tables and charts as data: URIs."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        f'<p><span class="verdict {report.verdict}">{report.verdict}</span> '
        f"generated {html.escape(_timestamp(report.generated_at))}</p>",
    ]
    if report.facts:
        parts.append(_html_table(["", ""], [[key, value] for key, value in report.facts.items()]))
    if report.checks:
        parts.append("<h2>Checks</h2>")
        parts.append(_html_table(CHECK_COLUMNS, [check_row(check) for check in report.checks], result_column=1))
    for table in report.tables:
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        parts.append(_html_table(table.columns, table.rows))
    if report.charts:
        parts.append("<h2>Charts</h2>")
        for chart in report.charts:
            encoded = base64.b64encode(chart.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(chart.title)}" src="data:image/png;base64,{encoded}">'
                f"<figcaption>{html.escape(chart.title)}</figcaption></figure>"
            )
    for note in report.notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _table_dict(table: Table) -> dict[str, Any]:
    return {"title": table.title, "columns": table.columns, "rows": table.rows}


def to_json(report: Report, chart_paths: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": report.kind,
        "title": report.title,
        "passed": report.passed,
        "generated_at": report.generated_at,
        "facts": report.facts,
        "checks": [check.to_dict() for check in report.checks],
        "tables": [_table_dict(table) for table in report.tables],
        "charts": chart_paths,
        "notes": report.notes,
        "data": report.data,
    }


def write_report(report: Report, out_dir: Path, basename: str | None = None) -> dict[str, Path]:
    """Write `<basename>.md`, `.html`, `.json` and `charts/<basename>_<chart>.png` into `out_dir`.

    Returns {"markdown", "html", "json", "chart:<name>"...} -> path.
    """
    basename = basename or f"{report.kind}_report"
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_dir = out_dir / "charts"
    files: dict[str, Path] = {}
    relative: dict[str, str] = {}
    for chart in report.charts:
        chart_dir.mkdir(exist_ok=True)
        path = chart_dir / f"{basename}_{chart.name}.png"
        path.write_bytes(chart.png)
        files[f"chart:{chart.name}"] = path
        relative[chart.name] = f"charts/{path.name}"
    files["markdown"] = out_dir / f"{basename}.md"
    files["markdown"].write_text(to_markdown(report, relative))
    files["html"] = out_dir / f"{basename}.html"
    files["html"].write_text(to_html(report))
    files["json"] = out_dir / f"{basename}.json"
    files["json"].write_text(json.dumps(to_json(report, relative), indent=1, default=str))
    return files
