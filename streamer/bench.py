"""End-to-end benchmark: simulator → streamer (pinned to one core) → Kafka. Prints, never asserts.

    .venv/bin/python -m streamer.bench [--bootstrap HOST:PORT] [--seconds 8] [--start-rate 2000] [--streams trade]

The simulator runs in a child process pinned to CPU 0, the streamer (`python -m streamer`, with its Kafka
client threads) pinned to CPU 1; Kafka is started here unless --bootstrap names one. The offered trade rate
doubles each step until the streamer stops keeping up (received < 95 % of generated, or back-pressure).
Per step: generated and received messages per second, the streamer's CPU time per message (user + system,
all its threads) and its RSS. 1e6 / (CPU µs per message) is the rate one core can sustain.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _simulator(symbols: tuple[str, ...], conn: Any) -> None:
    _pin(0)
    from k2_ops.simulator import BackgroundSimulator, SimulatorConfig

    config = SimulatorConfig(symbols=symbols, rate_per_symbol=1.0, control_port=None, server_ping_interval_s=None,
                             max_incoming_per_s=None, max_send_buffer_bytes=512 * 1024 * 1024)
    with BackgroundSimulator(config) as sim:
        conn.send((sim.ws_base_url, str(sim.ca_file)))
        while True:
            command, arg = conn.recv()
            if command == "rate":
                sim.set_rate(arg)
                conn.send(None)
            elif command == "generated":
                conn.send(sum(len(sim.generated_ids(s)) for s in symbols))
            else:
                return


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start a Kafka here)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring window per step")
    parser.add_argument("--start-rate", type=float, default=2000.0, help="first offered total trade rate (msg/s)")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--symbols", default="btcusdt,ethusdt")
    args = parser.parse_args(argv)
    symbols = tuple(args.symbols.split(","))
    kafka = None
    if args.bootstrap is None:
        from k2_ops.stack import KafkaService

        kafka = KafkaService(Path(tempfile.mkdtemp(prefix="k2-bench-")), name="kafka-bench")
        kafka.start()
        bootstrap = kafka.bootstrap_servers
    else:
        bootstrap = args.bootstrap
    parent, child = mp.Pipe()
    sim_process = mp.get_context("spawn").Process(target=_simulator, args=(symbols, child), daemon=True)
    sim_process.start()
    ws_url, ca_file = parent.recv()
    from k2_ops.stack import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({
        "K2_BINANCE_WS_URL": ws_url + "/stream", "K2_SSL_CA_FILE": ca_file, "K2_BINANCE_SYMBOLS": ",".join(symbols),
        "K2_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "K2_KAFKA_TOPIC_PREFIX": f"bench.{uuid.uuid4().hex[:8]}",
        "K2_SCHEMA_REGISTRY_URL": "mock://bench", "K2_METRICS_PORT": str(port), "K2_LOG_LEVEL": "WARNING",
        "K2_MEMORY_SAMPLE_INTERVAL_SECONDS": "5",
    })
    streamer = subprocess.Popen([sys.executable, "-m", "streamer"], env=env, preexec_fn=lambda: _pin(1))
    results: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("streamer not ready within 60 s")
            time.sleep(0.2)
        process = psutil.Process(streamer.pid)
        rate = args.start_rate
        for _ in range(args.max_steps):
            parent.send(("rate", rate / len(symbols)))
            parent.recv()
            time.sleep(2.0)  # let the new rate settle before measuring
            parent.send(("generated", None))
            gen0 = parent.recv()
            m0, cpu0, t0 = _metrics(port), process.cpu_times(), time.monotonic()
            time.sleep(args.seconds)
            parent.send(("generated", None))
            gen1 = parent.recv()
            m1, cpu1, t1 = _metrics(port), process.cpu_times(), time.monotonic()
            elapsed = t1 - t0
            received = m1["binance_messages_received_total"] - m0["binance_messages_received_total"]
            produced = m1["kafka_messages_produced_total"] - m0["kafka_messages_produced_total"]
            cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            step = {
                "offered_msg_s": rate,
                "generated_msg_s": round((gen1 - gen0) / elapsed),
                "received_msg_s": round(received / elapsed),
                "produced_msg_s": round(produced / elapsed),
                "cpu_core_share": round(cpu / elapsed, 3),
                "cpu_us_per_msg": round(cpu / received * 1e6, 1) if received else None,
                "rss_mb": round(process.memory_info().rss / 2**20, 1),
                "backpressure": m1.get("streamer_backpressure_active", 0.0),
            }
            results.append(step)
            print(json.dumps(step), flush=True)
            if received < 0.95 * (gen1 - gen0) or step["backpressure"] or step["cpu_core_share"] > 0.97:
                break
            rate *= 2
    finally:
        streamer.terminate()
        streamer.wait(60)
        parent.send(("stop", None))
        sim_process.join(15)
        if kafka is not None:
            kafka.stop()
    best = max(results, key=lambda r: r["received_msg_s"]) if results else {}
    per_msg = [r["cpu_us_per_msg"] for r in results if r["cpu_us_per_msg"]]
    print(json.dumps({"best_received_msg_s": best.get("received_msg_s"),
                      "cpu_us_per_msg_at_best": best.get("cpu_us_per_msg"),
                      "one_core_capacity_msg_s": round(1e6 / min(per_msg)) if per_msg else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
