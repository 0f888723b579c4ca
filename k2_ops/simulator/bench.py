"""Measure the simulator's maximum message rate over TLS with the simulator pinned to one core.

    .venv/bin/python -m k2_ops.simulator.bench [--seconds 3] [--connections 1] [--uvloop]

The simulator runs in a child process pinned to CPU 0; a lean reader (blocking TLS socket, counts frames
from their headers, so it is not the bottleneck) runs here pinned to CPU 1. The offered rate doubles
each step until the delivered rate stops keeping up; the best delivered rate is the answer. Numbers are
printed, never asserted: speed depends on the machine.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from .certs import client_ssl_context

STREAMS = ("trade", "aggTrade", "bookTicker", "depth@100ms")


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _simulator_process(rate: float, symbols: tuple[str, ...], uvloop: bool, conn: Any) -> None:
    _pin(0)
    from .background import BackgroundSimulator
    from .config import SimulatorConfig

    config = SimulatorConfig(
        symbols=symbols,
        rate_per_symbol=rate,
        control_port=None,
        server_ping_interval_s=None,
        max_incoming_per_s=None,
        max_send_buffer_bytes=512 * 1024 * 1024,
        use_uvloop=uvloop,
    )
    with BackgroundSimulator(config) as sim:
        conn.send((sim.port, str(sim.ca_file)))
        while conn.recv() == "status":
            conn.send((sum(sim.status()["generated"].values()), time.process_time()))


def _open(port: int, ca_file: str, path: str) -> ssl.SSLSocket:
    context = client_ssl_context(ca_file)
    raw = socket.create_connection(("127.0.0.1", port))
    sock = context.wrap_socket(raw, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("handshake failed: connection closed")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake failed: {head[:60]!r}")
    sock.pending_bytes = head.split(b"\r\n\r\n", 1)[1]  # type: ignore[attr-defined]
    return sock


@dataclass
class Counter:
    frames: int = 0
    bytes: int = 0
    stop: bool = False


def _count_frames(sock: ssl.SSLSocket, counter: Counter) -> None:
    buf = sock.pending_bytes  # type: ignore[attr-defined]
    sock.settimeout(0.5)
    while not counter.stop:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        i, n, frames = 0, len(buf), 0
        while n - i >= 2:
            length = buf[i + 1] & 0x7F
            head = 2
            if length == 126:
                if n - i < 4:
                    break
                length, head = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if n - i < 10:
                    break
                length, head = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if n - i < head + length:
                break
            i += head + length
            frames += 1
        counter.frames += frames
        counter.bytes += i
        buf = buf[i:]


@dataclass(frozen=True)
class Step:
    rate_per_symbol: float
    generated_per_s: float  # messages the simulator produced (every stream is subscribed)
    delivered_per_s: float  # messages that reached the reader, all connections together
    connections: int = 1
    simulator_cpu: float = 0.0  # CPU seconds the simulator process used per second of the window

    @property
    def per_cpu_second(self) -> float:
        """Delivered messages per CPU second of the simulator: its rate on one dedicated core."""
        return self.delivered_per_s / self.simulator_cpu if self.simulator_cpu else 0.0

    def kept_up(self, messages_per_trade: float) -> bool:
        """Generated what was offered (no time lost to overload) and delivered all of it."""
        offered = self.rate_per_symbol * messages_per_trade
        return (
            self.generated_per_s >= 0.95 * offered
            and self.delivered_per_s >= 0.97 * self.generated_per_s * self.connections
        )


def measure(rate: float, seconds: float, connections: int, symbols: tuple[str, ...], uvloop: bool) -> Step:
    """One offered trade rate: generated and delivered messages per second over a measured window."""
    _pin(1)
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_simulator_process, args=(rate, symbols, uvloop, child))
    proc.start()
    try:
        port, ca_file = parent.recv()
        path = "/stream?streams=" + "/".join(f"{s}@{k}" for s in symbols for k in STREAMS)
        counters = []
        for _ in range(connections):
            counter = Counter()
            sock = _open(port, ca_file, path)
            threading.Thread(target=_count_frames, args=(sock, counter), daemon=True).start()
            counters.append(counter)
        time.sleep(1.0)  # warm-up: not measured
        parent.send("status")
        generated_start, cpu_start = parent.recv()
        delivered_start = sum(c.frames for c in counters)
        start = time.perf_counter()
        time.sleep(seconds)
        parent.send("status")
        generated_end, cpu_end = parent.recv()
        delivered_end = sum(c.frames for c in counters)
        elapsed = time.perf_counter() - start
        for counter in counters:
            counter.stop = True
        parent.send("stop")
        return Step(
            rate,
            (generated_end - generated_start) / elapsed,
            (delivered_end - delivered_start) / elapsed,
            connections,
            (cpu_end - cpu_start) / elapsed,
        )
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()


def find_max_rate(
    seconds: float, connections: int, symbols: tuple[str, ...], uvloop: bool, start_rate: float = 4_000.0
) -> tuple[list[Step], float]:
    """Raise the offered rate by half each step until the simulator stops keeping up.

    Returns the steps and the messages per trade (all streams, all symbols) seen at the first step.
    """
    steps: list[Step] = []
    rate = start_rate
    per_trade = 0.0
    while True:
        step = measure(rate, seconds, connections, symbols, uvloop)
        steps.append(step)
        per_trade = per_trade or step.generated_per_s / rate
        kept_up = step.kept_up(per_trade)
        print(
            f"trades/s per symbol {rate:>8.0f}  generated msg/s {step.generated_per_s:>9.0f}  "
            f"delivered msg/s {step.delivered_per_s:>9.0f}  simulator CPU {step.simulator_cpu:4.0%}  "
            f"msg per CPU-s {step.per_cpu_second:>9.0f}  {'kept up' if kept_up else 'FELL BEHIND'}",
            flush=True,
        )
        if not kept_up or len(steps) >= 12:
            return steps, per_trade
        rate *= 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k2_ops.simulator.bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--symbols", default="btcusdt")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    symbols = tuple(args.symbols.split(","))
    steps, per_trade = find_max_rate(args.seconds, args.connections, symbols, args.uvloop)
    kept = [s.delivered_per_s for s in steps if s.kept_up(per_trade)]
    best = max(kept) if kept else 0.0
    capacity = max(s.per_cpu_second for s in steps)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"max sustained rate over TLS ({loop}, {args.connections} connection(s)): {best:,.0f} msg/s")
    print(f"delivered per simulator CPU-second (one dedicated core): {capacity:,.0f} msg/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
