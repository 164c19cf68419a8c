"""configure_logging: one redacted chain for structlog and stdlib records."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest
import structlog

from consumer.observability.logging import configure_logging, get_logger, parse_level

PII = ("jane.doe@example.com", "203.0.113.77", "+1 202 555 0143", "s3cr3t-token-value")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


class TTYStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def assert_no_pii(text: str) -> None:
    for leaked in PII:
        assert leaked not in text, leaked


def test_json_lines_have_standard_fields_and_redacted_values() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    get_logger("consumer.delivery.engine").info(
        "sent to %s from %s",
        "jane.doe@example.com",
        "203.0.113.77",
        account="18ce552mlaq",
        partition=3,
        offset=1234567890,
        duration_s=0.0412,
        phone="+1 202 555 0143",
        headers={"Authorization": "Bearer s3cr3t-token-value"},
        bootstrap_servers="127.0.0.1:9092",
    )
    assert_no_pii(out.getvalue())
    (line,) = json_lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["level"] == "info"
    assert line["logger"] == "consumer.delivery.engine"
    assert isinstance(line["timestamp"], str)
    assert line["timestamp"].endswith("Z")
    assert "T" in line["timestamp"]
    assert line["event"] == "sent to [email] from [ip]"
    assert line["account"] == "18ce552mlaq"
    assert line["partition"] == 3
    assert line["offset"] == 1234567890
    assert line["duration_s"] == 0.0412
    assert line["phone"] == "[redacted]"
    assert line["headers"] == {"Authorization": "[redacted]"}
    assert line["bootstrap_servers"] == "127.0.0.1:9092"


def test_exceptions_are_formatted_and_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = get_logger("consumer.test")
    try:
        raise ValueError("no route for jane.doe@example.com at 203.0.113.77")
    except ValueError:
        log.exception("transform failed", batch_id="b-17")
    assert_no_pii(out.getvalue())
    (line,) = json_lines(out)
    assert line["level"] == "error"
    assert line["batch_id"] == "b-17"
    exception = line["exception"]
    assert isinstance(exception, str)
    assert "Traceback (most recent call last)" in exception
    assert "ValueError: no route for [email] at [ip]" in exception


def test_stdlib_loggers_share_the_chain() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    logging.getLogger("aiohttp.client").warning("peer %s closed", "203.0.113.77")
    logging.getLogger("confluent_kafka").error("auth for %s: %s", "jane.doe@example.com", 42)
    try:
        raise ConnectionError("reset by 203.0.113.77")
    except ConnectionError:
        logging.getLogger("asyncio").exception("task died")
    assert_no_pii(out.getvalue())
    lines = json_lines(out)
    assert [(x["logger"], x["level"]) for x in lines] == [
        ("aiohttp.client", "warning"),
        ("confluent_kafka", "error"),
        ("asyncio", "error"),
    ]
    assert lines[0]["event"] == "peer [ip] closed"
    assert lines[1]["event"] == "auth for [email]: 42"
    assert "ConnectionError: reset by [ip]" in str(lines[2]["exception"])


def test_level_filters_both_kinds_of_logger() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", out)
    get_logger("a").info("hidden")
    logging.getLogger("b").info("hidden too")
    get_logger("a").warning("shown")
    assert [x["event"] for x in json_lines(out)] == ["shown"]


def test_auto_picks_console_for_a_tty_and_json_otherwise() -> None:
    tty = TTYStringIO()
    configure_logging("info", "auto", tty)
    get_logger("consumer.test").info("hello", email="jane.doe@example.com", n=3)
    text = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue())  # colours on a TTY
    assert "hello" in text
    assert "n=3" in text
    assert "consumer.test" in text
    assert not text.lstrip().startswith("{")
    assert_no_pii(text)

    plain = io.StringIO()
    configure_logging("info", "auto", plain)
    get_logger("consumer.test").info("hello")
    assert json_lines(plain)[0]["event"] == "hello"


def test_console_format_redacts_exceptions() -> None:
    out = io.StringIO()
    configure_logging("debug", "console", out)
    try:
        raise RuntimeError("user 203.0.113.77 / jane.doe@example.com")
    except RuntimeError:
        get_logger("consumer.test").exception("failed")
    text = out.getvalue()
    assert "RuntimeError: user [ip] / [email]" in text
    assert_no_pii(text)


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    get_logger("x").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_bound_context_is_redacted_too() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    structlog.contextvars.bind_contextvars(client="203.0.113.77", run="r1")
    try:
        get_logger("x").bind(user_email="jane.doe@example.com").info("bound")
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = json_lines(out)
    assert line["client"] == "[ip]"
    assert line["run"] == "r1"
    assert line["user_email"] == "[redacted]"


@pytest.mark.parametrize(("name", "level"), [("DEBUG", 10), ("info", 20), (" Warn ", 30)])
def test_parse_level(name: str, level: int) -> None:
    assert parse_level(name) == level


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("verbose")
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", "xml")  # type: ignore[arg-type]
