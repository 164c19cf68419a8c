"""librdkafka at debug level through the project's logging, with a real SCRAM exchange.

The session broker's SASL_PLAINTEXT + SCRAM-SHA-256 listener authenticates a consumer
while librdkafka logs ``debug=security,broker,conf`` through the ``confluent_kafka``
logger; every captured line is scanned for the password and its encoded forms.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import orjson
import pytest
import structlog
from confluent_kafka import Consumer

from consumer.observability.logging import configure_logging
from consumer.observability.secrets import secret_forms

pytestmark = [pytest.mark.kafka]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.mark.timeout(90)
def test_scram_authentication_at_debug_logs_no_password(
    kafka_sasl_config: dict[str, str],
) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    consumer = Consumer(
        {
            **kafka_sasl_config,
            "group.id": "xconv-secret-logs",
            "debug": "security,broker,conf",
            "logger": logging.getLogger("confluent_kafka"),
        }
    )
    try:
        metadata = consumer.list_topics(timeout=30)  # connects and authenticates
        assert metadata.brokers  # the SCRAM exchange succeeded
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            consumer.poll(0.1)  # librdkafka's log lines are delivered on poll
    finally:
        consumer.close()
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    kafka_lines = [orjson.loads(line)["event"] for line in lines]
    assert any("SCRAM" in line for line in kafka_lines)
    assert any("sasl.password" in line for line in kafka_lines)  # the config dump
    password = kafka_sasl_config["sasl.password"]
    assert password
    for line in lines:
        for form in secret_forms(password) | {password}:
            assert form not in line, line
