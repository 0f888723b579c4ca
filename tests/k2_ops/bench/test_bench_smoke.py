"""Smoke run of the whole benchmark harness with tiny windows (`quick()`), on its own temporary Kafka and
simulator and real streamer processes: the JSON carries every figure and the Markdown table renders.
Speed is never asserted: only that each figure was measured and the 0/0 loss/duplicate accounting ran."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from k2_ops.bench import report
from k2_ops.bench.config import quick
from k2_ops.bench.runner import run

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_every_figure_and_the_table(tmp_path: Path) -> None:
    markdown = tmp_path / "performance.md"
    markdown.write_text("# Performance\n\nHand-written method.\n\n" + report.BEGIN_MARK + "\nold\n"
                        + report.END_MARK + "\n\n## History\n\nkept\n")
    config = quick(out_json=tmp_path / "performance.json", out_markdown=markdown, work_dir=tmp_path / "work",
                   memory_s=4.0, pin=(os.cpu_count() or 1) >= 2)

    result = run(config)

    written = json.loads(config.out_json.read_text())
    assert written["figures"] == json.loads(json.dumps(result["figures"]))
    for key in ("cpu_model", "cores", "ram_gb", "python", "kernel"):
        assert written["machine"][key], key
    missing = [key for key in report.required_figures(written["config"])
               if written["figures"].get(key, {}).get("median") is None]
    assert not missing, f"figures without a value: {missing}"
    # Every target is evaluated (met or not: speed is reported, never asserted).
    assert {t["figure"] for t in written["targets"]} >= {"e2e.cpu_us_per_msg", "resilience.rotations.lost"}
    assert all(t["met"] in (True, False) for t in written["targets"])
    # The accounting compared real ids with the simulator's ground truth.
    rotations = written["raw"]["rotations"]
    assert rotations["rotations"] >= config.rotations and rotations["records"] > 0
    assert set(rotations["keys"]) == {f"{s}@{k}" for s in config.symbols for k in config.streams}

    text = markdown.read_text()
    assert text.startswith("# Performance\n\nHand-written method.") and text.rstrip().endswith("kept")
    assert text.count(report.BEGIN_MARK) == 1 and "\nold\n" not in text
    table = [line for line in text.split(report.BEGIN_MARK)[1].splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(report.required_figures(written["config"]))  # header, alignment, one per figure
    assert "QUICK" in text and written["machine"]["cpu_model"] in text
