"""The production Prometheus and Alertmanager files, checked with the real tools (promtool, amtool) and
against the compose file that mounts them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS_CONFIG = Path("docker/prometheus/prometheus.yml")
ALERTMANAGER_CONFIG = Path("docker/alertmanager/alertmanager.yml")
RULES = Path("k2_ops/rules/k2_alerts.yml")
STREAMERS = ("streamer-blue", "streamer-green")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: `make setup` installs it (apt-get install prometheus prometheus-alertmanager)"
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def prometheus_config(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / PROMETHEUS_CONFIG).read_text())


def test_compose_mounts_this_config_and_the_shared_rules(compose: Any, repo_root: Path,
                                                         prometheus_config: dict[str, Any]) -> None:
    assert compose.host_path("prometheus", "/etc/prometheus/prometheus.yml") == repo_root / PROMETHEUS_CONFIG
    command = compose.service("prometheus")["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    rule_files = prometheus_config["rule_files"]
    assert [compose.host_path("prometheus", path) for path in rule_files] == [
        repo_root / RULES, repo_root / "docker/prometheus/extra-rules/*.yml"], (
        "production Prometheus must load the rules file the tests use, plus the site's own (none here)"
    )
    assert not list((repo_root / "docker/prometheus/extra-rules").glob("*.yml"))


def test_promtool_check_config(compose: Any, repo_root: Path, prometheus_config: dict[str, Any],
                               tmp_path: Path) -> None:
    """promtool also opens every rule file, so the check runs on a copy whose rule_files are the host paths
    the compose bind mounts put behind the container paths (the mapping is the compose file's, not ours)."""
    mapped = dict(prometheus_config)
    mapped["rule_files"] = [str(compose.host_path("prometheus", path)) for path in prometheus_config["rule_files"]]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(mapped, sort_keys=False))
    done = run([tool("promtool"), "check", "config", str(config)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr, done.stdout + done.stderr


def test_promtool_check_rules() -> None:
    rules = Path(__file__).resolve().parents[2] / RULES
    done = run([tool("promtool"), "check", "rules", str(rules)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", done.stdout + done.stderr), done.stdout + done.stderr


def test_streamers_are_scraped_as_job_k2_streamer_instance_color(compose: Any,
                                                                  prometheus_config: dict[str, Any]) -> None:
    """Team contract: series identity {job="k2-streamer", instance="<color>"} with honor_labels."""
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    job = jobs["k2-streamer"]
    assert job["honor_labels"] is True
    discovered: dict[str, int] = {}
    for sd in job["dns_sd_configs"]:
        assert sd.get("type", "SRV") == "A", "A records: compose's DNS has no SRV records"
        for name in sd["names"]:
            discovered[name] = sd["port"]
    assert set(discovered) == set(STREAMERS), f"discovered {sorted(discovered)}"
    for name, port in discovered.items():
        env = compose.environment(name)
        assert port == int(env["K2_METRICS_PORT"]), f"{name} serves /metrics on {env['K2_METRICS_PORT']}"
        # The relabel rule must turn the DNS name into the color the streamer labels itself with.
        labels = {"__meta_dns_name": name, "instance": f"{name}:{port}"}
        for rule in job["relabel_configs"]:
            value = ";".join(labels.get(s, "") for s in rule["source_labels"])
            match = re.fullmatch(rule.get("regex", "(.*)"), value)  # Prometheus anchors its regexes
            if match and rule.get("action", "replace") == "replace":
                labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
        assert labels["instance"] == env["K2_INSTANCE"], f"{name} is scraped as instance={labels['instance']}"


def test_alerts_go_to_the_compose_alertmanager(compose: Any, prometheus_config: dict[str, Any]) -> None:
    targets = [t for am in prometheus_config["alerting"]["alertmanagers"] for sc in am["static_configs"]
               for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in compose.services
    assert any(container == 9093 for _, _, container in compose.published_ports("alertmanager"))


def test_retention_covers_the_30_day_report(compose: Any) -> None:
    flags = dict(arg.lstrip("-").split("=", 1) for arg in compose.service("prometheus")["command"] if "=" in arg)
    retention = flags.get("storage.tsdb.retention.time", "15d")
    assert retention.endswith("d") and int(retention[:-1]) >= 31, retention


def test_amtool_check_config(repo_root: Path, compose: Any) -> None:
    config = repo_root / ALERTMANAGER_CONFIG
    assert compose.host_path("alertmanager", "/etc/alertmanager/alertmanager.yml") == config
    done = run([tool("amtool"), "check-config", str(config)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_amtool_routes_every_k2_alert_to_the_webhook(repo_root: Path) -> None:
    """Every alert of the shared rules file, with its own labels, reaches the webhook receiver."""
    rules_path = repo_root / RULES
    rules = [r for g in yaml.safe_load(rules_path.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert rules
    for rule in rules:
        labels = [f"alertname={rule['alert']}", "instance=blue"]
        labels += [f"{key}={value}" for key, value in (rule.get("labels") or {}).items()]
        done = run([tool("amtool"), "config", "routes", "test",
                    f"--config.file={repo_root / ALERTMANAGER_CONFIG}", *labels])
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == "k2-webhook", f"{rule['alert']} goes to {done.stdout.strip()!r}"
