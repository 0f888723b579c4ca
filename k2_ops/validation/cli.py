"""`k2 soak` and `k2 validate daily|weekly|monthly`.

Service addresses default to the running local stack (`<run>/stack.json`, written by `k2 stack up` /
`make run`); pass them explicitly for anything else. Exit codes: 0 every criterion passed, 1 a criterion
failed, 2 the run could not be done (bad option, service unreachable, streamer never ready).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from k2_ops.deploy.history import DeploymentHistory
from k2_ops.paths import run_dir
from k2_ops.stack.local import read_state
from k2_ops.validation import periods
from k2_ops.validation.checks import CheckResult
from k2_ops.validation.periods import PeriodResult
from k2_ops.validation.profiles import PRODUCTION, ProfileError, ValidationProfile, get_profile
from k2_ops.validation.soak import SOAK_TOPIC_PREFIX
from streamer.shards import Shard

if TYPE_CHECKING:
    from k2_ops.validation.prometheus import PrometheusClient

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class CliError(RuntimeError):
    pass


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    soak = subparsers.add_parser(
        "soak",
        help="soak a streamer: sample it for a duration, write the memory "
        "profile and report, evaluate the 24 h (or 12 h) criteria",
    )
    soak.add_argument("--profile", default="production", help="production, ci (240 s day) or compressed:<day s>")
    soak.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds to soak (default: 24 h, or 12 h with --criteria 12h, on the profile clock)",
    )
    soak.add_argument("--criteria", choices=("24h", "12h"), default="24h")
    soak.add_argument("--out", type=Path, default=None, help="output folder (default <run>/soak/<timestamp>)")
    soak.add_argument(
        "--attach",
        default=None,
        metavar="URL",
        help="sample a running streamer at this base or /metrics URL instead of starting one",
    )
    soak.add_argument(
        "--source",
        default="simulator",
        help="market source of a started streamer: 'simulator' (an exchange simulator started "
        "here) or a wss:// URL of combined streams (e.g. wss://stream.binance.com:9443/stream)",
    )
    soak.add_argument("--symbols", default="btcusdt,ethusdt")
    soak.add_argument("--rate", type=float, default=50.0, help="simulator trades per second per symbol")
    soak.add_argument("--ca-file", default=None, help="extra CA for a wss:// source")
    soak.add_argument("--kafka", default=None, help="Kafka bootstrap servers (default: the local stack's)")
    soak.add_argument(
        "--schema-registry", default=None, help="Schema Registry URL (default: the local stack's, else mock://soak)"
    )
    soak.add_argument("--topic-prefix", default=SOAK_TOPIC_PREFIX)
    soak.add_argument("--sample-interval", type=float, default=None, help="seconds between /metrics samples")
    soak.add_argument("--grace", type=float, default=None, help="seconds sampled beyond the duration")
    soak.add_argument("--instance", default="soak", help="K2_INSTANCE of the started streamer")
    soak.add_argument(
        "--leak-bytes-per-second",
        type=float,
        default=0.0,
        help="TEST ONLY: make the started streamer retain memory at this rate",
    )
    soak.add_argument(
        "--prometheus",
        default=None,
        help="also evaluate from this Prometheus (it must scrape the streamer with instance=<--instance>)",
    )
    soak.add_argument(
        "--env", action="append", default=[], metavar="K2_NAME=VALUE", help="extra streamer setting (repeatable)"
    )
    soak.add_argument("--run-dir", type=Path, default=None, help="local stack run folder (default .run)")
    soak.set_defaults(func=cmd_soak)

    validate = subparsers.add_parser(
        "validate", help="evaluate the daily, 7-day or 30-day criteria from Prometheus and write the report"
    )
    kinds = validate.add_subparsers(dest="period", required=True)
    for name, help_text in (
        ("daily", "the daily checks of one day"),
        ("weekly", "the 7-day validation: 7 daily checks and the report"),
        ("monthly", "the 30-day stability criteria"),
    ):
        parser = kinds.add_parser(name, help=help_text)
        parser.add_argument("--prometheus", default=None, help="Prometheus URL (default: the local stack's)")
        parser.add_argument(
            "--instance",
            default="",
            help="judge one streamer instance (color) alone; default: the active streamer, stitched across the "
            "deployments in the deployment history (--history)",
        )
        parser.add_argument(
            "--history",
            type=Path,
            default=None,
            help="deployment history (JSON lines) to stitch with; default: the local stack's "
            "(<run>/deploy/history.jsonl); without one, the active color is judged alone and the report says so",
        )
        parser.add_argument("--shards", type=int, default=1,
                            help="streamers splitting the market (K2_SHARD_COUNT): each shard is judged with its own "
                            "history, then the market in total (it passes when every shard passes)")
        parser.add_argument("--shard", type=int, default=None, help="judge this shard only (default: every shard)")
        parser.add_argument("--profile", default="production")
        parser.add_argument(
            "--start",
            default=None,
            help="first day: YYYY-MM-DD (UTC) or unix seconds; default: the last whole "
            "period before today (yesterday, the 7 days, the 30 days before today)",
        )
        parser.add_argument(
            "--scrape-interval",
            type=float,
            default=None,
            help="seconds between stored samples (default: Prometheus' configured scrape interval, else 15)",
        )
        parser.add_argument("--out", type=Path, default=None, help="report folder (default <run>/reports/...)")
        parser.add_argument("--run-dir", type=Path, default=None)
        parser.set_defaults(func=cmd_validate)


# --- helpers ------------------------------------------------------------------------------------------


def _stack_service_url(service: str, folder: Path | None) -> str | None:
    state = read_state(folder or run_dir())
    entry = (state or {}).get("services", {}).get(service)
    if entry is None:
        return None
    return str(entry["url"] if isinstance(entry, dict) else entry)


def _print_checks(checks: list[CheckResult]) -> None:
    width = max((len(check.name) for check in checks), default=10)
    for check in checks:
        print(
            f"  {'PASS' if check.passed else 'FAIL'}  {check.name:<{width}}  observed {check.observed_text():>14}"
            f"  threshold {check.threshold_text():<16}  {check.evidence}"
        )


def parse_start(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError as error:
        raise CliError(f"--start {text!r}: expected YYYY-MM-DD or unix seconds") from error


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("K2_"):
            raise CliError(f"--env {pair!r}: expected K2_NAME=VALUE")
        env[key] = value
    return env


@contextlib.contextmanager
def _source(args: argparse.Namespace, out_dir: Path) -> Iterator[dict[str, str]]:
    """The streamer's source settings; starts an exchange simulator for the run when asked."""
    if args.source != "simulator":
        if not args.source.startswith(("ws://", "wss://")):
            raise CliError(f"--source {args.source!r}: expected 'simulator' or a ws:// / wss:// URL")
        env = {"K2_BINANCE_WS_URL": args.source}
        if args.ca_file:
            env["K2_SSL_CA_FILE"] = args.ca_file
        yield env
        return
    from k2_ops.simulator import BackgroundSimulator, SimulatorConfig

    symbols = tuple(symbol.strip() for symbol in args.symbols.split(",") if symbol.strip())
    config = SimulatorConfig(symbols=symbols, rate_per_symbol=args.rate, workdir=out_dir / "simulator")
    with BackgroundSimulator(config) as simulator:
        print(f"soak: exchange simulator on {simulator.ws_base_url} ({args.rate:g} trades/s per symbol)")
        yield {"K2_BINANCE_WS_URL": f"{simulator.ws_base_url}/stream", "K2_SSL_CA_FILE": str(simulator.ca_file)}


# --- commands -----------------------------------------------------------------------------------------


def cmd_soak(args: argparse.Namespace) -> int:
    from k2_ops.validation.soak import SoakConfig, SoakError, SoakRunner

    try:
        profile = get_profile(args.profile)
        out_dir = args.out or (args.run_dir or run_dir()) / "soak" / time.strftime("%Y%m%d-%H%M%S")
        base = {
            "profile": profile,
            "out_dir": out_dir,
            "duration_seconds": args.duration,
            "criteria": args.criteria,
            "sample_interval_seconds": args.sample_interval,
            "grace_seconds": args.grace,
            "instance": args.instance,
            "leak_bytes_per_second": args.leak_bytes_per_second,
            "prometheus_url": args.prometheus,
        }
        if args.attach:
            result = SoakRunner(SoakConfig(**base, attach_url=args.attach)).run()
            return EXIT_PASSED if result.passed else EXIT_FAILED
        kafka = args.kafka or (_stack_service_url("kafka", args.run_dir) or "").removeprefix("kafka://")
        if not kafka:
            raise CliError("no Kafka: pass --kafka HOST:PORT or start the local stack (`k2 stack up`)")
        registry = args.schema_registry or _stack_service_url("schema-registry", args.run_dir) or "mock://soak"
        # The stack's Kafka security settings (file paths) when Kafka is the stack's; the Kafka client
        # settings of this environment reach the soak's streamer as well (SoakRunner passes them on).
        kafka_env = {} if args.kafka else _stack_kafka_client_env(args.run_dir)
        with _source(args, out_dir) as source_env:
            env = {
                **kafka_env,
                "K2_KAFKA_BOOTSTRAP_SERVERS": kafka,
                "K2_SCHEMA_REGISTRY_URL": registry,
                "K2_KAFKA_TOPIC_PREFIX": args.topic_prefix,
                "K2_BINANCE_SYMBOLS": args.symbols,
                **source_env,
                **_env_pairs(args.env),
            }
            result = SoakRunner(SoakConfig(**base, streamer_env=env)).run()
    except (CliError, ProfileError, SoakError) as error:
        print(f"k2 soak: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_PASSED if result.passed else EXIT_FAILED


def _stack_kafka_client_env(folder: Path | None) -> dict[str, str]:
    from k2_ops.deploy.settings import stack_kafka_client_env

    return stack_kafka_client_env(folder or "")


def _default_start(period: str, day_seconds: float) -> float:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = {"daily": 1, "weekly": 7, "monthly": 30}[period]
    return (today - timedelta(seconds=days * day_seconds)).timestamp()


def _history(args: argparse.Namespace, shard: Shard) -> DeploymentHistory:
    from k2_ops.deploy.settings import DeploySettings

    if args.history is not None:
        return DeploymentHistory(args.history)
    return DeploySettings(run_dir=str(args.run_dir or ""), shard_count=shard.count,
                          shard_index=shard.index).history()


def _shards(args: argparse.Namespace) -> list[Shard]:
    try:
        Shard(0, args.shards)  # the count's range
        chosen = ([Shard(index, args.shards) for index in range(args.shards)] if args.shard is None
                  else [Shard(args.shard, args.shards)])
    except ValueError as exc:
        raise CliError(f"--shards/--shard: {exc}") from None
    if args.history is not None and len(chosen) > 1:
        raise CliError("--history is one shard's history: give --shard too")
    return chosen


def _print_notes(result: PeriodResult, printed: str) -> None:
    """The period's deployments and notes, but not `printed` (the subject's note, shown once at the top) nor
    who was active on a day without a switch."""
    for deployment in result.deployments:
        print(f"  deployment: {deployment['text']}")
    for note in result.notes:
        if note != printed and not (note.startswith("active streamer:") and not result.switches):
            print(f"  note: {note}")


def cmd_validate(args: argparse.Namespace) -> int:
    from k2_ops.validation.prometheus import PrometheusClient, PrometheusError

    try:
        profile = get_profile(args.profile)
        url = args.prometheus or _stack_service_url("prometheus", args.run_dir)
        if not url:
            raise CliError("no Prometheus: pass --prometheus URL or start the local stack (`k2 stack up`)")
        client = PrometheusClient(url)
        # The stored data's resolution: as given, else what Prometheus scrapes at, else 15 s.
        scrape_interval = args.scrape_interval or client.scrape_interval() or 15.0
        start = parse_start(args.start) if args.start else _default_start(args.period, profile.day_seconds)
        judged: list[tuple[Shard, tuple[periods.PeriodResult, ...]]] = []
        for shard in _shards(args):
            subject = periods.Subject.from_history(_history(args, shard), args.instance, shard)
            judged.append((shard, _validate_subject(args, client, subject, start, profile, scrape_interval)))
    except (CliError, ProfileError, PrometheusError) as error:
        print(f"k2 validate: {error}", file=sys.stderr)
        return EXIT_ERROR
    total = periods.ShardedPeriod(tuple(judged))
    if len(judged) > 1:
        print(f"market in total ({len(judged)} shards): {'PASS' if total.passed else 'FAIL'}")
        for failure in total.failures():
            print(f"  {failure}")
    return EXIT_PASSED if total.passed else EXIT_FAILED


def _validate_subject(
    args: argparse.Namespace,
    client: PrometheusClient,
    subject: periods.Subject,
    start: float,
    profile: ValidationProfile,
    scrape_interval: float,
) -> tuple[periods.PeriodResult, ...]:
    """One subject's period: printed, its report written; returns its results in day order."""
    from k2_ops.reports import write_period_report

    label = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d") if profile is PRODUCTION else f"{start:.0f}"
    judged = args.instance or ("active" if subject.timeline is not None else subject.instance)
    if not subject.shard.whole_market:
        judged = f"shard{subject.shard.index}-{judged}"
    if args.out is None:
        out_dir = (args.run_dir or run_dir()) / "reports" / args.period / f"{label}-{judged}"
    else:  # several shards: a folder each
        out_dir = args.out if subject.shard.whole_market or args.shard is not None else (
            args.out / f"shard-{subject.shard.index}")
    if subject.note:
        print(f"note: {subject.note}")
    results: periods.PeriodResult | list[periods.PeriodResult]
    if args.period == "daily":
        results = periods.validate_day(
            client, start, profile=profile, instance=subject, scrape_interval=scrape_interval
        )
        print(f"daily validation {results.label} ({results.judged_text}): {'PASS' if results.passed else 'FAIL'}")
        _print_notes(results, subject.note)
        _print_checks(results.checks)
    elif args.period == "weekly":
        results = periods.validate_week(
            client, start, profile=profile, instance=subject, scrape_interval=scrape_interval
        )
        print(f"7-day validation ({results[0].judged_text})")
        for day in results:
            print(f"{day.label}: {'PASS' if day.passed else 'FAIL ' + ', '.join(day.failed())}")
            _print_notes(day, subject.note)
            _print_checks(day.checks)
    else:
        results = periods.validate_month(
            client, start, profile=profile, instance=subject, scrape_interval=scrape_interval
        )
        print(f"30-day stability {results.label} ({results.judged_text}): {'PASS' if results.passed else 'FAIL'}")
        _print_notes(results, subject.note)
        _print_checks(results.checks)
    files = write_period_report(args.period, results, out_dir)
    print(f"report: {files['html']} (also {files['markdown'].name}, {files['json'].name})")
    return tuple(results) if isinstance(results, list) else (results,)
