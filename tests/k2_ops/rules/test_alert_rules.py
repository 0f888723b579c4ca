"""The alert rules file: promtool checks it, promtool unit tests cover every rule (firing and not firing),
every runbook link resolves, and the scaled copy for compressed clocks really fires on the short clock."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from k2_ops.paths import REPO_ROOT
from k2_ops.rules import (
    RULES_FILE,
    RulesError,
    alert_names,
    alerting_rules,
    format_duration,
    load_rules,
    parse_duration,
    render_rules,
    scale_rules,
    write_rules,
)

RULE_TESTS_DIR = RULES_FILE.parent / "tests"
RUNBOOK = REPO_ROOT / "docs" / "runbooks" / "alerts.md"
REQUIRED_ALERTS = {
    "BinanceMemoryHigh",
    "BinanceMemoryLeakDetected",
    "BinanceStreamDown",
    "BinancePongTimeouts",
    "BinanceSequenceGaps",
    "KafkaProduceErrors",
    "BinanceRotationOverdue",
}



@pytest.fixture(autouse=True, scope="module")
def promtool_installed() -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool missing: run `make setup` (apt package prometheus)")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert files, f"no promtool tests in {RULE_TESTS_DIR}"
    result = promtool("test", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_firing_and_a_silent_promtool_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for expectation in case.get("alert_rule_test", []):
                (firing if expectation.get("exp_alerts") else silent).add(expectation["alertname"])
    names = set(alert_names())
    assert names - firing == set(), f"rules never tested firing: {names - firing}"
    assert names - silent == set(), f"rules never tested silent: {names - silent}"


def test_required_alerts_exist_with_the_seed_thresholds() -> None:
    rules = {rule["alert"]: rule for rule in alerting_rules()}
    assert set(rules) >= REQUIRED_ALERTS
    memory_high = rules["BinanceMemoryHigh"]
    assert memory_high["expr"].strip() == "process_memory_rss_bytes > 400000000"
    assert parse_duration(memory_high["for"]) == 300
    leak = rules["BinanceMemoryLeakDetected"]
    assert leak["expr"].strip() == "memory_leak_detection_score > 0.8"
    assert parse_duration(leak["for"]) == 900


def test_every_alert_has_severity_summary_and_a_runbook_link_to_an_existing_section() -> None:
    headings = {
        github_anchor(line[3:]) for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")
    }
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (REPO_ROOT / path) == RUNBOOK, f"{name}: runbook_url {annotations['runbook_url']}"
        assert anchor in headings, f"{name}: no section #{anchor} in {RUNBOOK}"
        assert anchor == github_anchor(name), f"{name}: anchor should be the alert name"


def test_runbook_sections_have_meaning_first_checks_and_remediation() -> None:
    sections = re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)[1:]
    titles = {section.splitlines()[0].strip(): section for section in sections}
    assert set(titles) == set(alert_names())
    for title, body in titles.items():
        for part in ("**Meaning.**", "**First checks.**", "**Remediation.**"):
            assert part in body, f"section {title} lacks {part}"


def test_durations_parse_and_format() -> None:
    assert parse_duration("4h20m") == 15600
    assert parse_duration("2500ms") == 2.5
    assert format_duration(2.5) == "2500ms"
    assert format_duration(60) == "60s"
    for bad in ("", "5", "5 m", "1.5s", "m5"):
        with pytest.raises(RulesError):
            parse_duration(bad)


def test_scaled_rules_scale_for_and_ranges_and_keep_a_scrape_floor(tmp_path: Path) -> None:
    factor = 240 / 86_400
    scaled = {rule["alert"]: rule for rule in alerting_rules(scale_rules(factor, min_range_seconds=4.0))}
    assert scaled["BinanceMemoryLeakDetected"]["for"] == "2500ms"  # 15 m on a 240 s day
    assert scaled["BinanceRotationOverdue"]["for"] == format_duration(15600 * factor)
    assert "[4s]" in scaled["BinanceStreamDown"]["expr"]  # 1 m would be 167 ms: floored to 4 s
    assert "[1m]" not in scaled["BinanceStreamDown"]["expr"]
    path = write_rules(scale_rules(factor), tmp_path / "scaled.yml")
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaled_leak_rule_fires_on_the_compressed_clock_in_promtool(tmp_path: Path) -> None:
    """The generated copy is a working rules file: its 2.5 s `for:` fires at 2.5 s, not at 15 minutes."""
    write_rules(scale_rules(240 / 86_400), tmp_path / "scaled.yml")
    annotations = {rule["alert"]: rule["annotations"] for rule in alerting_rules()}[
        "BinanceMemoryLeakDetected"
    ]
    test = {
        "rule_files": ["scaled.yml"],
        "evaluation_interval": "500ms",
        "tests": [
            {
                "interval": "500ms",
                "input_series": [
                    {"series": 'memory_leak_detection_score{instance="blue"}', "values": "0.9+0x20"}
                ],
                "alert_rule_test": [
                    {"eval_time": "2s", "alertname": "BinanceMemoryLeakDetected", "exp_alerts": []},
                    {
                        "eval_time": "3s",
                        "alertname": "BinanceMemoryLeakDetected",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "instance": "blue"},
                                "exp_annotations": {
                                    "summary": "Streamer blue memory is growing steadily (leak score > 0.8)",
                                    "description": (
                                        "Leak detection score of streamer blue is 0.90 for 15 minutes."
                                    ),
                                    "runbook_url": annotations["runbook_url"],
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "scaled_test.yml").write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", "scaled_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_rules_makes_absolute_runbook_links() -> None:
    rendered = render_rules("https://git.example.com/k2/blob/main/")
    for rule in alerting_rules(rendered):
        assert rule["annotations"]["runbook_url"].startswith(
            "https://git.example.com/k2/blob/main/docs/runbooks/alerts.md#"
        )
    assert load_rules() != rendered  # the checked-in rules keep repo-relative links
