"""Backfill series into a Prometheus data directory with `promtool tsdb create-blocks-from openmetrics`.

Write the blocks before Prometheus starts on that directory. The data must end before the new head
block (a few hours before now; `synthetic.history_days` keeps a 3 h margin) and Prometheus needs a
retention longer than the data's age, or it deletes the blocks at start-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from k2_ops.validation.series import Series
from k2_ops.validation.synthetic import write_openmetrics_days


class BackfillError(RuntimeError):
    pass


@dataclass(frozen=True)
class BackfillResult:
    files: list[Path]
    blocks: int
    seconds: float


def create_blocks(
    series: Sequence[Series],
    data_dir: Path,
    work_dir: Path,
    *,
    timeout_seconds: float = 300.0,
    workers: int | None = None,
) -> BackfillResult:
    """Write `series` as day-sized OpenMetrics files in `work_dir` and turn them into TSDB blocks."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise BackfillError("promtool not found (run `make setup`: apt-get install prometheus)")
    began = time.monotonic()
    data_dir.mkdir(parents=True, exist_ok=True)
    before = {path.name for path in data_dir.iterdir() if path.is_dir()}
    files = write_openmetrics_days(series, work_dir)

    def convert(path: Path) -> None:
        result = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
        )
        if result.returncode != 0:
            raise BackfillError(f"promtool could not backfill {path}: {(result.stderr or result.stdout).strip()}")

    # Each promtool run writes its own blocks (distinct ULID directories), so files convert in parallel.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(convert, files))
    blocks = len({path.name for path in data_dir.iterdir() if path.is_dir()} - before)
    return BackfillResult(files, blocks, time.monotonic() - began)
