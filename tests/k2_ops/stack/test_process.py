"""PID files name the process they were written for: a PID reused by an unrelated process is never
signalled by `k2 stack down`, and the service reads as crashed instead of running."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2_ops.stack.local import crashed_services, running_services, stop_all
from k2_ops.stack.process import ManagedProcess, pid_alive, process_start_ticks, read_pid_file


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not ours to stop (stands in for whatever reuses a stale PID)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_a_started_service_records_its_pid_and_start_time(tmp_path: Path) -> None:
    service = ManagedProcess("sleeper", ["sleep", "60"], tmp_path, stop_grace_s=5)
    pid = service.start()
    try:
        assert read_pid_file(service.pid_path) == (pid, process_start_ticks(pid))
        assert service.is_running() and running_services(tmp_path) == ["sleeper"]
    finally:
        service.stop()
    assert not pid_alive(pid) and not service.pid_path.exists()


def test_a_reused_pid_is_neither_running_nor_stopped(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    start = process_start_ticks(bystander.pid)
    assert start is not None
    (tmp_path / "kafka.pid").write_text(f"{bystander.pid} {start - 1}\n")  # our Kafka's PID, now someone else's
    assert not pid_alive(bystander.pid, start - 1) and pid_alive(bystander.pid, start)
    assert running_services(tmp_path) == [] and crashed_services(tmp_path) == {"kafka"}

    assert stop_all(tmp_path, grace_s=1) == ["kafka"]
    assert bystander.poll() is None  # not signalled
    assert not (tmp_path / "kafka.pid").exists()


def test_a_bare_pid_file_from_an_older_run_is_trusted(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    (tmp_path / "kafka.pid").write_text(f"{bystander.pid}\n")
    assert read_pid_file(tmp_path / "kafka.pid") == (bystander.pid, None)
    assert running_services(tmp_path) == ["kafka"]


def test_unreadable_pid_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "kafka.pid").write_text("not a pid\n")
    assert read_pid_file(tmp_path / "kafka.pid") is None and read_pid_file(tmp_path / "absent.pid") is None
    assert running_services(tmp_path) == [] and crashed_services(tmp_path) == set()
