"""docs/samples/ is what the report code produces today: regenerating it gives the committed files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from k2_ops.docs.sample_report import SAMPLES_DIR, write_samples
from k2_ops.validation import memory_profile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INLINE_PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    write_samples(out)
    return out


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_the_same_files_are_generated(regenerated: Path) -> None:
    assert _files(regenerated) == _files(SAMPLES_DIR), (
        "docs/samples/ is stale: run `python -m k2_ops.docs.sample_report` and commit the result"
    )


@pytest.mark.parametrize(
    "name",
    [
        "soak/soak_report.md",
        "soak/soak_report.json",
        "soak/memory_profile.json",
        "weekly/weekly_report.md",
        "weekly/weekly_report.json",
    ],
)
def test_committed_sample_equals_regenerated(regenerated: Path, name: str) -> None:
    assert (SAMPLES_DIR / name).read_text() == (regenerated / name).read_text(), (
        f"docs/samples/{name} differs from what the code produces: run `python -m k2_ops.docs.sample_report`"
    )


@pytest.mark.parametrize("name", ["soak/soak_report.html", "weekly/weekly_report.html"])
def test_committed_html_equals_regenerated_apart_from_chart_pixels(regenerated: Path, name: str) -> None:
    # Chart pixels depend on the matplotlib/freetype build; every table and text must match exactly.
    committed = INLINE_PNG.sub("data:image/png;base64,...", (SAMPLES_DIR / name).read_text())
    fresh = INLINE_PNG.sub("data:image/png;base64,...", (regenerated / name).read_text())
    assert committed == fresh


def test_charts_are_png_files_the_markdown_links() -> None:
    for markdown in SAMPLES_DIR.rglob("*.md"):
        links = re.findall(r"\]\((charts/[^)]+\.png)\)", markdown.read_text())
        assert links, f"{markdown} shows no chart"
        for link in links:
            assert (markdown.parent / link).read_bytes().startswith(PNG_MAGIC), link


def test_soak_sample_follows_the_memory_profile_schema() -> None:
    profile = json.loads((SAMPLES_DIR / "soak" / "memory_profile.json").read_text())
    assert memory_profile.profile_problems(profile) == []
    assert set(profile["samples"][0]) == set(memory_profile.SAMPLE_KEYS)
    checks = {check["name"]: check["passed"] for check in profile["checks"]}
    assert checks == {
        "runs_full_duration": True, "memory_growth": True, "message_rate": True, "connection_drops": True,
        "data_integrity": True, "memory_profile_written": True,
    }


def test_weekly_sample_is_a_week_with_deployments_failing_exactly_the_injected_days() -> None:
    report = json.loads((SAMPLES_DIR / "weekly" / "weekly_report.json").read_text())
    failed = {day["label"]: [c["name"] for c in day["checks"] if not c["passed"]] for day in report["data"]["days"]}
    # Tuesday: the missed rotation; Friday: the 10 minutes without a connection inside the rollback. The
    # Wednesday cutover and Friday rollback themselves fail nothing: the days are judged stitched.
    assert {label: names for label, names in failed.items() if names} == {
        "2026-03-03": ["rotations"],
        "2026-03-06": ["uptime"],
    }
    assert report["passed"] is False
    assert all(day["judgement"] == "stitched" for day in report["data"]["days"])
    deployments = {d["deployment_id"] for day in report["data"]["days"] for d in day["deployments"]}
    assert deployments == {"synthetic-deploy", "synthetic-rollback"}
    markdown = (SAMPLES_DIR / "weekly" / "weekly_report.md").read_text()
    assert "## Deployments in this period" in markdown
    assert "down 2026-03-06 15:00:00 UTC - 2026-03-06 15:10:00 UTC" in markdown
