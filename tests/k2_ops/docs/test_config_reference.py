"""docs/configuration.md is exactly what the config object describes, and names every setting."""

from __future__ import annotations

import subprocess
import sys

from k2_ops.docs.config_reference import REFERENCE_PATH, render
from streamer.config import describe_settings


def test_reference_document_matches_the_config_object() -> None:
    assert REFERENCE_PATH.read_text() == render(), "run `k2 config-reference --write` and commit the result"


def test_every_setting_appears_with_its_default() -> None:
    text = REFERENCE_PATH.read_text()
    for setting in describe_settings():
        assert f"| `{setting['env']}` | `{setting['default']}` |" in text


def test_cli_prints_the_reference() -> None:
    result = subprocess.run([sys.executable, "-m", "k2_ops.cli", "config-reference"], capture_output=True,
                            text=True, check=True, timeout=60)
    assert result.stdout == render()
