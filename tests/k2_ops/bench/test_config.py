"""Benchmark settings: validated with messages naming the setting; the command line maps onto them."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pytest

from k2_ops.bench.cli import config_from_args, register
from k2_ops.bench.config import BenchConfig, BenchConfigError, quick
from k2_ops.bench.machine import source_revision
from k2_ops.bench.phases import log_times
from k2_ops.paths import REPO_ROOT


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"repeats": 0}, "repeats"),
        ({"window_s": 0.0}, "window_s"),
        ({"memory_warmup_s": 200.0, "memory_s": 100.0}, "memory_warmup_s"),
        ({"rotation_lifetime_s": 0.1}, "rotation_lifetime_s"),
        ({"latency_rates": ()}, "latency_rates"),
        ({"latency_lingers_s": (2.0,)}, "latency_lingers_s"),
        ({"streams": ("trade", "kline")}, "streams"),
        ({"client_cpu": 64}, "client_cpu"),
        ({"repair_gaps": 0}, "repair_gaps"),
        ({"book_symbols": 20_000}, "book_symbols"),
        ({"streams": ("bookTicker", "depth")}, "streams"),
    ],
)
def test_bad_settings_are_refused_by_name(changes: dict[str, object], named: str) -> None:
    with pytest.raises(BenchConfigError, match=named):
        BenchConfig(**changes)  # type: ignore[arg-type]


def test_quick_is_small_and_keeps_every_phase() -> None:
    full, small = BenchConfig(), quick()
    assert small.quick and small.repeats == 1
    assert small.memory_s < full.memory_s and small.window_s < full.window_s and small.rotations < full.rotations
    assert small.latency_rates and small.latency_lingers_s


def test_command_line_maps_to_settings(tmp_path: object) -> None:
    config = config_from_args(parse("--quick", "--latency-rates", "500,2000", "--latency-lingers", "none",
                                    "--kafka-cpu", "none", "--rotations", "5", "--memory-seconds", "9",
                                    "--repair-gaps", "7", "--book-symbols", "300"))
    assert config.quick and config.latency_rates == (500.0, 2000.0) and config.latency_lingers_s == ()
    assert config.kafka_cpu is None and config.rotations == 5 and config.memory_s == 9.0
    assert config.repair_gaps == 7 and config.book_symbols == 300
    assert config_from_args(parse("--no-pin")).pin is False
    with pytest.raises(BenchConfigError, match="latency-rates"):
        config_from_args(parse("--latency-rates", "fast"))
    with pytest.raises(BenchConfigError, match="kafka-cpu"):
        config_from_args(parse("--kafka-cpu", "first"))


def test_only_a_full_run_of_this_checkout_writes_the_published_table(tmp_path: Path) -> None:
    full = config_from_args(parse())
    docs = REPO_ROOT / "docs"
    assert (full.out_json, full.out_markdown) == (docs / "performance.json", docs / "performance.md")
    small = config_from_args(parse("--quick", "--work-dir", str(tmp_path)))
    quick_dir = tmp_path / "quick"
    assert (small.out_json, small.out_markdown) == (quick_dir / "performance.json", quick_dir / "performance.md")
    before = config_from_args(parse("--streamer-source", str(REPO_ROOT), "--work-dir", str(tmp_path)))
    assert before.out_json == tmp_path / "other-source/performance.json"
    chosen = config_from_args(parse("--quick", "--json", str(tmp_path / "q.json")))
    assert chosen.out_json == tmp_path / "q.json"


def test_the_measured_revision_is_recorded(tmp_path: Path) -> None:
    assert source_revision(tmp_path) == "unknown (not a git checkout)"
    if (REPO_ROOT / ".git").exists():
        sha = source_revision(REPO_ROOT).removesuffix("+dirty")
        assert len(sha) >= 7 and all(c in "0123456789abcdef" for c in sha)


def test_log_times_reads_the_streamer_log_format() -> None:
    # The streamer's format (streamer/app.py setup_logging): asctime first, milliseconds after a comma.
    formatter = logging.Formatter("%(asctime)s %(levelname)s [blue] %(name)s: %(message)s")
    record = logging.LogRecord("streamer.source", logging.WARNING, __file__, 1,
                               "connection #3: no market data for 2.00 s (health timeout)", None, None)
    record.created = time.time()
    record.msecs = int(record.created * 1000) % 1000
    lines = ["noise", formatter.format(record), "2026-01-01 00:00:00,000 INFO [blue] x: other"]
    times = log_times("\n".join(lines), "(health timeout)")
    assert len(times) == 1 and times[0] == pytest.approx(record.created, abs=0.0011)
