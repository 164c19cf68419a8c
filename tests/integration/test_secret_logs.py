"""Third-party libraries at debug level through the project's logging, for real.

librdkafka: the session broker's SASL_PLAINTEXT + SCRAM-SHA-256 listener authenticates a
consumer while librdkafka logs ``debug=security,broker,conf`` through the
``confluent_kafka`` logger. aiohttp and oauthlib: the delivery client signs and sends
requests to a sandbox process running at debug level too. Every captured line (ours and
the sandbox's) is scanned for each credential and its encoded forms.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import orjson
import pytest
import structlog
from confluent_kafka import Consumer

from consumer.delivery.auth import OAuth1Auth, PixelTokenAuth
from consumer.delivery.client import XAdsClient, make_session
from consumer.observability.logging import configure_logging
from consumer.observability.secrets import secret_forms
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.mark.kafka
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


def _body(sandbox: SandboxHandle) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {
            "conversions": [
                {
                    "conversion_time": now,
                    "event_id": sandbox.event_id,
                    "identifiers": [{"twclid": "23opevjt88psuo13lu8d020qkn"}],
                    "conversion_id": f"secret-logs-{time.monotonic_ns()}",
                }
            ]
        }
    )


@pytest.mark.sandbox
@pytest.mark.timeout(60)
async def test_signed_requests_at_debug_log_no_credential(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    sandbox = start_sandbox(None, log_level="debug")
    assert sandbox.pixel_token is not None
    out = io.StringIO()
    configure_logging("debug", "json", out)
    credentials = (
        sandbox.consumer_key,
        sandbox.consumer_secret,
        sandbox.access_token,
        sandbox.access_token_secret,
    )
    session = make_session(5.0, 30.0)
    try:
        signed = XAdsClient(session, sandbox.base_url, "12", OAuth1Auth(*credentials))
        token = XAdsClient(session, sandbox.base_url, "12", PixelTokenAuth(sandbox.pixel_token))
        wrong = OAuth1Auth(credentials[0], "not-the-consumer-secret", *credentials[2:])
        refused = XAdsClient(session, sandbox.base_url, "12", wrong)
        assert (await signed.send(sandbox.pixel_id, _body(sandbox))).status == 200
        assert (await token.send(sandbox.pixel_id, _body(sandbox))).status == 200
        assert (await refused.send(sandbox.pixel_id, _body(sandbox))).status == 401
    finally:
        await session.close()
    ours = [line for line in out.getvalue().splitlines() if line.strip()]
    theirs = [line for line in sandbox.logs().splitlines() if line.strip()]
    assert any("sandbox auth failed" in line for line in theirs)  # debug lines were written
    forms: set[str] = set()
    for value in (*credentials, sandbox.pixel_token, "not-the-consumer-secret"):
        forms |= secret_forms(value) | {value, quote(value, safe="~")}
    for line in ours + theirs:
        for form in forms:
            assert form not in line, line
