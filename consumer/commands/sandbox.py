"""``xconv sandbox``: a local stand-in for X's Web Conversions endpoint."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from consumer.errors import ConfigError
from consumer.observability.logging import configure_logging
from consumer.sandbox.config import demo_config, load_config
from consumer.sandbox.server import serve

HELP = "Serve a local stand-in for X's conversions endpoint (auth, validation, limits, faults)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="accounts, rate limits and faults (.json or .toml); default: the demo account",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info; debug logs every request, without identifiers)",
    )
    parser.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="log lines on stderr: console on a terminal, JSON otherwise (default auto)",
    )


def _announce(url: str) -> None:
    print(f"listening on {url}", flush=True)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config) if args.config is not None else demo_config()
    except ConfigError as exc:
        print(f"xconv sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, args.host, args.port, ready=_announce))
    except OSError as exc:
        print(f"xconv sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
