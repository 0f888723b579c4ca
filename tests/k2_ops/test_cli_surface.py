"""The operator surface of the two commands, run as an operator runs them (the installed console scripts):
`--version` and `--help` print and exit; `k2-streamer` refuses an argument instead of starting with it
ignored; `--json` gives what the text shows, machine-readably."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
VERSION = importlib.metadata.version("k2-platform")


def run(command: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("program", ["k2", "k2-streamer"])
def test_version_prints_the_package_version_and_exits(program: str) -> None:
    result = run([str(BIN / program), "--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"{program} {VERSION}"


def test_streamer_help_says_how_it_is_configured_and_exits_without_starting() -> None:
    # No K2_* environment at all: if --help started the streamer it would run (or fail on config), not exit 0.
    result = run([str(BIN / "k2-streamer"), "--help"], timeout_s=30.0)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps the description
    assert "K2_CONFIG_FILE" in text and "`k2 config-reference`" in text


def test_streamer_refuses_an_unknown_argument() -> None:
    result = run([str(BIN / "k2-streamer"), "--symbols", "btcusdt"], timeout_s=30.0)
    assert result.returncode == 2
    assert "unrecognized arguments: --symbols btcusdt" in result.stderr


def test_stack_and_deploy_json_without_a_stack(tmp_path: Path) -> None:
    status = run([str(BIN / "k2"), "stack", "status", "--json", "--run-dir", str(tmp_path)])
    assert status.returncode == 1
    assert json.loads(status.stdout) == {"running": False, "healthy": False, "services": []}
    deploy = run([str(BIN / "k2"), "deploy", "status", "--json", "--run-dir", str(tmp_path)])
    assert deploy.returncode == 2 and "error" in json.loads(deploy.stdout)
    history = run([str(BIN / "k2"), "deploy", "history", "--json", "--run-dir", str(tmp_path)])
    assert history.returncode == 0 and json.loads(history.stdout) == []
