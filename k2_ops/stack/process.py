"""One supervised local service: started in its own process group, tracked by a PID file, stopped by PID.

Every service of the local stack (Kafka, Prometheus, Alertmanager, the simulator, streamers, Dagster) is a
`ManagedProcess`: logs go to `<run folder>/<name>.log`, the PID to `<run folder>/<name>.pid`, readiness is
polled with a deadline, and stop is SIGTERM then SIGKILL after a grace period, for that PID only.

A PID file holds "<pid> <start time>" (the kernel's start time of the process, in clock ticks since boot):
after a reboot or a long time, the PID may belong to an unrelated process, and only a matching start time
says it is still ours. A file with a bare PID (older runs) is trusted as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from k2_ops.polling import poll_until

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not start, become ready, or stop."""


# Listening ports are picked from here up to the start of the kernel's ephemeral range.
LISTEN_PORT_FLOOR = 10_000


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (net.ipv4.ip_local_port_range; Linux default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on loopback that nothing listens on right now, chosen below the kernel's ephemeral range.
    A port the kernel chose (bind to port 0) could be handed to an outgoing connection (a Kafka client, a
    broker's replica fetcher, a browser) between this choice and the service's own bind: that made a service
    fail with 'address already in use' now and then. Below the range only another listener can take it."""
    low, _ = ephemeral_port_range()
    if low - LISTEN_PORT_FLOOR >= 1_000:
        for _ in range(100):
            port = random.randrange(LISTEN_PORT_FLOOR, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below the range: the kernel's pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    description: str,
    interval_s: float = 0.1,
    abort: Callable[[], str | None] | None = None,
) -> float:
    """Poll `condition` until it holds; return the seconds it took. `abort` may return a reason to stop early."""
    start = time.monotonic()
    poll_until(condition, timeout_s, description, interval_s=interval_s, abort=abort, error=ServiceError)
    return time.monotonic() - start


def process_start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing ")".
    return int(stat.rpartition(")")[2].split()[19])


def terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """SIGTERM a child we started and wait for it; SIGKILL after `timeout_s`. True when it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return True


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_interrupt(*signums: int) -> Iterator[None]:
    """Within the block these signals (e.g. SIGTERM beside Ctrl-C) raise KeyboardInterrupt, so the code that
    runs can clean up on the way out; the previous handlers come back afterwards."""
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """`pid` runs and is not a zombie; with `start_ticks`, it is also the same process (not a reused PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        if start_ticks is None:
            return True
    # A process that exited but was not yet reaped by its parent (a zombie) is gone for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return start_ticks is None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def write_pid_file(path: Path, pid: int) -> None:
    start = process_start_ticks(pid)
    path.write_text(f"{pid} {start}\n" if start is not None else f"{pid}\n")


def read_pid_file(path: Path) -> tuple[int, int | None] | None:
    """(pid, start ticks or None) from a PID file; None when it is missing or not a PID file."""
    try:
        parts = path.read_text().split()
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ManagedProcess:
    name: str
    command: Sequence[str]
    run_dir: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    stop_grace_s: float = 15.0
    # What the log shows instead of `command` when the command line carries a secret.
    shown_command: Sequence[str] | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def recorded_pid(self) -> int | None:
        recorded = read_pid_file(self.pid_path)
        return recorded[0] if recorded is not None else None

    def is_running(self) -> bool:
        if self._proc is not None:
            # Our own child: poll() reaps it, so a finished process is never mistaken for a live zombie.
            return self._proc.poll() is None
        recorded = read_pid_file(self.pid_path)
        return recorded is not None and pid_alive(*recorded)

    def start(self) -> int:
        if self.is_running():
            raise ServiceError(f"{self.name} is already running (pid {self.recorded_pid()}, {self.pid_path})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        log_file = self.log_path.open("ab")
        shown = self.command if self.shown_command is None else self.shown_command
        log.info("starting %s: %s (log %s)", self.name, " ".join(shown), self.log_path)
        try:
            # A new session: Ctrl-C in the foreground terminal reaches only us, and we stop children in
            # order; the default SIGINT/SIGTERM dispositions let each service shut down on our SIGTERM.
            self._proc = subprocess.Popen(
                list(self.command),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                restore_signals=True,
            )
        except FileNotFoundError as exc:
            raise ServiceError(f"{self.name}: command not found: {self.command[0]} (run `make setup`)") from exc
        finally:
            log_file.close()
        write_pid_file(self.pid_path, self._proc.pid)
        return self._proc.pid

    def wait(self, timeout_s: float) -> int:
        """Wait for a process we started to end (a one-shot tool); returns its exit code."""
        if self._proc is None:
            raise ServiceError(f"{self.name} was not started by this process")
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"{self.name} did not finish within {timeout_s:.0f} s") from exc

    def exit_reason(self) -> str | None:
        """Why the process is gone, with the tail of its log, or None while it runs."""
        if self._proc is None or self._proc.poll() is None:
            return None
        return f"exited with code {self._proc.returncode}; last log lines:\n{self.log_tail()}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def request_stop(self) -> None:
        """SIGTERM without waiting (stop several services at once, then `stop()` each to wait)."""
        pid = self._proc.pid if self._proc is not None else self.recorded_pid()
        if pid is not None and self.is_running():
            _signal_group(pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM to the service's process group (it leads one: start_new_session), SIGKILL after the grace."""
        pid = self._proc.pid if self._proc is not None else self.recorded_pid()
        if pid is None or not self.is_running():
            self._proc = None
            self.pid_path.unlink(missing_ok=True)
            return
        log.info("stopping %s (pid %d)", self.name, pid)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        while self.is_running() and time.monotonic() < deadline:
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.05)
            else:
                time.sleep(0.05)
        if self.is_running():
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL", self.name, pid, self.stop_grace_s)
            _signal_group(pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(timeout=10)
        # Children the service left behind in its group (e.g. `dagster dev`'s webserver) go with it.
        _signal_group(pid, signal.SIGKILL, only_if_leader_gone=True)
        self._proc = None
        self.pid_path.unlink(missing_ok=True)


def _signal_group(pid: int, signum: int, only_if_leader_gone: bool = False) -> None:
    """Signal the process group led by `pid` (ours: started with start_new_session), else just `pid`."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        group = pid if only_if_leader_gone else None
    if only_if_leader_gone:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)
        return
    with contextlib.suppress(ProcessLookupError):
        if group == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


class SupervisedService:
    """What every service of the stack shares: one `ManagedProcess`, readiness polled with a deadline,
    stop by PID, and a status row. A service sets `name`, `run_dir`, `ready_timeout_s`, and defines `url`,
    `health_url`, `is_ready()` and `start()` (which calls `_launch`)."""

    name: str
    run_dir: Path
    ready_timeout_s: float
    _process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def _launch(
        self,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stop_grace_s: float = 15.0,
        interval_s: float = 0.2,
    ) -> None:
        self._process = ManagedProcess(self.name, command, self.run_dir, env=env, cwd=cwd, stop_grace_s=stop_grace_s)
        self._process.start()
        wait_until(self.is_ready, self.ready_timeout_s, f"{self.name} on {self.url}", interval_s=interval_s,
                   abort=self._process.exit_reason)

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def status(self) -> dict[str, object]:
        try:
            ready = self.is_ready()
        except Exception:
            ready = False
        return {"name": self.name, "url": self.url, "running": self.is_running(), "ready": ready}
