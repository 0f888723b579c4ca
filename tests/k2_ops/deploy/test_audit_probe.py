from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from k2_ops.deploy import probe
from k2_ops.deploy.audit import audit_ids
from k2_ops.deploy.handover import release_gaps
from k2_ops.deploy.model import DeploymentError


def test_audit_counts_duplicates_and_gaps_per_symbol() -> None:
    pairs = [("btcusdt", i) for i in range(100, 110)] + [("btcusdt", 105), ("btcusdt", 106)]
    pairs += [("ethusdt", i) for i in (7, 8, 10, 11, 15)]
    audit = audit_ids(pairs)
    btc, eth = audit.symbols["btcusdt"], audit.symbols["ethusdt"]
    assert (btc.messages, btc.unique, btc.duplicates, btc.missing, btc.gaps) == (12, 10, 2, 0, 0)
    assert (btc.first_id, btc.last_id) == (100, 109)
    assert (eth.duplicates, eth.missing, eth.gaps) == (0, 4, 2)
    assert (audit.messages, audit.duplicates, audit.missing, audit.gaps) == (17, 2, 4, 2)
    assert audit.to_dict()["symbols"]["ethusdt"]["missing"] == 4
    assert audit_ids([]).messages == 0


def test_release_gaps() -> None:
    report = {
        "mode": "active",
        "streams": {
            "btcusdt@trade": {"after": 10, "dropped": 3, "first_produced": 11, "produced": 5, "gap": 0},
            "ethusdt@trade": {"after": 20, "dropped": 0, "first_produced": 24, "produced": 2, "gap": 3},
        },
    }
    assert release_gaps(report) == {"ethusdt@trade": 3}


EXPOSITION = """\
# HELP binance_messages_received_total messages
# TYPE binance_messages_received_total counter
binance_messages_received_total{instance="green",stream="trade",symbol="btcusdt"} 120.0
binance_messages_received_total{instance="green",stream="trade",symbol="ethusdt"} 80.0
# HELP binance_reconnects_total reconnects
# TYPE binance_reconnects_total counter
binance_reconnects_total{instance="green",reason="error"} 1.0
# HELP process_memory_rss_bytes rss
# TYPE process_memory_rss_bytes gauge
process_memory_rss_bytes{instance="green"} 5.0e+07
"""


def test_parse_totals_sums_label_sets_and_defaults_missing_to_zero() -> None:
    totals = probe.parse_totals(EXPOSITION)
    assert totals[probe.RECEIVED] == 200.0
    assert totals[probe.RECONNECTS] == 1.0
    assert totals[probe.LOG_ERRORS] == 0.0


def test_rates_and_validation_problems() -> None:
    before = probe.MetricsSample(10.0, {probe.RECEIVED: 100.0, probe.RECONNECTS: 2.0})
    after = probe.MetricsSample(20.0, {probe.RECEIVED: 300.0, probe.RECONNECTS: 2.0, probe.LOG_ERRORS: 1.0})
    assert probe.rate(before, after, probe.RECEIVED) == 20.0
    assert probe.validation_problems(before, after, min_rate=10.0) == [
        "1 error log records (streamer_log_errors_total)"
    ]
    assert probe.validation_problems(before, after, min_rate=25.0)[0] == ("message rate 20.00 msg/s is below 25 msg/s")
    # A restarted process starts its counters again: its increase counts from zero.
    restarted = probe.MetricsSample(30.0, {probe.RECEIVED: 50.0})
    assert probe.increase(after, restarted, probe.RECEIVED) == 50.0
    assert probe.compare_rates(100.0, 80.0, 0.25) is None
    assert "below 75 %" in (probe.compare_rates(100.0, 70.0, 0.25) or "")


class _Readyz(BaseHTTPRequestHandler):
    ready = threading.Event()

    def do_GET(self) -> None:
        status = 200 if self.ready.is_set() else 503
        body = json.dumps({"ready": status == 200, "checks": {"connected": {"ok": status == 200}}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def readyz_server() -> Iterator[str]:
    _Readyz.ready.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_ready_polls_until_ready(readyz_server: str) -> None:
    timer = threading.Timer(0.5, _Readyz.ready.set)
    timer.start()
    seconds = probe.wait_ready(readyz_server, timeout_s=10.0, interval_s=0.05)
    assert seconds >= 0.4
    assert probe.read_readiness(readyz_server).ready


def test_wait_ready_deadline_reports_the_last_answer(readyz_server: str) -> None:
    with pytest.raises(DeploymentError, match=r"not ready within 0.3 s; last /readyz answered 503: .*connected"):
        probe.wait_ready(readyz_server, timeout_s=0.3, interval_s=0.05, what="green")


def test_wait_ready_stops_early_when_the_process_is_gone(readyz_server: str) -> None:
    with pytest.raises(DeploymentError, match="stopped before becoming ready: exited with code 2"):
        probe.wait_ready(readyz_server, timeout_s=30.0, interval_s=0.05, abort=lambda: "exited with code 2")


def test_unreachable_instance() -> None:
    from k2_ops.stack.ports import allocate_port

    readiness = probe.read_readiness(f"http://127.0.0.1:{allocate_port()}")
    assert not readiness.ready
    assert readiness.status is None
    assert "unreachable" in readiness.reason()


def test_a_streamer_readiness_answer_names_what_fails() -> None:
    body = {"ready": False, "checks": {
        "connected": {"ok": True, "reason": "connection #1 open"},
        "data_fresh": {"ok": False, "reason": "no data yet"},
        "kafka_reachable": {"ok": False, "reason": "no broker"},
    }}
    expected = "/readyz answered 503: data_fresh: no data yet; kafka_reachable: no broker"
    assert probe.Readiness(False, 503, body).reason() == expected
