"""Pieces shared by the command modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consumer.errors import ConfigError
from consumer.settings import Settings, load_settings


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or YAML settings file (default: $XCONV_CONFIG); XCONV_* variables override it",
    )


def load_or_report(path: Path | None, *, for_delivery: bool = True) -> Settings | None:
    """Load the settings, or print the bad setting and return None."""
    try:
        settings = load_settings(path)
        if for_delivery:
            settings.require_accounts()
        return settings
    except ConfigError as exc:
        sys.stderr.write(f"xconv: invalid configuration: {exc}\n")
        return None
