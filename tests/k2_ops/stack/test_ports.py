"""Listening ports without races: the machine-wide ledger (many processes choosing at once never get the same
port) and the fresh-port restart of a real service whose port was taken anyway."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from k2_ops.stack import AlertmanagerService, KafkaService, PrometheusService
from k2_ops.stack.apps import SimulatorProcess
from k2_ops.stack.ports import LISTEN_PORT_FLOOR, PortLedger, ephemeral_port_range, port_in_use
from k2_ops.stack.process import ManagedProcess, launch_on_port, listens_on
from k2_ops.stack.registry import SchemaRegistryService
from tests.streamer.conftest import REPO_ROOT

# A worker process: `stacks` times, choose `ports` ports (one "stack"), bind each after a short random delay
# (the gap between a service's choice and its bind), hold them all, then release them (the stack stops).
# "churn" workers instead bind and release single ports in a loop. Prints how many binds failed.
WORKER = """
import json, random, socket, sys, time
from pathlib import Path
from k2_ops.stack.ports import PortLedger
ledger = PortLedger(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
role, rounds, ports = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
failures, chosen = [], []
for _ in range(rounds):
    stack = [ledger.allocate() for _ in range(ports)]
    chosen += stack
    held = []
    for port in stack:
        time.sleep(random.uniform(0, 0.004))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Java, Go and asyncio listeners do
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError as exc:
            failures.append(f"{port}: {exc}")
            sock.close()
    time.sleep(0.02 if role == "stack" else 0)
    for sock in held:
        sock.close()
print(json.dumps({"failures": failures, "chosen": chosen}), flush=True)
sys.stdin.read()  # alive (its ports held) until every worker has reported
"""


def test_ports_lie_below_the_ephemeral_range_and_are_held_by_this_process(tmp_path: Path) -> None:
    """Outgoing connections take ports from the ephemeral range, so listeners are placed below it; every port
    handed out is recorded for its holder and never handed out again while the holder lives."""
    low, _ = ephemeral_port_range()
    default = PortLedger.default()
    assert (default.low, default.high) == (LISTEN_PORT_FLOOR, low)
    ledger = PortLedger(tmp_path / "ledger", default.low, default.high)
    ports = [ledger.allocate() for _ in range(50)]
    assert len(set(ports)) == 50 and all(LISTEN_PORT_FLOOR <= port < low for port in ports), sorted(ports)
    assert ledger.holders() == dict.fromkeys(ports, os.getpid())
    for port in ports:  # nothing listened on them when they were chosen
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_dead_holders_ports_are_taken_over_and_a_small_range_runs_out_plainly(tmp_path: Path) -> None:
    low = next(port for port in range(21_000, 22_000, 3) if all(_bindable(port + i) for i in range(3)))
    ledger = PortLedger(tmp_path / "ledger", low, low + 3, attempts=60)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from k2_ops.stack.ports import PortLedger; "
         "l = PortLedger(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])); "
         "print([l.allocate() for _ in range(3)])",
         str(ledger.directory), str(low), str(low + 3)], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert sorted(json.loads(child.stdout)) == [low, low + 1, low + 2]
    assert ledger.holders() == {}  # the child is gone: its entries no longer hold
    mine = sorted(ledger.allocate() for _ in range(3))
    assert mine == [low, low + 1, low + 2]
    with pytest.raises(RuntimeError, match=rf"no free port in {low}\.\.{low + 2}"):
        ledger.allocate()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_twenty_stacks_worth_of_ports_chosen_at_once_all_bind(tmp_path: Path) -> None:
    """8 processes start 3 stacks of 25 services each (600 ports, 20 stacks' worth at a time), each service
    binding a few milliseconds after its port was chosen, while 2 more processes bind and release ports in
    a loop, all in a range of 2,000 ports: every bind succeeds and no port is handed out twice. Choosing by
    bind-and-close (no ledger) fails here: ports chosen by two processes before either binds."""
    low = 20_000
    ledger_dir = tmp_path / "ledger"
    args = [str(ledger_dir), str(low), str(low + 2_000)]
    roles = [("stack", "3", "25")] * 8 + [("churn", "60", "1")] * 2
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, *args, *role], cwd=REPO_ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE) for role in roles]
    try:
        results = [json.loads(worker.stdout.readline()) for worker in workers]  # type: ignore[union-attr]
    finally:
        for worker in workers:
            worker.communicate(timeout=60)
    assert all(worker.returncode == 0 for worker in workers)
    failures = [failure for result in results for failure in result["failures"]]
    assert failures == [], f"{len(failures)} binds failed: {failures[:5]}"
    chosen = [port for result in results for port in result["chosen"]]
    assert len(chosen) == 8 * 3 * 25 + 2 * 60
    assert len(set(chosen)) == len(chosen), "a port was handed out twice"


def test_port_in_use_reads_each_services_own_words() -> None:
    # As each program says it (seen in their logs here): Python/uvicorn, Go, the JVM, Quarkus, nginx.
    assert port_in_use("OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 1): "
                       "address already in use")
    assert port_in_use('listen tcp 127.0.0.1:1: bind: address already in use')
    assert port_in_use("org.apache.kafka.common.KafkaException: Socket server failed to bind to "
                       "127.0.0.1:18916: Address already in use.")
    assert port_in_use("Port 8080 seems to be in use by another process. Quarkus may already be running")
    assert port_in_use('bind() to 127.0.0.1:1 failed (98: Address already in use)')
    assert not port_in_use("Connection refused")


@contextmanager
def squatting(port: int) -> Iterator[None]:
    """Another program (not on the ledger) listens on `port`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda run_dir: AlertmanagerService(run_dir),
    lambda run_dir: PrometheusService(run_dir),
    lambda run_dir: SimulatorProcess(run_dir),
    lambda run_dir: SchemaRegistryService(run_dir, default_compatibility=None),
    lambda run_dir: KafkaService(run_dir),
], ids=["alertmanager", "prometheus", "simulator", "schema-registry", "kafka"])
def test_a_service_whose_port_was_taken_meanwhile_starts_on_a_fresh_one(
    make: Callable[[Path], KafkaService | PrometheusService | AlertmanagerService | SimulatorProcess
                   | SchemaRegistryService],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The port chosen for the service is taken by a program that does not use the ledger before the service
    starts: the service fails to bind, is started again on a fresh port, and comes up there."""
    service = make(tmp_path)
    taken = service.port
    caplog.set_level(logging.WARNING, logger="k2_ops.stack.ports")
    try:
        with squatting(taken):
            service.start()
            assert service.port != taken and service.is_ready()
            assert str(service.port) in service.url
        assert "starting it again on fresh ports (attempt 2 of 4)" in caplog.text
    finally:
        service.stop()
    assert not service.is_running()


def test_a_given_port_is_kept_and_its_conflict_reported(tmp_path: Path) -> None:
    """A port the caller chose is not replaced behind their back: the bind failure is theirs to see."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        service = AlertmanagerService(tmp_path, port=port)
        with pytest.raises(RuntimeError, match="address already in use"):
            service.start()
    assert not service.is_running()


@pytest.mark.slow
def test_a_streamer_whose_port_was_taken_meanwhile_starts_on_a_fresh_one(tmp_path: Path) -> None:
    """The streamer says plainly that it cannot listen (exit 1, no traceback) and is started again on a
    fresh port; the first port stays with the program that took it."""
    squatters: list[socket.socket] = []
    processes: list[ManagedProcess] = []
    env = {"K2_BINANCE_SYMBOLS": "btcusdt", "K2_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "K2_SCHEMA_REGISTRY_URL": "mock://ports", "K2_BINANCE_WS_URL": "wss://127.0.0.1:9/stream"}

    def launch(port: int) -> tuple[int, Callable[[], str | None]]:
        if not squatters:  # the port is taken between its choice and the streamer's bind
            squatter = socket.socket()
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            squatters.append(squatter)
        process = ManagedProcess(f"streamer-{len(processes)}", [sys.executable, "-m", "streamer"], tmp_path,
                                 env={**env, "K2_METRICS_PORT": str(port)}, cwd=REPO_ROOT)
        processes.append(process)
        return process.start(), process.exit_reason

    try:
        port = launch_on_port("streamer", launch)
        first, second = processes
        taken = squatters[0].getsockname()[1]
        assert port != taken
        assert first.wait(10) == 1
        assert f"cannot listen on 127.0.0.1:{taken}" in first.log_tail() and "Traceback" not in first.log_tail()
        assert second.recorded_pid() is not None and listens_on(second.recorded_pid() or 0, port)
    finally:
        for process in processes:
            process.stop()
        for squatter in squatters:
            squatter.close()
