"""``xconv check-config``: validate the settings without starting anything.

Prints every setting with its value (secrets masked by the shared classifier) and its
source: ``file``, ``env XCONV_…`` or ``default``.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from consumer.commands.common import add_config_argument, load_with_sources_or_report
from consumer.settings import LoadedSettings, dotted, leaves

HELP = (
    "Validate the configuration (file + XCONV_* variables) and print each value, "
    "secrets masked, with its source (file, env, default)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="print nothing when valid")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"settings": {...}, "sources": {"dotted.path": source}} instead of lines',
    )


def render_lines(loaded: LoadedSettings) -> str:
    """``path = value  # source`` per setting, values as JSON, in model order."""
    sources = loaded.sources()
    rows = [
        (dotted(path), orjson.dumps(value).decode(), sources[dotted(path)])
        for path, value in leaves(loaded.settings.redacted())
    ]
    width = max(len(f"{p} = {v}") for p, v, _ in rows)
    return "".join(f"{f'{p} = {v}':<{width}}  # {s}\n" for p, v, s in rows)


def render_json(loaded: LoadedSettings) -> str:
    body = {"settings": loaded.settings.redacted(), "sources": loaded.sources()}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def run(args: argparse.Namespace) -> int:
    loaded = load_with_sources_or_report(args.config)
    if loaded is None:
        return 2
    if not args.quiet:
        sys.stdout.write(render_json(loaded) if args.json else render_lines(loaded))
    sys.stderr.write("xconv: configuration is valid\n")
    return 0
