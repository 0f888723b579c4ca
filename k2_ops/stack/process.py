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
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from k2_ops.polling import poll_until
from k2_ops.stack.ports import allocate_port, port_in_use, start_on_fresh_ports

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not start, become ready, or stop."""


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on TCP `port` (not some other process that took the port)."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def wait_listening(name: str, pid: int, port: int, exit_reason: Callable[[], str | None],
                   timeout_s: float = 60.0) -> None:
    """Until the process `pid` we started listens on `port`; ServiceError with its exit reason when it exits
    first (a port taken before it bound says "address already in use" there)."""
    wait_until(lambda: listens_on(pid, port), timeout_s, f"{name} listening on port {port}", interval_s=0.05,
               abort=exit_reason)


def launch_on_port(name: str, launch: Callable[[int], tuple[int, Callable[[], str | None]]], port: int = 0,
                   timeout_s: float = 60.0) -> int:
    """Start a program of ours that listens on one port, and return that port: `launch(port)` starts it and
    returns (pid, its exit reason). `port` 0 means one from the ledger, chosen again (and the program started
    again) when it exits because the port was taken meanwhile; a given port is kept. Any other failure (a
    bad setting, a slow start) is left to the caller's own readiness wait, as if this had only started it."""
    chosen = port or allocate_port()

    def start_once() -> None:
        pid, exit_reason = launch(chosen)
        try:
            wait_listening(name, pid, chosen, exit_reason, timeout_s)
        except ServiceError as exc:
            if port_in_use(str(exc)):
                raise

    def choose_again() -> bool:
        nonlocal chosen
        if port:
            return False
        chosen = allocate_port()
        return True

    start_on_fresh_ports(name, start_once, choose_again)
    return chosen


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
    _log_offset: int = field(default=0, init=False, repr=False)

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
        self._log_offset = log_file.tell()  # the log is appended to across starts: this run's part begins here
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
        """The last lines this run of the process wrote (the whole log for one we did not start)."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                text = log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def request_stop(self) -> None:
        """SIGTERM without waiting (stop several services at once, then `stop()` each to wait)."""
        pid = self._proc.pid if self._proc is not None else self.recorded_pid()
        if pid is not None and self.is_running():
            _signal_group(pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the service's process group at once, and wait until the process is gone."""
        pid = self._proc.pid if self._proc is not None else self.recorded_pid()
        if pid is None or not self.is_running():
            return
        _signal_group(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=10)
        else:
            wait_until(lambda: not self.is_running(), 10, f"{self.name} gone after SIGKILL", interval_s=0.05)

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
    group: int | None
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
    `health_url`, `is_ready()` and `start()` (which calls `_launch`).

    Ports: `_allocate_ports("port", ...)` in `__post_init__` gives each named attribute left at 0 a port from
    the machine's ledger (k2_ops.stack.ports) and remembers it; when the process then exits because such a
    port was taken after all, `_launch` chooses those ports again and starts it anew. A port the caller gave
    is never changed: its conflict is the caller's error to see."""

    name: str
    run_dir: Path
    ready_timeout_s: float
    _process: ManagedProcess | None = None
    _allocated: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def _allocate_ports(self, *attributes: str) -> None:
        for attribute in attributes:
            if not getattr(self, attribute):
                setattr(self, attribute, allocate_port())
                self._allocated = (*self._allocated, attribute)

    def _allocate_again(self) -> bool:
        """New ports for the attributes this object allocated; False when it allocated none."""
        for attribute in self._allocated:
            setattr(self, attribute, allocate_port())
        return bool(self._allocated)

    def _launch(
        self,
        command: Callable[[], Sequence[str]],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stop_grace_s: float = 15.0,
        interval_s: float = 0.2,
    ) -> None:
        """Start `command()` (built for the current ports) and wait until ready; again on fresh ports when a
        port was taken before the service bound it."""

        def start_once() -> None:
            process = self._process = ManagedProcess(self.name, command(), self.run_dir, env=env, cwd=cwd,
                                                     stop_grace_s=stop_grace_s)
            process.start()

            def failed() -> str | None:
                # Some programs keep running when one of their listeners could not bind (`dagster dev`
                # when its webserver's port is taken): their log says so, and waiting longer would not help.
                if (reason := process.exit_reason()) is not None:
                    return reason
                tail = process.log_tail()
                return f"a port was taken; last log lines:\n{tail}" if port_in_use(tail) else None

            try:
                wait_until(self.is_ready, self.ready_timeout_s, f"{self.name} on {self.url}", interval_s=interval_s,
                           abort=failed)
            except ServiceError:
                process.stop()  # exited, or never ready: whatever is left of it goes before a new start
                raise

        start_on_fresh_ports(self.name, start_once, self._allocate_again)

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
