"""`k2 bench` stops what it started when it is told to stop: SIGTERM (as from a CI runner or `kill`) during a
run leaves no Kafka, simulator or streamer behind, and the command says it was interrupted (exit 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from k2_ops.paths import REPO_ROOT


def test_sigterm_stops_the_kafka_and_everything_else_the_bench_started(tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    with log.open("wb") as out:
        bench = subprocess.Popen(
            [sys.executable, "-m", "k2_ops.cli", "bench", "--quick", "--json", str(tmp_path / "bench.json"),
             "--markdown", str(tmp_path / "bench.md"), "--work-dir", str(tmp_path / "work")],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while "phase 1+2" not in log.read_text(errors="replace"):  # Kafka and the simulator are up
            assert bench.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the bench did not start its phases within 120 s"
            time.sleep(0.2)
        started = psutil.Process(bench.pid).children(recursive=True)
        assert any("kafka.Kafka" in " ".join(p.cmdline()) for p in started), [p.cmdline() for p in started]
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=90) == 130
        assert "interrupted; what it started is stopped" in log.read_text(errors="replace")
        _, alive = psutil.wait_procs(started, timeout=30)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for process in started:  # a failed run of this test leaves nothing behind either
            if process.is_running():
                process.kill()
