"""`k2 deploy start|run|status|history` and `k2 rollback`: the blue-green deployment without Dagster.

The same `k2_ops.deploy` code the Dagster jobs run; settings come from the local stack (`.run/stack.json`)
unless given (`--backend compose` for production).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from k2_ops.deploy.model import COLORS, DEFAULT_IMAGE, MODES, DeployConfig, DeploymentError
from k2_ops.deploy.orchestrator import BlueGreenDeployment, DeploymentFailed
from k2_ops.deploy.probe import read_readiness
from k2_ops.deploy.settings import BACKENDS, DeploySettings
from k2_ops.stack.process import signals_interrupt


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = subparsers.add_parser("deploy", help="blue-green deployment of the streamer")
    actions = deploy.add_subparsers(dest="action", required=True)

    start = actions.add_parser("start", help="start one color (active) if it is not running")
    _common(start)
    start.add_argument("--color", choices=COLORS, default=None,
                       help="default: the active color (history; before any deployment the one that runs; blue)")
    start.add_argument("--image", default=DEFAULT_IMAGE)
    start.set_defaults(func=cmd_start)

    run = actions.add_parser("run", help="deploy the other color beside the active one, cut over, validate")
    _common(run)
    run.add_argument("--image", default=DEFAULT_IMAGE)
    run.add_argument("--mode", choices=MODES, default="dual")
    run.add_argument("--dual-operation-seconds", type=float, default=600.0)
    run.add_argument("--validation-seconds", type=float, default=900.0)
    run.add_argument("--ready-timeout-seconds", type=float, default=120.0)
    run.add_argument("--first-data-timeout-seconds", type=float, default=60.0)
    run.add_argument("--progress-interval-seconds", type=float, default=30.0,
                     help="a progress line this often while watching the dual-operation and validation windows")
    run.add_argument("--set", action="append", default=[], metavar="K2_NAME=VALUE",
                     help="a setting of the new version only (repeatable)")
    run.set_defaults(func=cmd_run)

    status = actions.add_parser("status", help="active color, instances and their /readyz")
    _common(status)
    status.add_argument("--json", action="store_true", help="one JSON object: active_color and each color's state")
    status.set_defaults(func=cmd_status)

    history = actions.add_parser("history", help="the last deployment records")
    _common(history)
    history.add_argument("--last", type=int, default=10)
    history.add_argument("--json", action="store_true", help="the records as a JSON list, oldest first")
    history.set_defaults(func=cmd_history)

    rollback = subparsers.add_parser("rollback", help="back to the previously active color, measured")
    _common(rollback)
    rollback.add_argument("--reason", default="manual rollback (k2 rollback)")
    rollback.set_defaults(func=cmd_rollback)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="process")
    parser.add_argument("--run-dir", type=Path, default=None, help="local stack run folder (default .run)")
    parser.add_argument("--topic-prefix", default="market.crypto.binance")
    parser.add_argument("--shards", type=int, default=1,
                        help="how many streamers split the market (K2_SHARD_COUNT; default 1: one covers it)")
    parser.add_argument("--shard", type=int, default=0, help="the shard this command acts on (0 .. shards-1)")


def _settings(args: argparse.Namespace) -> DeploySettings:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return DeploySettings(backend=args.backend, run_dir=str(args.run_dir or ""), topic_prefix=args.topic_prefix,
                              shard_count=args.shards, shard_index=args.shard)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def parse_settings(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("K2_"):
            raise SystemExit(f"--set {pair!r}: expected K2_NAME=VALUE")
        env[name] = value
    return env


def cmd_start(args: argparse.Namespace) -> int:
    orchestrator = _settings(args).orchestrator(print)
    color = args.color or orchestrator.active_color()
    started = orchestrator.ensure_running(color, DeployConfig(image=args.image, shard=args.shard))
    print(f"{color} {'started' if started else 'was already running'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = DeployConfig(
        image=args.image, mode=args.mode, dual_operation_seconds=args.dual_operation_seconds,
        validation_seconds=args.validation_seconds, ready_timeout_seconds=args.ready_timeout_seconds,
        first_data_timeout_seconds=args.first_data_timeout_seconds, target_env=parse_settings(args.set),
        progress_interval_seconds=args.progress_interval_seconds, shard=args.shard,
    )
    settings = _settings(args)
    try:
        # SIGTERM as well as Ctrl-C: the orchestrator rolls back before the program ends.
        with signals_interrupt(signal.SIGTERM):
            record = settings.orchestrator(print).run(config)
    except DeploymentFailed as failure:
        print(f"DEPLOYMENT FAILED: {failure}; {failure.record.status}, active color {failure.record.active_color}, "
              f"rollback {failure.record.rollback_seconds} s")
        return 1
    except KeyboardInterrupt:
        last = settings.history().last()
        print(f"DEPLOYMENT INTERRUPTED: {last.reason if last else ''}; {last.status if last else 'not recorded'}, "
              f"active color {last.active_color if last else '?'}")
        return 130
    print(json.dumps(record.to_dict(), indent=1, sort_keys=True))
    return 0


def deployment_status(settings: DeploySettings) -> dict[str, Any]:
    """The active color and, per color, whether it runs, where, which image, its readiness and mode (None: a
    color never started)."""
    backend = settings.make_backend()
    colors: dict[str, dict[str, Any] | None] = {}
    for color in COLORS:
        info = backend.instance(color)
        if info is None:
            colors[color] = None
            continue
        readiness = read_readiness(info.base_url)
        colors[color] = {
            "state": "running" if backend.is_running(color) else "stopped",
            "url": info.base_url,
            "image": info.image,
            "ready": readiness.ready,
            "reason": "" if readiness.ready else readiness.reason(),
            "mode": readiness.body.get("mode") if isinstance(readiness.body, dict) else None,
        }
    return {"active_color": BlueGreenDeployment(backend, settings.history()).active_color(), "colors": colors}


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = deployment_status(_settings(args))
    except (LookupError, DeploymentError) as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"error: {exc}")
        return 2
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"active color: {status['active_color']}")
    for color, item in status["colors"].items():
        if item is None:
            print(f"  {color}: never started")
            continue
        mode = f", {item['mode']}" if item["mode"] else ""
        print(f"  {color}: {item['state']}, {item['url']}, image {item['image']}, "
              f"{'ready' if item['ready'] else item['reason']}{mode}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    records = _settings(args).history().records()[-args.last:]
    if args.json:
        print(json.dumps([record.to_dict() for record in records], indent=1, sort_keys=True))
        return 0
    for record in records:
        when = datetime.fromtimestamp(record.finished_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rollback = f" rollback {record.rollback_seconds:.2f} s" if record.rollback_seconds is not None else ""
        print(f"{when} {record.deployment_id} {record.from_color}->{record.to_color} {record.mode} "
              f"{record.status}{rollback} {record.reason or ''}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        record = _settings(args).orchestrator(print).manual_rollback(DeployConfig(shard=args.shard),
                                                                         reason=args.reason)
    except Exception as exc:
        print(f"ROLLBACK FAILED: {exc}")
        return 1
    print(f"active color {record.active_color} after {record.rollback_seconds:.2f} s "
          f"({record.measurements['rollback']['method']})")
    return 0
