"""Structured logging for the whole process: structlog and stdlib records, one format, redacted.

Every record, whether it comes from ``structlog.get_logger()`` or from a stdlib logger
(aiohttp, confluent-kafka's Python logger, asyncio), goes through the same chain:
timestamp (ISO 8601 UTC), level, logger name, positional-argument formatting, exception
formatting, then :class:`~consumer.observability.redact.RedactProcessor` as the very last
step before the renderer, so no line leaves the process unredacted; after the renderer,
:class:`ScrubKnownSecrets` removes any configured secret value from the finished line.
oauthlib's logger is kept at INFO or above (its DEBUG lines are signing material).

Call :func:`configure_logging` once at start-up, before the first log call.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from consumer.observability.redact import RedactProcessor
from consumer.observability.secrets import KNOWN_SECRETS, KnownSecrets

LogFormat = Literal["auto", "json", "console"]

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Keys rendered first on every JSON line, in this order.
_LEADING_KEYS: Final = ("timestamp", "level", "logger", "event")

_HANDLER_NAME: Final = "xconv"

#: Third-party loggers whose records below this level print signing material and
#: nothing an operator needs (oauthlib logs its parameters, the signature base string
#: and the signature at DEBUG). They stay at INFO whatever ``log_level`` says; the
#: redaction still covers their lines if someone lowers it again.
CAPPED_LOGGERS: Final = {"oauthlib": logging.INFO}

#: Loggers that must reach the root handler (and its redaction) even if a library or an
#: earlier set-up turned propagation off.
PROPAGATED_LOGGERS: Final = (
    "aiohttp",
    "aiohttp.access",
    "aiohttp.client",
    "confluent_kafka",
    "asyncio",
    "oauthlib",
)


def parse_level(level: str) -> int:
    """Map a level name (any case) to a stdlib level; unknown names are a setup error."""
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(_LEVELS))
        raise ValueError(f"unknown log level {level!r} (expected one of: {known})") from None


def _json_default(obj: object) -> str:
    # The redactor already turns unknown objects into strings; this is a last resort.
    return str(obj)


def _orjson_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=_json_default).decode("utf-8")


def _leading_keys_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered: EventDict = {k: event_dict[k] for k in _LEADING_KEYS if k in event_dict}
    for key, val in event_dict.items():
        if key not in ordered:
            ordered[key] = val
    return ordered


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn-style duplicates of the message carry raw arguments; never render them.
    event_dict.pop("color_message", None)
    return event_dict


class ScrubKnownSecrets:
    """After rendering: replace any configured secret value (and its encoded forms).

    The last net: a line that carries a credential verbatim, with no key or shape the
    redactor recognises (a library's debug dump), still loses it.
    """

    __slots__ = ("_known",)

    def __init__(self, known: KnownSecrets = KNOWN_SECRETS) -> None:
        self._known = known

    def __call__(self, _: WrappedLogger, __: str, rendered: Any) -> Any:
        if isinstance(rendered, str):
            return self._known.scrub(rendered)
        if isinstance(rendered, bytes):
            return self._known.scrub(rendered.decode("utf-8", "replace")).encode("utf-8")
        return rendered


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or detached stream
        return False


def build_renderer(fmt: LogFormat, stream: TextIO) -> Processor:
    """The final processor: JSON lines, or aligned key=value output for a human."""
    use_console = fmt == "console" or (fmt == "auto" and _is_tty(stream))
    if use_console:
        return structlog.dev.ConsoleRenderer(colors=_is_tty(stream))
    return structlog.processors.JSONRenderer(serializer=_orjson_dumps)


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO = sys.stderr
) -> None:
    """Route structlog and stdlib logging through one redacted chain to ``stream``.

    ``fmt="auto"`` picks the console renderer when ``stream`` is a TTY, JSON lines
    otherwise. Calling it again replaces the previous set-up (handy in tests).
    """
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (expected auto, json or console)")
    numeric_level = parse_level(level)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    final_chain: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        _drop_color_message,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        RedactProcessor(),  # last before rendering: nothing below may add raw data
        _leading_keys_first,
        build_renderer(fmt, stream),
        ScrubKnownSecrets(),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=final_chain,
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        # Ours from an earlier call, or a bare basicConfig() handler that would print
        # unredacted lines; test harness handlers (subclasses) are left alone.
        if old.get_name() == _HANDLER_NAME or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Libraries keep their own loggers; only make sure none bypasses the root handler.
    for name in PROPAGATED_LOGGERS:
        logging.getLogger(name).propagate = True
    for name, floor in CAPPED_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, numeric_level))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger bound before configure_logging() must still follow it.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger named like a stdlib one (``consumer.delivery.engine``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
