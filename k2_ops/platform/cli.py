"""`k2 run` (the local stack in the foreground, Ctrl-C stops it) and `k2 stack up|down|status`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from k2_ops.paths import run_dir
from k2_ops.platform.services import app_services, status_report
from k2_ops.stack.kafka import KafkaSecurity
from k2_ops.stack.local import LocalStack, StackAlreadyRunning, crashed_services, stop_all
from k2_ops.stack.process import ServiceError, signals_interrupt


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="start the local stack in the foreground; Ctrl-C stops all of it")
    _common(run)
    run.set_defaults(func=cmd_run)

    stack = subparsers.add_parser("stack", help="manage the local stack in the background")
    actions = stack.add_subparsers(dest="action", required=True)
    for name, func, help_text in (
        ("up", cmd_up, "start the stack and return"),
        ("down", cmd_down, "stop every service of the stack"),
        ("status", cmd_status, "show each service, its URL and health"),
    ):
        action = actions.add_parser(name, help=help_text)
        _common(action)
        action.set_defaults(func=func)
        if name == "status":
            action.add_argument("--json", action="store_true", help="one JSON object: {services: [...], healthy}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder (default: K2_RUN_DIR, else .run in K2_HOME or the current directory)")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--core-only", action="store_true",
                        help="only Kafka, Schema Registry, Prometheus, Alertmanager (no simulator, streamer, Dagster)")
    parser.add_argument("--no-dagster", action="store_true", help="everything but the Dagster UI")
    parser.add_argument("--kafka-brokers", type=int, choices=(1, 3), default=1,
                        help="Kafka nodes (KRaft, combined broker + controller); 3 = a quorum of three, topics "
                             "with replication 3 and min.insync.replicas 2 (default 1)")
    parser.add_argument("--kafka-security", choices=[s.value for s in KafkaSecurity], default="plaintext",
                        help="plaintext (default), sasl_ssl (SCRAM-SHA-512 over TLS, users created at format "
                             "time) or mtls (client certificates); certificates from a per-run test CA")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _start(args: argparse.Namespace) -> LocalStack:
    folder = args.run_dir or run_dir()
    extra = {} if args.core_only else app_services(folder, args.scrape_interval, with_dagster=not args.no_dagster)
    stack = LocalStack(folder, scrape_interval_s=args.scrape_interval, extra_services=extra,
                       kafka_brokers=args.kafka_brokers, kafka_security=KafkaSecurity(args.kafka_security))
    timings = stack.up()
    print("\nK2 Ops local stack is up:")
    for name, url in stack.urls().items():
        print(f"  {name:<16} {url}")
    print("start times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    print(f"logs and PID files: {stack.run_dir}")
    if stack.kafka.security is not KafkaSecurity.PLAINTEXT or stack.kafka.brokers > 1:
        print("Kafka client settings (files under the run folder; also in stack.json):")
        for name, value in stack.kafka.client_env().items():
            print(f"  {name}={value}")
    return stack


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging()
    # During start-up Ctrl-C (SIGINT) and SIGTERM interrupt at once: LocalStack.up stops what it started.
    try:
        with signals_interrupt(signal.SIGINT, signal.SIGTERM):
            stack = _start(args)
    except KeyboardInterrupt:
        print("k2 run: interrupted during start-up; every service it had started is stopped", file=sys.stderr)
        return 130
    except StackAlreadyRunning as exc:
        print(f"k2 run: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"k2 run: could not start the stack: {exc}", file=sys.stderr)
        return 1
    # Once up, both lead to an orderly stop of every service.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print("Press Ctrl-C to stop.")
    reported: set[str] = set()
    try:
        while not stop.wait(2.0):
            # A PID file whose process is gone means a crash (a deliberate stop removes the file): say so
            # once and keep the rest running; the service's log has the reason.
            for name in sorted(crashed_services(stack.run_dir) - reported):
                print(f"k2 run: {name} stopped unexpectedly; see {stack.run_dir / (name + '.log')}", file=sys.stderr)
                reported.add(name)
    finally:
        print("\nstopping the local stack ...")
        stack.down()
        print("stopped.")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        _start(args)
    except StackAlreadyRunning as exc:
        print(f"k2 stack up: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"k2 stack up: could not start the stack: {exc}", file=sys.stderr)
        return 1
    print("Stop it with `k2 stack down`.")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _setup_logging()
    stopped = stop_all(args.run_dir or run_dir())
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = status_report(args.run_dir or run_dir())
    if args.json:
        healthy = bool(rows) and all(row["healthy"] for row in rows)
        print(json.dumps({"running": bool(rows), "healthy": healthy, "services": rows}, indent=1))
        return 0 if healthy else 1
    if not rows:
        print("the local stack is not running")
        return 1
    for row in rows:
        state = "healthy" if row["healthy"] else ("running, not answering" if row["running"] else "stopped")
        print(f"{row['name']:<16} {state:<24} {row['url']}")
    return 0 if all(row["healthy"] for row in rows) else 1
