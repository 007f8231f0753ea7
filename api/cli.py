"""The `cityops` command line: one entry point, subcommands registered by each package.

Each package owns a `cli.py` with `register(subparsers)`; this module only composes them,
configures logging and turns configuration errors into a clear message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cityops.ingest.config import ConfigError

__all__ = ["build_parser", "main"]

# Modules whose `register(subparsers)` adds commands, in the order they appear in --help.
_COMMAND_MODULES = (
    "cityops.ingest.cli",
    "cityops.ingest.registry_cli",
    "cityops.simulators.cli",
    "cityops.roadworks.cli",
    "cityops.api.commands",
    "cityops.api.auth_cli",
    "cityops.simulators.demo",
    "cityops.routing.cli",
    "cityops.ingest.grafana",
    "cityops.traffic.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityops",
        description=(
            "cityops: smart-city IoT and operations platform. Configuration comes from "
            "CITYOPS_* environment variables (see docs/operations.md)."
        ),
        epilog="Run 'cityops COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"cityops: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
