"""`python -m streamer` / `k2-streamer`: load and validate the config, then run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import sys

from streamer.config import ConfigError, load_config


def main() -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"k2-streamer: configuration error: {exc}", file=sys.stderr)
        return 2
    from streamer.app import run

    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
