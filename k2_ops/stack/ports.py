"""Listening ports for the services the project starts, without races between choosing and binding.

A port is chosen here and bound later by another process (Kafka, Prometheus, the simulator, a streamer).
Choosing by "bind, close, hand over" leaves a gap in which a second chooser, in this process or another, can
pick the same port; one of the two services then fails with "address already in use". So:

- **One ledger per machine and user.** Every chosen port is written down (a file named after the port,
  holding the chooser's PID and start time) under an exclusive lock, and no chooser on this machine hands out
  a port whose entry belongs to a live process. Ports stay taken for the chooser's whole life (a service that
  restarts keeps its port, and nobody else takes it meanwhile); a dead chooser's entries are taken over.
- **Below the kernel's ephemeral range.** The kernel hands ports of that range to outgoing connections (Kafka
  clients, replica fetchers, browsers) without asking the ledger; below it only listeners take ports.
- **A port taken anyway** (by a program that does not use the ledger) makes the service exit with "address
  in use": `start_on_fresh_ports` sees that in its log, chooses again and restarts it, a bounded number of
  times, each logged.

Invariants: `allocate_port()` never returns a port that another live holder recorded, or that something
listens on at that moment; an entry is written before the port is returned.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

# Listening ports are picked from here up to the start of the kernel's ephemeral range.
LISTEN_PORT_FLOOR = 10_000
# How often a service whose port was taken before it bound is started again on fresh ports.
START_ATTEMPTS = 4
# A ledger with more entries than this is swept of dead holders' entries at the next allocation.
SWEEP_ABOVE = 2_000

# What each kind of service prints when its listening port is taken: Python and Go ("address already in
# use"), glibc's strerror ("Address already in use": nginx, the JVM's BindException), Quarkus.
_PORT_IN_USE = re.compile(r"address already in use|port \d+ seems to be in use", re.IGNORECASE)


class PortError(RuntimeError):
    """No port could be allocated."""


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (net.ipv4.ip_local_port_range; Linux default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _process_start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name (field 2) may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def default_ledger_dir() -> Path:
    """K2_PORT_LEDGER_DIR, else one folder per user in the system's temporary folder."""
    configured = os.environ.get("K2_PORT_LEDGER_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"k2-ports-{os.getuid()}"


@dataclass(frozen=True)
class PortLedger:
    """Ports in [low, high) handed out on this machine, one entry file per port under `directory`."""

    directory: Path
    low: int
    high: int
    attempts: int = 200

    @classmethod
    def default(cls) -> PortLedger:
        low, _ = ephemeral_port_range()
        if low - LISTEN_PORT_FLOOR < 1_000:  # a kernel configured with almost no room below its range
            return cls(default_ledger_dir(), 1_024, low)
        return cls(default_ledger_dir(), LISTEN_PORT_FLOOR, low)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_uid != os.getuid():
            raise PortError(f"port ledger {self.directory} belongs to another user (set K2_PORT_LEDGER_DIR)")
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_holder(self, entry: Path) -> int | None:
        """The PID holding this entry's port, if that process still lives (the same one: start time too)."""
        try:
            pid_text, ticks_text = entry.read_text().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (OSError, ValueError):
            return None  # missing or half-written by a chooser that died: free
        return pid if _process_start_ticks(pid) == ticks else None

    def _sweep(self) -> None:
        for entry in self.directory.iterdir():
            if entry.name.isdigit() and self._live_holder(entry) is None:
                entry.unlink(missing_ok=True)

    def allocate(self, host: str = "127.0.0.1") -> int:
        """A port no live holder recorded and nothing listens on now, recorded for this process."""
        me = os.getpid()
        ticks = _process_start_ticks(me)
        with self._locked():
            if sum(1 for _ in self.directory.iterdir()) > SWEEP_ABOVE:
                self._sweep()
            for _ in range(self.attempts):
                port = random.randrange(self.low, self.high)
                entry = self.directory / str(port)
                if self._live_holder(entry) is not None or not _bindable(host, port):
                    continue
                entry.write_text(f"{me} {ticks}\n")
                return port
        raise PortError(f"no free port in {self.low}..{self.high - 1} after {self.attempts} tries "
                        f"(ledger {self.directory})")

    def holders(self) -> dict[int, int]:
        """port -> PID of every entry whose holder lives (for status and tests)."""
        held = {int(entry.name): self._live_holder(entry) for entry in self.directory.glob("[0-9]*")}
        return {port: pid for port, pid in held.items() if pid is not None}


def allocate_port(host: str = "127.0.0.1") -> int:
    """A listening port for a service this process is about to start (see the module docstring)."""
    return PortLedger.default().allocate(host)


def port_in_use(text: str) -> bool:
    """Whether a service's error or log tail says its listening port was taken."""
    return _PORT_IN_USE.search(text) is not None


T = TypeVar("T")


def start_on_fresh_ports(name: str, start: Callable[[], T], choose_again: Callable[[], bool],
                         attempts: int = START_ATTEMPTS) -> T:
    """`start()`; when it fails because a port was taken and `choose_again()` could give the service new
    ports (False: the ports were the caller's, keep the error), start again, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception as exc:
            if attempt == attempts or not port_in_use(str(exc)) or not choose_again():
                raise
            log.warning("%s: a port it was given was taken before it could listen; starting it again on "
                        "fresh ports (attempt %d of %d)", name, attempt + 1, attempts)
    raise AssertionError("unreachable")
