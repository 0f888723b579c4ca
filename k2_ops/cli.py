"""`k2`: the ops command line. Each area registers its own subcommands (see COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import importlib
import sys

from k2_ops import __version__

# Each module exposes `register(subparsers)` adding its subcommands; a subcommand sets `func(args) -> int`.
COMMAND_MODULES = [
    "k2_ops.fetch",
    "k2_ops.platform.cli",
    "k2_ops.deploy.cli",
    "k2_ops.docs.config_reference",
    "k2_ops.validation.cli",
    "k2_ops.simulator.cli",
    "k2_ops.bench.cli",
    "k2_ops.images.cli",
    "k2_ops.books",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2", description="K2 Ops command line")
    parser.add_argument("--version", action="version", version=f"k2 {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
