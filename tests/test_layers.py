"""The import layers of pyproject.toml's [tool.importlinter] contracts hold: the streamer imports neither k2_ops
nor Dagster, k2_ops not Dagster, k2_ops.platform wires k2_ops.deploy on k2_ops.stack (never the reverse), and no
two sibling packages or modules import each other, function-level imports included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from k2_ops.paths import REPO_ROOT


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "4 kept" in result.stdout, result.stdout[-2000:]
