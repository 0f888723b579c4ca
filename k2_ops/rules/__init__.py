"""The K2 alert rules file (`k2_alerts.yml`) and the copies generated from it.

- `scale_rules(factor)`: the same rules on a compressed clock. Every `for:` and every range selector
  `[..]` in an expression is multiplied by `factor` (e.g. 240 / 86,400 for a 240 s "day"), so
  `for: 15m` becomes `for: 2500ms`. Ranges never go below `min_range_seconds`: a range must hold at
  least two scrapes for `increase()` to return anything. The production file writes every time
  threshold as a range or a `for:` (never as a number of seconds in the expression) so this scaling
  is complete.
- `render_rules(runbook_base_url)`: the rules with absolute runbook links. The checked-in file keeps
  repo-relative links (`docs/runbooks/alerts.md#<anchor>`), which resolve in a checkout and in the
  repository browser; a deployment that wants clickable links in Alertmanager renders a copy with its
  Git host's base URL.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, cast

import yaml

from k2_ops.paths import rules_dir

RULES_FILE = rules_dir() / "k2_alerts.yml"
RUNBOOK_PATH = "docs/runbooks/alerts.md"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d|w|y))+)\]")


class RulesError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `4h20m`, `15m`, `2500ms`."""
    text = str(text).strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise RulesError(f"not a Prometheus duration: {text!r}")
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """A Prometheus duration for `seconds`, in whole milliseconds when not whole seconds."""
    if seconds < 0:
        raise RulesError(f"negative duration {seconds}")
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def load_rules(path: Path = RULES_FILE) -> dict[str, Any]:
    # A Prometheus rules file is a YAML mapping ({"groups": [...]}).
    return cast(dict[str, Any], yaml.safe_load(path.read_text()))


def alerting_rules(rules: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rules = rules if rules is not None else load_rules()
    return [rule for group in rules.get("groups", []) for rule in group.get("rules", []) if "alert" in rule]


def alert_names(rules: dict[str, Any] | None = None) -> list[str]:
    return [rule["alert"] for rule in alerting_rules(rules)]


def scale_expression(expr: str, factor: float, min_range_seconds: float) -> str:
    def scaled(match: re.Match[str]) -> str:
        seconds = max(parse_duration(match.group(1)) * factor, min_range_seconds)
        return f"[{format_duration(seconds)}]"

    return _RANGE.sub(scaled, expr)


def scale_rules(
    factor: float,
    *,
    min_range_seconds: float = 4.0,
    min_for_seconds: float = 0.0,
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of the rules with every `for:` and range selector multiplied by `factor` (0 < factor <= 1)."""
    if not 0 < factor <= 1:
        raise RulesError(f"scale factor must be in (0, 1], got {factor}")
    scaled = copy.deepcopy(rules if rules is not None else load_rules())
    for group in scaled.get("groups", []):
        for rule in group.get("rules", []):
            rule["expr"] = scale_expression(str(rule["expr"]), factor, min_range_seconds)
            if "for" in rule:
                rule["for"] = format_duration(max(parse_duration(rule["for"]) * factor, min_for_seconds))
    return scaled


def render_rules(runbook_base_url: str, rules: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy whose runbook_url annotations are absolute: `<base>/docs/runbooks/alerts.md#<anchor>`."""
    rendered = copy.deepcopy(rules if rules is not None else load_rules())
    base = runbook_base_url.rstrip("/")
    for rule in alerting_rules(rendered):
        annotations = rule.get("annotations", {})
        if "runbook_url" in annotations and not re.match(r"^[a-z]+://", annotations["runbook_url"]):
            annotations["runbook_url"] = f"{base}/{annotations['runbook_url']}"
    return rendered


def write_rules(rules: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    return path
