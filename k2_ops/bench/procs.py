"""The processes a benchmark runs: the simulator (child process, its own core), the floor client (child
process, the other core) and the streamer (`python -m streamer` subprocess, the other core).

Pinning: `os.sched_setaffinity(0, ...)` at the very start of a child, so every thread it starts later
inherits the CPU set; for a process that already runs threads (Kafka's JVM) every task is pinned.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from k2_ops.paths import REPO_ROOT
from k2_ops.polling import poll_until
from k2_ops.stack.process import launch_on_port, terminate

SPAWN = mp.get_context("spawn")


class BenchError(RuntimeError):
    """A benchmark process could not start or answer; the message says which and why."""


def pin_self(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def pin_process(pid: int, cpu: int) -> int:
    """Pin every thread of a running process to `cpu`; returns how many threads were pinned."""
    pinned = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.sched_setaffinity(int(task.name), {cpu})
            pinned += 1
    return pinned


def poll(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    """Poll until `condition()` is truthy and return it; BenchError naming `what` at the deadline."""
    return poll_until(condition, timeout_s, what, interval_s=interval_s, error=BenchError)


# ---- simulator ---------------------------------------------------------------------------------------


def _simulator_main(settings: dict[str, Any], cpu: int | None, conn: Any) -> None:
    pin_self(cpu)
    from k2_ops.simulator import BackgroundSimulator, SimulatorConfig

    try:
        sim = BackgroundSimulator(SimulatorConfig(**settings)).start()
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ok", (sim.ws_base_url, str(sim.ca_file))))
        while True:
            name, args = conn.recv()
            if name == "stop":
                return
            try:
                if name == "cpu_seconds":
                    times = os.times()
                    result: Any = times.user + times.system
                elif name == "generated_total":
                    result = sum(sim.status()["generated"].values())
                else:
                    result = getattr(sim, name)(*args)
                conn.send(("ok", result))
            except Exception as exc:
                conn.send(("error", f"{name}{args}: {type(exc).__name__}: {exc}"))
    finally:
        sim.stop()


class SimulatorProxy:
    """The exchange simulator in a child process (own core); `call(name, *args)` runs a
    BackgroundSimulator method there. Extra calls: `cpu_seconds` (the child's CPU time) and
    `generated_total` (messages generated so far, every stream)."""

    def __init__(self, settings: dict[str, Any], cpu: int | None) -> None:
        self.settings = settings
        self.cpu = cpu
        self._conn, child = SPAWN.Pipe()
        self._process = SPAWN.Process(target=_simulator_main, args=(settings, cpu, child), daemon=True,
                                      name="k2-bench-simulator")
        self.ws_base_url = ""
        self.ca_file = ""

    def start(self, timeout_s: float = 60.0) -> SimulatorProxy:
        self._process.start()
        if not self._conn.poll(timeout_s):
            raise BenchError(f"simulator did not start within {timeout_s} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise BenchError(f"simulator failed to start: {value}")
        self.ws_base_url, self.ca_file = value
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def call(self, name: str, *args: Any, timeout_s: float = 60.0) -> Any:
        self._conn.send((name, args))
        if not self._conn.poll(timeout_s):
            raise BenchError(f"simulator call {name}{args} did not answer within {timeout_s} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise BenchError(f"simulator call failed: {value}")
        return value

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("stop", ()))
            self._process.join(20)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


# ---- floor client ------------------------------------------------------------------------------------


def client_ssl_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.load_verify_locations(cafile=ca_file)
    return context


def _floor_main(url: str, ca_file: str, cpu: int | None, warmup_s: float, window_s: float, conn: Any) -> None:
    """websockets + json over verified TLS and nothing else: the least a Python reader can do per message.
    Sends ("start", None) when the measured window opens and ("ok", figures) when it closes."""
    pin_self(cpu)
    import asyncio
    import json

    from websockets.asyncio.client import connect

    async def main() -> dict[str, float]:
        count = 0
        ws = await connect(url, ssl=client_ssl_context(ca_file), compression=None, ping_interval=None,
                           max_size=16 << 20, max_queue=256)

        async def read() -> None:
            nonlocal count
            loads = json.loads
            async for raw in ws:
                loads(raw)
                count += 1

        reader = asyncio.create_task(read())
        await asyncio.sleep(warmup_s)
        conn.send(("start", None))
        c0, cpu0, t0 = count, time.process_time(), time.monotonic()
        await asyncio.sleep(window_s)
        c1, cpu1, t1 = count, time.process_time(), time.monotonic()
        reader.cancel()
        # No closing handshake: at full speed the server has a backlog queued for us, and a clean close
        # would wait behind it. The measurement is over.
        ws.transport.abort()
        return {"messages": c1 - c0, "cpu_s": cpu1 - cpu0, "elapsed_s": t1 - t0}

    try:
        conn.send(("ok", asyncio.run(main())))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def run_floor_client(
    url: str, ca_file: str, cpu: int | None, warmup_s: float, window_s: float,
    on_window: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """One floor measurement in a fresh child process: messages, CPU seconds and wall seconds of the window.
    `on_window("start")` / `on_window("end")` run when the child opens and closes its measured window."""
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(target=_floor_main, args=(url, ca_file, cpu, warmup_s, window_s, child), daemon=True,
                            name="k2-bench-floor")
    process.start()
    try:
        while True:
            if not parent.poll(warmup_s + window_s + 60):
                raise BenchError("floor client did not report")
            status, value = parent.recv()
            if status == "start":
                if on_window is not None:
                    on_window("start")
                continue
            if on_window is not None:
                on_window("end")
            if status != "ok":
                raise BenchError(f"floor client failed: {value}")
            return dict(value)
    finally:
        process.join(10)
        if process.is_alive():
            process.terminate()


# ---- streamer ----------------------------------------------------------------------------------------


def metric_totals(text: str) -> dict[str, float]:
    """Sum of every sample per exported name (labels summed), plus `name{label=value}` for label subsets
    callers ask for via `metric_value`."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            for key, value in sample.labels.items():
                if key == "instance":
                    continue
                name = f"{sample.name}{{{key}={value}}}"
                totals[name] = totals.get(name, 0.0) + sample.value
    return totals


@dataclass
class StreamerRun:
    """`python -m streamer` pinned to one CPU, talking to the simulator and Kafka; env from `streamer_env`."""

    name: str
    env: dict[str, str]
    log_path: Path
    cpu: int | None = None
    port: int = 0  # 0: one from the port ledger at start
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "streamer"])
    # Where `python -m streamer` runs: its directory comes first on sys.path, so its streamer/ is the one run.
    cwd: Path = REPO_ROOT
    proc: subprocess.Popen[bytes] | None = None
    _log_offset: int = field(default=0, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 90.0) -> StreamerRun:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cpu = self.cpu

        def launch(port: int) -> tuple[int, Callable[[], str | None]]:
            self.env["K2_METRICS_PORT"] = str(port)
            with self.log_path.open("ab") as log:
                self._log_offset = log.tell()
                self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, preexec_fn=lambda: pin_self(cpu))
            return self.proc.pid, self.exit_reason

        self.port = launch_on_port(f"streamer {self.name}", launch, self.port, timeout_s=ready_timeout_s)
        poll(self._ready, ready_timeout_s, f"streamer {self.name} ready on {self.base_url}", interval_s=0.1)
        return self

    def _ready(self) -> bool:
        """Connected and Kafka reachable. Not /readyz 200: that also needs market data, and the benchmark
        starts the traffic only once the streamer is ready for it."""
        self.assert_running()
        try:
            with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except OSError:
            return False
        try:
            checks = json.loads(body)["checks"]
            return bool(checks["connected"]["ok"] and checks["kafka_reachable"]["ok"])
        except (ValueError, KeyError, TypeError):
            return False

    def exit_reason(self) -> str | None:
        if self.proc is not None and self.proc.poll() is None:
            return None
        code = None if self.proc is None else self.proc.returncode
        return f"streamer {self.name} exited ({code}); log tail:\n{self.log_tail()}"

    def assert_running(self) -> None:
        if (reason := self.exit_reason()) is not None:
            raise BenchError(reason)

    @property
    def process(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.base_url + "/metrics", timeout=5) as response:
            return metric_totals(response.read().decode())

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread group: the event loop (main thread), other Python threads (Kafka poll
        thread with the delivery callbacks, executors) and librdkafka's own threads (rdk:*)."""
        assert self.proc is not None
        pid = self.proc.pid
        groups = {"event_loop": 0.0, "python_threads": 0.0, "librdkafka": 0.0}
        for thread in self.process.threads():
            seconds = thread.user_time + thread.system_time
            if thread.id == pid:
                groups["event_loop"] += seconds
                continue
            try:
                comm = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
            except OSError:
                comm = ""
            groups["librdkafka" if comm.startswith("rdk:") else "python_threads"] += seconds
        return groups

    def log_text(self) -> str:
        """What this start of the streamer logged (the file is appended to across starts)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the streamer flushes Kafka and logs its summary), SIGKILL if it does not exit."""
        if self.proc is None:
            return None
        terminate(self.proc, timeout_s)
        return self.proc.returncode
