"""Grafana provisioning and the K2 Streamer dashboard: the JSON parses, it uses the provisioned datasource,
every query is valid PromQL (promtool parses them as recording rules) and only queries metrics the streamer
exports: the team contract (source of truth, below) and prometheus_client's process collector, cross-checked
against the metrics the real `streamer.metrics.StreamerMetrics` registers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

DASHBOARD = Path("docker/grafana/dashboards/k2-streamer.json")
DATASOURCES = Path("docker/grafana/provisioning/datasources/prometheus.yml")
PROVIDERS = Path("docker/grafana/provisioning/dashboards/k2.yml")

# Exported names of the streamer metrics contract (team brief, "Cross-team contracts").
CONTRACT_METRICS = frozenset({
    "binance_ssl_verify_enabled", "binance_connection_rotations_total", "binance_connection_lifetime_seconds",
    "binance_pong_timeouts_total", "binance_last_pong_timestamp_seconds", "binance_pings_sent_total",
    "binance_reconnects_total", "binance_connection_status", "binance_last_message_timestamp_seconds",
    "binance_message_errors_total", "binance_messages_received_total", "binance_sequence_gaps_total",
    "binance_missing_messages_total", "binance_duplicates_dropped_total", "serializer_cache_size",
    "serializer_cache_evictions_total", "kafka_messages_produced_total", "kafka_produce_errors_total",
    "kafka_producer_queue_messages", "process_memory_rss_bytes", "memory_leak_detection_score",
    "streamer_log_errors_total", "streamer_backpressure_active",
    # Latency histograms (issue 13), queried by their buckets, and the clock-skew count.
    "binance_event_to_ack_seconds_bucket", "binance_receive_to_ack_seconds_bucket", "binance_event_time_ahead_total",
})

# What the issue asks the dashboard to show, and a metric that shows each.
REQUIRED_PANELS = {
    "RSS": "process_memory_rss_bytes",
    "leak score": "memory_leak_detection_score",
    "message rate": "binance_messages_received_total",
    "Kafka produce rate": "kafka_messages_produced_total",
    "rotations": "binance_connection_rotations_total",
    "pings": "binance_pings_sent_total",
    "reconnects": "binance_reconnects_total",
    "sequence gaps": "binance_sequence_gaps_total",
    "Kafka producer queue": "kafka_producer_queue_messages",
    "event -> ack latency": "binance_event_to_ack_seconds_bucket",
    "receive -> ack latency": "binance_receive_to_ack_seconds_bucket",
}

# Grafana's built-in interval variables, replaced by plain durations before promtool parses a query.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$__range_s": "3600"}

# ---- PromQL: the metric names a query selects -------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<open_brace>\{)
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)[a-zA-Z]*)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE)
# Keywords whose parenthesised argument is a list of label names, not an expression.
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}


def metric_names(query: str) -> set[str]:
    """Metric names selected by a (syntactically valid) PromQL query: bare selectors and __name__ matchers;
    function, aggregation and keyword names, label names and strings are not metric names."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(query) if m.lastgroup != "space"]
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "open_brace":
            depth_end = i + 1
            while tokens[depth_end][1] != "}":
                depth_end += 1
            inner = tokens[i + 1:depth_end]
            for j, (inner_kind, inner_text) in enumerate(inner):
                if inner_kind == "name" and inner_text == "__name__" and inner[j + 1][1] == "=":
                    names.add(json.loads(inner[j + 2][1]) if inner[j + 2][1][0] == '"' else inner[j + 2][1][1:-1])
            i = depth_end + 1
            continue
        if kind == "name":
            if text.lower() in _LABEL_LIST_KEYWORDS and following == "(":
                while tokens[i][1] != ")":
                    i += 1
            elif following.lower() in ("by", "without"):
                pass  # an aggregation written `sum by (...) (...)`: a selector is never followed by `by`
            elif following != "(" and text.lower() not in _KEYWORDS:
                names.add(text)
        i += 1
    return names


@pytest.mark.parametrize(("query", "expected"), [
    ('sum by (instance, symbol) (rate(binance_messages_received_total{instance=~"a|b"}[5m]))',
     {"binance_messages_received_total"}),
    ("time() - process_start_time_seconds offset 5m", {"process_start_time_seconds"}),
    ('{__name__="kafka_producer_queue_messages", job="x"} > 1e3', {"kafka_producer_queue_messages"}),
    ("a_total / on(instance) group_left(topic) b and c unless sum(d) without (le) or bool_x",
     {"a_total", "b", "c", "d", "bool_x"}),
    ("histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m])))", {"x_bucket"}),
    ("max_over_time(up[1h:5m]) > Inf", {"up"}),
    ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
])
def test_metric_names_extracts_selected_metrics_only(query: str, expected: set[str]) -> None:
    assert metric_names(query) == expected


# ---- the provisioning and the dashboard ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard(repo_root: Path) -> dict[str, Any]:
    return json.loads((repo_root / DASHBOARD).read_text())


@pytest.fixture(scope="module")
def datasource(repo_root: Path) -> dict[str, Any]:
    sources = yaml.safe_load((repo_root / DATASOURCES).read_text())["datasources"]
    assert len(sources) == 1
    return sources[0]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # collapsed rows hold their panels
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable (label_values(<selector>, label))."""
    result = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            result.append((f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*[a-zA-Z_]\w*\)", query.strip())
            assert match, f"variable {variable['name']}: use label_values(<selector>, <label>), got {query!r}"
            result.append((f"variable {variable['name']}", match.group(1)))
    return result


def substitute_grafana_variables(query: str, dashboard: dict[str, Any]) -> str:
    for macro, value in sorted(GRAFANA_MACROS.items(), key=lambda item: -len(item[0])):
        query = query.replace(macro, value)
    for variable in dashboard.get("templating", {}).get("list", []):
        query = query.replace("${" + variable["name"] + "}", ".*").replace("$" + variable["name"], ".*")
    assert "$" not in query.replace('"$1"', ""), f"unknown Grafana variable left in {query!r}"
    return query


def test_provisioning_points_grafana_at_the_stacks_prometheus(datasource: dict[str, Any], compose: Any) -> None:
    assert datasource["type"] == "prometheus"
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", datasource["url"])
    assert match and match.group(1) == "prometheus", datasource["url"]
    assert any(container == int(match.group(2)) for _, _, container in compose.published_ports("prometheus"))


def test_dashboard_provider_loads_the_dashboard_folder(repo_root: Path, compose: Any) -> None:
    assert compose.host_path("grafana", "/etc/grafana/provisioning/dashboards/k2.yml") == repo_root / PROVIDERS
    assert compose.host_path("grafana", "/etc/grafana/provisioning/datasources/prometheus.yml") == (
        repo_root / DATASOURCES
    )
    providers = yaml.safe_load((repo_root / PROVIDERS).read_text())["providers"]
    folders = [compose.host_path("grafana", p["options"]["path"]) for p in providers if p["type"] == "file"]
    assert (repo_root / DASHBOARD).parent in folders, f"no provider reads {DASHBOARD.parent} (got {folders})"


def test_dashboard_uses_only_the_provisioned_datasource(dashboard: dict[str, Any],
                                                         datasource: dict[str, Any]) -> None:
    assert dashboard["uid"] == "k2-streamer" and dashboard["title"]
    refs = [panel.get("datasource") for panel in panels(dashboard) if panel["type"] != "row"]
    refs += [t.get("datasource") for panel in panels(dashboard) for t in panel.get("targets", [])]
    refs += [v.get("datasource") for v in dashboard.get("templating", {}).get("list", []) if v["type"] == "query"]
    assert refs and all(ref == {"type": "prometheus", "uid": datasource["uid"]} for ref in refs), refs


def test_dashboard_layout_is_consistent(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} leaves the 24 columns"
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} queries nothing"


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced) as the expression of a recording rule."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make setup` installs it"
    rules = [{"record": f"k2_dashboard:query_{n}", "expr": substitute_grafana_variables(query, dashboard)}
             for n, (_, query) in enumerate(queries(dashboard))]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout + done.stderr


def registered_metric_names() -> set[str]:
    """Exported names of every metric the real StreamerMetrics registers (also families without samples yet)."""
    from streamer.integrity import SequenceTracker
    from streamer.metrics import StreamerMetrics

    registry = StreamerMetrics("blue", SequenceTracker()).registry
    names = {m.name + "_total" if m.type == "counter" else m.name for m in registry.collect()}
    return names | {f"{m.name}_{suffix}" for m in registry.collect() if m.type == "histogram"
                    for suffix in ("bucket", "sum", "count")}


def process_collector_names() -> set[str]:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return {m.name + "_total" if m.type == "counter" else m.name for m in registry.collect()}


def test_dashboard_queries_only_metrics_the_streamer_exports(dashboard: dict[str, Any]) -> None:
    allowed = CONTRACT_METRICS | process_collector_names()
    assert "process_start_time_seconds" in allowed
    registered = registered_metric_names()
    missing_in_streamer = CONTRACT_METRICS - registered
    assert not missing_in_streamer, f"streamer/metrics.py does not register {sorted(missing_in_streamer)}"
    used: set[str] = set()
    for where, query in queries(dashboard):
        names = metric_names(query)
        assert names, f"{where}: selects no metric: {query!r}"
        not_exported = names - allowed
        assert not not_exported, f"{where} queries {sorted(not_exported)}, not streamer metrics: {query!r}"
        assert names <= registered, f"{where}: {sorted(names - registered)} not registered by the streamer"
        used |= names
    for topic, metric in REQUIRED_PANELS.items():
        assert metric in used, f"no panel shows {topic} ({metric})"
