"""`k2 deploy ...` and `k2 rollback` against real services, found through the run folder's stack.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2_ops.cli import main
from k2_ops.deploy.cli import parse_settings
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.settings import DeploySettings
from k2_ops.stack.process import wait_until


def test_parse_settings() -> None:
    assert parse_settings(["K2_LOG_LEVEL=DEBUG", "K2_BINANCE_SYMBOLS=a,b"]) == {
        "K2_LOG_LEVEL": "DEBUG", "K2_BINANCE_SYMBOLS": "a,b"}
    with pytest.raises(SystemExit, match="expected K2_NAME=VALUE"):
        parse_settings(["LOG_LEVEL"])


def test_without_a_stack_the_cli_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "status", "--run-dir", str(tmp_path)]) == 2
    assert "error: no local stack state in" in capsys.readouterr().out
    assert main(["rollback", "--run-dir", str(tmp_path)]) == 1
    assert "ROLLBACK FAILED: no local stack state" in capsys.readouterr().out


@pytest.fixture
def run_dir(tmp_path: Path, kafka, deploy_simulator) -> Iterator[Path]:
    """A run folder as `make run` leaves it for the deploy commands: stack.json with the session's Kafka and
    the simulator, and the simulator's CA. Both colors are stopped afterwards."""
    folder = tmp_path / "run"
    (folder / "simulator").mkdir(parents=True)
    shutil.copy(deploy_simulator.ca_file, folder / "simulator" / "ca.pem")
    (folder / "stack.json").write_text(json.dumps({"services": {
        "kafka": {"url": f"kafka://{kafka.bootstrap_servers}"}, "simulator": {"url": deploy_simulator.ws_base_url}}}))
    yield folder
    backend = DeploySettings(run_dir=str(folder)).make_backend()
    for color in ("blue", "green"):
        backend.stop(color, 10.0)


@pytest.mark.slow
def test_start_deploy_status_rollback_history(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--run-dir", str(run_dir), "--topic-prefix", f"clitest.{uuid.uuid4().hex[:8]}"]
    assert main(["deploy", "start", *common]) == 0
    assert main(["deploy", "run", *common, "--mode", "handover", "--dual-operation-seconds", "2",
                 "--validation-seconds", "2", "--set", "K2_LOG_LEVEL=DEBUG", "--progress-interval-seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    # Progress while the windows are watched: elapsed / window, time left, each color's rate, gaps so far.
    assert re.search(r"dual_operation: \d+ / 2 s, \d+ s left; blue \d+\.\d msg/s, green \d+\.\d msg/s; "
                     r"sequence gaps so far: blue 0, green 0", out), out
    assert re.search(r"validate_target: \d+ / 2 s, \d+ s left; green \d+\.\d msg/s; sequence gaps so far: green 0",
                     out), out
    # The handover went through the token both colors got from the deploy folder (made once, owner-only),
    # and no log of the run holds it.
    token_file = run_dir / "deploy" / "handover.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert not [p for p in run_dir.rglob("*.log") if token in p.read_text(errors="replace")]
    assert main(["deploy", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "active color: green" in out
    assert "green: running" in out and "blue: stopped" in out
    assert main(["deploy", "status", "--json", *common]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["active_color"] == "green"
    assert status["colors"]["green"]["state"] == "running" and status["colors"]["green"]["ready"] is True
    assert status["colors"]["blue"]["state"] == "stopped"
    assert main(["rollback", *common]) == 0
    assert "active color blue after" in capsys.readouterr().out
    assert main(["deploy", "history", *common]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[5] for line in lines] == ["succeeded", "manual_rollback"]
    assert main(["deploy", "history", "--json", *common]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["active_color"]) for r in records] == [("succeeded", "green"), ("manual_rollback", "blue")]
    assert [len(r["switches"]) for r in records] == [1, 1]
    assert [r.active_color for r in DeploymentHistory(run_dir / "deploy" / "history.jsonl").records()] == [
        "green", "blue"]


@pytest.mark.slow
def test_streamer_service_for_make_run(run_dir: Path) -> None:
    from k2_ops.deploy.service import StreamerService

    service = StreamerService(str(run_dir), topic_prefix=f"svctest.{uuid.uuid4().hex[:8]}")
    try:
        assert service.start() > 0
        status = service.status()
        assert status == {"name": "streamer-blue", "url": service.url, "ready": True}
        assert (run_dir / "streamer-blue.pid").is_file()
        assert (run_dir / "prometheus" / "targets" / "streamer-blue.json").is_file()
    finally:
        service.stop()
    assert not (run_dir / "streamer-blue.pid").exists()
    assert service.status()["ready"] is False


@pytest.mark.slow
def test_sigterm_during_a_deploy_rolls_back(run_dir: Path) -> None:
    common = ["--run-dir", str(run_dir), "--topic-prefix", f"clitest.{uuid.uuid4().hex[:8]}"]
    backend = DeploySettings(run_dir=str(run_dir)).make_backend()
    assert main(["deploy", "start", *common]) == 0
    deploy = subprocess.Popen(
        [sys.executable, "-m", "k2_ops.cli", "deploy", "run", *common, "--mode", "dual",
         "--dual-operation-seconds", "600"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(deploy.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # Green streams beside blue: the deploy is in its (long) dual operation.
        wait_until(lambda: any(line.startswith("dual_operation: ") for line in lines), 120,
                   "the deploy in its dual operation", interval_s=0.2)
        deploy.send_signal(signal.SIGTERM)
        deploy.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    output = "".join(lines)
    assert deploy.returncode == 130, output
    assert "DEPLOYMENT INTERRUPTED" in output and "rolled_back, active color blue" in output
    record = DeploymentHistory(run_dir / "deploy" / "history.jsonl").last()
    assert record is not None and (record.status, record.active_color) == ("rolled_back", "blue")
    assert record.reason.startswith("dual_operation: interrupted")
    assert backend.is_running("blue") and not backend.is_running("green")
