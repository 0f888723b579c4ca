"""`k2 run` (what `make run` starts): the stack comes up in the foreground, prints URLs, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2_ops.stack import wait_until
from k2_ops.stack.local import running_services, stop_all
from k2_ops.stack.process import pid_alive, read_pid_file


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """The stack's run folder; after the test (and its assertions) whatever a failed run left behind is stopped
    by its PID files, so a failure does not leak services into the rest of the suite."""
    folder = tmp_path / "run"
    yield folder
    stop_all(folder, grace_s=5)


@pytest.mark.slow
def test_run_prints_urls_and_ctrl_c_leaves_no_process(run_dir: Path) -> None:
    """`k2 run` as a user runs it: the whole stack (Kafka, registry, Prometheus, Alertmanager, simulator,
    streamer, Dagster: ~25 s to start), then Ctrl-C and a check that every process is gone."""
    process = subprocess.Popen(
        [sys.executable, "-m", "k2_ops.cli", "run", "--run-dir", str(run_dir), "--scrape-interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Press Ctrl-C" in line for line in output), 240, "k2 run reports the stack is up",
                   abort=lambda: None if process.poll() is None else f"exited {process.returncode}: {output}")
        text = "".join(output)
        services = ("kafka", "schema-registry", "alertmanager", "prometheus", "simulator", "streamer", "dagster")
        for name in services:
            assert f"  {name}" in text
        assert "http://127.0.0.1:" in text
        pids = {path.stem: read_pid_file(path) for path in run_dir.glob("*.pid")}
        assert set(pids) == {*services[:-2], "streamer-blue", "dagster"}
        assert all(pid_alive(*recorded) for recorded in pids.values())
        status = subprocess.run([sys.executable, "-m", "k2_ops.cli", "stack", "status", "--run-dir", str(run_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == len(services)

        # A deployment from the running stack replaces blue with green; status follows the active color.
        deploy = subprocess.run(
            [sys.executable, "-m", "k2_ops.cli", "deploy", "run", "--run-dir", str(run_dir), "--mode", "handover",
             "--dual-operation-seconds", "2", "--validation-seconds", "2"],
            capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        wait_until(lambda: not pid_alive(*pids["streamer-blue"]), 60, "blue stopped after the cutover")
        status = subprocess.run([sys.executable, "-m", "k2_ops.cli", "stack", "status", "--run-dir", str(run_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout
        streamer_row = next(line for line in status.stdout.splitlines() if line.startswith("streamer"))
        green_url = json.loads((run_dir / "deploy" / "instance-green.json").read_text())["base_url"]
        assert "healthy" in streamer_row and green_url in streamer_row
        pids["streamer-green"] = read_pid_file(run_dir / "streamer-green.pid")
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    reader.join(timeout=5)
    assert "stopped." in "".join(output)
    assert not any(pid_alive(*recorded) for recorded in pids.values())
    assert running_services(run_dir) == []


@pytest.mark.slow
def test_ctrl_c_during_start_up_stops_what_was_started(run_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "k2_ops.cli", "run", "--run-dir", str(run_dir), "--core-only"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Kafka is the first service: its PID file exists from its launch, long before it is ready.
        wait_until(lambda: read_pid_file(run_dir / "kafka.pid"), 60, "Kafka launched", interval_s=0.05)
        kafka = read_pid_file(run_dir / "kafka.pid")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == 130, output
    assert "interrupted during start-up" in output
    assert "Press Ctrl-C" not in output  # it never reported the stack up
    assert kafka is not None and not pid_alive(*kafka)
    assert running_services(run_dir) == [] and not (run_dir / "stack.json").exists()
