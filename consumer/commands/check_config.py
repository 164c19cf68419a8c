"""``xconv check-config``: validate the settings without starting anything."""

from __future__ import annotations

import argparse
import sys

import orjson

from consumer.commands.common import add_config_argument, load_or_report

HELP = "Validate the configuration (file + XCONV_* variables) and print it with secrets masked."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="print nothing when valid")


def run(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    if not args.quiet:
        sys.stdout.write(
            orjson.dumps(settings.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    sys.stderr.write("xconv: configuration is valid\n")
    return 0
