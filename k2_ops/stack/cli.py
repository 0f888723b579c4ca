"""`k2 run` (the local stack in the foreground, Ctrl-C stops it) and `k2 stack up|down|status`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from k2_ops.paths import run_dir
from k2_ops.stack.local import LocalStack, StackAlreadyRunning, status_report, stop_all
from k2_ops.stack.process import ServiceError


def register(subparsers: argparse._SubParsersAction) -> None:
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


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder (default: .run in the repository)")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, seconds")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _start(args: argparse.Namespace) -> LocalStack:
    stack = LocalStack(args.run_dir or run_dir(), scrape_interval_s=args.scrape_interval)
    timings = stack.up()
    print("\nK2 Ops local stack is up:")
    for name, url in stack.urls().items():
        print(f"  {name:<14} {url}")
    print("start times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    print(f"logs and PID files: {stack.run_dir}")
    return stack


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging()
    stop = threading.Event()
    # Ctrl-C (SIGINT) and SIGTERM both lead to an orderly stop of every service we started.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stack = _start(args)
    except StackAlreadyRunning as exc:
        print(f"k2 run: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"k2 run: could not start the stack: {exc}", file=sys.stderr)
        return 1
    print("Press Ctrl-C to stop.")
    try:
        while not stop.wait(2.0):
            dead = [row["name"] for row in status_report(stack.run_dir) if not row["running"]]
            if dead:
                print(f"k2 run: service(s) stopped unexpectedly: {', '.join(map(str, dead))}; "
                      f"see their logs in {stack.run_dir}", file=sys.stderr)
                stop.set()
                stack.down()
                return 1
    finally:
        if stop.is_set():
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
    if not rows:
        print("the local stack is not running")
        return 1
    for row in rows:
        state = "healthy" if row["healthy"] else ("running, not answering" if row["running"] else "stopped")
        print(f"{row['name']:<14} {state:<24} {row['url']}")
    return 0 if all(row["healthy"] for row in rows) else 1
