"""`k2 simulator` runs standalone, prints the URL and the CA path, and stops cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from k2_ops.simulator import client_ssl_context

PYTHON = sys.executable


def read_banner(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> dict[str, str]:
    """The 'key: value' lines printed at start-up, up to 'Press Ctrl-C to stop.'."""
    assert proc.stdout is not None
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"simulator exited early (code {proc.poll()})")
        if line.startswith("Press Ctrl-C"):
            return fields
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key] = value.strip()
    raise AssertionError("no start-up banner")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_standalone_run_prints_url_and_ca_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    proc = subprocess.Popen(
        [PYTHON, "-m", "k2_ops.cli", "simulator", "--symbols", "btcusdt,ethusdt", "--rate", "50",
         "--port", "0", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        banner = read_banner(proc)
        assert banner["url"].startswith("wss://localhost:")
        assert Path(banner["ca"]) == tmp_path / "ca.pem" and Path(banner["ca"]).is_file()
        assert banner["control"].startswith("http://127.0.0.1:")

        async def first_trade() -> dict[str, object]:
            url = f"{banner['url']}/stream?streams=ethusdt@trade"
            async with connect(url, ssl=client_ssl_context(banner["ca"])) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 10))

        assert asyncio.run(first_trade())["stream"] == "ethusdt@trade"
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping" in out


def test_bad_setting_is_named_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "k2_ops.simulator", "--symbols", "BTCUSDT", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "SimulatorConfig.symbols" in result.stderr


def test_registered_in_the_k2_command_line() -> None:
    from k2_ops.cli import build_parser

    args = build_parser().parse_args(
        ["simulator", "--replay", "x.gz", "--speed", "0", "--no-tls", "--ping-interval", "off"]
    )
    assert args.replay == "x.gz" and args.speed == 0 and args.no_tls and args.ping_interval is None
    assert callable(args.func)


def test_synthetic_symbols_make_a_whole_market_and_long_urls_can_be_allowed() -> None:
    import argparse

    from k2_ops.simulator.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--symbols", "btcusdt", "--synthetic-symbols", "2000"]))
    assert len(config.symbols) == 2001 and config.symbols[:3] == ("btcusdt", "s0000usdt", "s0001usdt")
    assert config.symbols[-1] == "s1999usdt" and config.max_url_chars == 8000
    assert config_from_args(parser.parse_args(["--max-url-chars", "off"])).max_url_chars is None
