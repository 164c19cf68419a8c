"""``xconv transform``: run the transform over JSON lines, offline (no Kafka, no HTTP)."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson
import yaml
from pydantic import ValidationError

from consumer.observability.logging import configure_logging
from consumer.transform import (
    Conversion,
    RouteSettings,
    RoutingSettings,
    Skip,
    Transformer,
    TransformSettings,
)
from consumer.transform.config import Preset

HELP = "Transform purchase events (JSON lines) into X conversions and print one result per line."

DEMO_ROUTE = RouteSettings(account_id="18ce552mlaq", pixel_id="oka17", event_id="ol288")


class UsageError(Exception):
    """A problem with the command line or the config file: exit 2 with its message."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML or YAML file; its [transform] and [routing] sections are used "
        "(default: canonical preset and a demo route)",
    )
    parser.add_argument(
        "--preset",
        choices=[p.value for p in Preset],
        help="override transform.preset of the config",
    )
    parser.add_argument(
        "input",
        nargs="?",
        default="-",
        help="file of JSON lines, or - for standard input (default)",
    )


def load_config_file(path: Path) -> dict[str, Any]:
    """TOML by extension .toml, YAML by .yaml/.yml, otherwise TOML then YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from exc
    suffix = path.suffix.lower()
    data: Any
    if suffix in (".yaml", ".yml"):
        data = _yaml(text, path)
    elif suffix == ".toml":
        data = _toml(text, path)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = _yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"config {path}: the top level must be a table/mapping")
    return data


def _toml(text: str, path: Path) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: invalid TOML: {exc}") from exc


def _yaml(text: str, path: Path) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"config {path}: invalid YAML: {exc}") from exc


def build_settings(
    config: dict[str, Any], preset: str | None
) -> tuple[TransformSettings, RoutingSettings]:
    transform_section = dict(config.get("transform") or {})
    if preset is not None:
        transform_section["preset"] = preset
    routing_section = config.get("routing")
    try:
        transform = TransformSettings.model_validate(transform_section)
    except ValidationError as exc:
        raise UsageError(_explain("transform", exc)) from exc
    try:
        if routing_section is None:
            routing = RoutingSettings(default=DEMO_ROUTE)
        else:
            routing = RoutingSettings.model_validate(routing_section)
    except ValidationError as exc:
        raise UsageError(_explain("routing", exc)) from exc
    return transform, routing


def _explain(section: str, exc: ValidationError) -> str:
    lines = [f"invalid [{section}] settings:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in (section, *error["loc"]))
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def process(transformer: Transformer, lines: Iterable[bytes], out: IO[bytes]) -> tuple[int, int]:
    """One output line per input line (blank lines included), in order; the count of
    conversions and of rejections (a skipped change event is neither)."""
    accepted = rejected = 0
    for line in lines:
        result = transformer.transform(line.rstrip(b"\r\n"))
        if isinstance(result, Conversion):
            accepted += 1
            dropped = b""
            if result.dropped:
                dropped = b',"dropped":' + orjson.dumps(
                    [{"field": name, "reason": reason} for name, reason in result.dropped]
                )
            out.write(
                b'{"ok":true,"account_id":'
                + orjson.dumps(result.route.account_id)
                + b',"pixel_id":'
                + orjson.dumps(result.route.pixel_id)
                + b',"conversion":'
                + result.payload
                + dropped
                + b"}\n"
            )
        elif isinstance(result, Skip):
            out.write(orjson.dumps({"ok": True, "skipped": True, "reason": result.reason}) + b"\n")
        else:
            rejected += 1
            out.write(
                orjson.dumps(
                    {
                        "ok": False,
                        "reason": result.reason,
                        "field": result.field,
                        "message": result.message,
                    }
                )
                + b"\n"
            )
    return accepted, rejected


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config_file(args.config) if args.config is not None else {}
        transform, routing = build_settings(config, args.preset)
        configure_logging("warning")  # stderr: stdout carries the results
        transformer = Transformer(transform, routing)
        if args.input == "-":
            stream: IO[bytes] = sys.stdin.buffer
            process(transformer, stream, sys.stdout.buffer)
        else:
            try:
                handle = Path(args.input).open("rb")  # noqa: SIM115
            except OSError as exc:
                raise UsageError(f"cannot read {args.input}: {exc.strerror}") from exc
            with handle:
                process(transformer, handle, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except UsageError as exc:
        print(f"xconv transform: {exc}", file=sys.stderr)
        return 2
    return 0
