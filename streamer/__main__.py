"""`python -m streamer` / `k2-streamer`: load and validate the config, then run until SIGTERM/SIGINT.

The streamer is configured by its environment (`K2_*` settings) and an optional YAML file (`K2_CONFIG_FILE`),
not by arguments: the command line takes only `--help` and `--version`, and refuses anything else (exit 2)
rather than start with an argument silently ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from streamer import __version__
from streamer.config import ConfigError, load_config

DESCRIPTION = (
    "Binance -> Kafka market-data streamer. Configured by K2_* environment variables and an optional YAML file "
    "named by K2_CONFIG_FILE (environment wins); every setting, its default and range: docs/configuration.md or "
    "`k2 config-reference`. Runs until SIGTERM or Ctrl-C, then flushes Kafka and exits 0. Exit 2: a setting is "
    "invalid (the message names it and its allowed range). Exit 1: it could not start serving (its HTTP port is taken: "
    "the log says which)."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k2-streamer", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"k2-streamer {__version__}")
    parser.parse_args(sys.argv[1:] if argv is None else argv)  # --help/--version exit here; others exit 2
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"k2-streamer: configuration error: {exc}", file=sys.stderr)
        return 2
    from streamer.app import run

    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
