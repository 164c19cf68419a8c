"""Pieces shared by the command modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consumer.errors import ConfigError
from consumer.observability.secrets import KNOWN_SECRETS
from consumer.settings import LoadedSettings, Settings, load_settings_with_sources


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or YAML settings file (default: $XCONV_CONFIG); XCONV_* variables override it",
    )


def load_with_sources_or_report(
    path: Path | None, *, for_delivery: bool = True
) -> LoadedSettings | None:
    """Load the settings (and their sources), or print the bad setting and return None.

    The loaded secrets are registered with the log scrub (``KNOWN_SECRETS``) before any
    component that logs is created, so no later line can carry one verbatim.
    """
    try:
        loaded = load_settings_with_sources(path)
        if for_delivery:
            loaded.settings.require_accounts()
    except ConfigError as exc:
        sys.stderr.write(f"xconv: invalid configuration: {exc}\n")
        return None
    KNOWN_SECRETS.add(loaded.settings.secret_values())
    return loaded


def load_or_report(path: Path | None, *, for_delivery: bool = True) -> Settings | None:
    """Load the settings, or print the bad setting and return None."""
    loaded = load_with_sources_or_report(path, for_delivery=for_delivery)
    return loaded.settings if loaded is not None else None
