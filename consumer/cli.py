"""Command line: ``xconv <command>``; each command lives in ``consumer.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from consumer import __version__

# name -> module under consumer.commands; each module has add_arguments() and run().
COMMANDS: dict[str, str] = {
    "run": "run",
    "sandbox": "sandbox",
    "transform": "transform",
    "check-config": "check_config",
    "dlq": "dlq",
    "produce-sample": "produce_sample",
}


class CommandModule(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> CommandModule:
    loaded: CommandModule = importlib.import_module(f"consumer.commands.{module}")
    return loaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xconv",
        description="Purchase events from Kafka to X Ads Web Conversions.",
    )
    parser.add_argument("--version", action="version", version=f"xconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != f"consumer.commands.{module_name}":
                raise
            continue  # command not built yet
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
