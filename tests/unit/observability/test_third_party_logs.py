"""Third-party log lines never carry a credential, at any level.

oauthlib really signs requests here (the sandbox's demo credentials and a set with
characters that percent-encoding changes), at DEBUG, through ``configure_logging``;
every captured line is scanned for each secret, the signature and their encoded forms.
librdkafka runs with a SASL password at debug level against a closed loopback port
(the SCRAM exchange with the real broker is in tests/integration/test_secret_logs.py).
"""

from __future__ import annotations

import functools
import io
import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote, unquote

import orjson
import pytest
import structlog
from confluent_kafka import Consumer
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.delivery.auth import OAuth1Auth
from consumer.observability.logging import configure_logging
from consumer.observability.secrets import KNOWN_SECRETS, secret_forms
from consumer.sandbox.config import (
    DEMO_ACCESS_TOKEN,
    DEMO_ACCESS_TOKEN_SECRET,
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
)

URL = "https://ads-api.x.com/12/measurement/conversions/oka17"
DEMO = (DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, DEMO_ACCESS_TOKEN, DEMO_ACCESS_TOKEN_SECRET)
# Characters that change under percent-encoding, so the encoded forms differ from the raw.
ODD = ("ck/with+odd=chars", "cs&secret/+=", "1234-at/with+odd=", "ats&secret/+=")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    oauth_level = logging.getLogger("oauthlib").level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("oauthlib").setLevel(oauth_level)
    structlog.configure(**config)
    KNOWN_SECRETS.clear()


def _sign(credentials: tuple[str, str, str, str]) -> list[str]:
    """Sign a few requests; return the signatures (decoded) taken from the headers.

    Through oauthlib's ``Client.sign`` (the reference the per-URL template is checked
    against, and the path URLs with a query take), which is what writes debug lines.
    """
    auth = OAuth1Auth(*credentials)
    signatures = []
    for n in range(3):
        header = auth.sign_reference("POST", URL, str(1000 + n), "1800000000")
        params = dict(
            part.strip().split("=", 1) for part in header.removeprefix("OAuth ").split(",")
        )
        signatures.append(unquote(params["oauth_signature"].strip('"')))
    return signatures


def _forbidden(credentials: tuple[str, str, str, str], signatures: list[str]) -> set[str]:
    forms: set[str] = set()
    for value in (*credentials, *signatures):
        forms |= secret_forms(value)
        forms.add(quote(value, safe="~"))
    return forms


def _lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("credentials", [DEMO, ODD], ids=["demo", "odd-characters"])
def test_oauthlib_debug_lines_carry_no_credential(credentials: tuple[str, str, str, str]) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    # Undo the level cap, as an operator debugging signatures might: the redaction
    # alone must then keep every line clean.
    logging.getLogger("oauthlib").setLevel(logging.DEBUG)
    signatures = _sign(credentials)
    lines = _lines(out)
    oauth_lines = [line for line in lines if orjson.loads(line)["logger"].startswith("oauthlib")]
    assert len(oauth_lines) >= 3 * 4  # collected, normalised, base string, signature
    for line in lines:
        for form in _forbidden(credentials, signatures):
            assert form not in line, (form, line)


def test_oauthlib_debug_lines_are_capped_by_default() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    logging.getLogger("consumer.test").debug("debug reaches the handler")
    signatures = _sign(DEMO)
    lines = _lines(out)
    assert [orjson.loads(line)["logger"] for line in lines] == ["consumer.test"]
    for form in _forbidden(DEMO, signatures):
        assert form not in out.getvalue()


def test_known_secrets_scrub_a_line_with_no_recognisable_shape() -> None:
    out = io.StringIO()
    configure_logging("debug", "console", out)
    KNOWN_SECRETS.add(ODD)
    logging.getLogger("some.library").debug("dump %s | %s", ODD[1], quote(ODD[3], safe=""))
    text = out.getvalue()
    assert "dump" in text
    for form in secret_forms(ODD[1]) | secret_forms(ODD[3]):
        assert form not in text


def _closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more: every connect is refused


SASL_PASSWORD = "sasl-pw/with+odd=chars-0042"
KEY_PASSWORD = "ssl-key-pw&odd/chars-0043"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_librdkafka_debug_lines_carry_no_credential(mechanism: str) -> None:
    """A consumer with a SASL password, librdkafka at debug=security,broker,conf (its
    configuration dump included) through the ``confluent_kafka`` logger."""
    out = io.StringIO()
    configure_logging("debug", "json", out)
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{_closed_loopback_port()}",
            "group.id": "xconv-secrets-test",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": "xconv-user",
            "sasl.password": SASL_PASSWORD,
            "ssl.key.password": KEY_PASSWORD,
            "debug": "security,broker,conf",
            "logger": logging.getLogger("confluent_kafka"),
            "reconnect.backoff.ms": 10,
        }
    )
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            consumer.poll(0.1)  # librdkafka's log lines are delivered on poll
    finally:
        consumer.close()
    lines = _lines(out)
    kafka_lines = [line for line in lines if orjson.loads(line)["logger"] == "confluent_kafka"]
    assert any("sasl.password" in line for line in kafka_lines)  # the dump was logged
    assert any("Connection refused" in line for line in kafka_lines)
    forms = secret_forms(SASL_PASSWORD) | secret_forms(KEY_PASSWORD)
    for line in lines:
        for form in forms:
            assert form not in line, (form, line)


_CREDENTIAL = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=12, max_size=40
)
_FRAGMENT = 12  # no run of this many characters of a credential may show


def _fragments(value: str) -> set[str]:
    out: set[str] = set()
    for form in {value, quote(value, safe="~"), quote(quote(value, safe="~"), safe="~")}:
        out |= {form[i : i + _FRAGMENT] for i in range(len(form) - _FRAGMENT + 1)}
    return out


@settings(max_examples=60, deadline=None)
@given(credentials=st.tuples(_CREDENTIAL, _CREDENTIAL, _CREDENTIAL, _CREDENTIAL))
def test_oauthlib_debug_lines_carry_no_generated_credential(
    credentials: tuple[str, str, str, str],
) -> None:
    """Any printable credentials: the patterns alone (no registered secrets) hold, and
    not even a 12-character run of a credential (or of its encoded forms) shows."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("debug", "json", out)
        logging.getLogger("oauthlib").setLevel(logging.DEBUG)
        signatures = _sign(credentials)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text = out.getvalue()
    assert "Collected params" in text
    for form in _forbidden(credentials, signatures):
        assert form not in text, form
    skeleton = _skeleton()
    for value in credentials:
        for fragment in _fragments(value):
            if fragment in skeleton:
                continue  # e.g. "oauth_versio": the log's own words, not the credential
            assert fragment not in text, fragment


@functools.cache
def _skeleton() -> str:
    """The debug text oauthlib logs around credentials (signed with fixed ones)."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("debug", "json", out)
        logging.getLogger("oauthlib").setLevel(logging.DEBUG)
        _sign(("K" * 20, "S" * 20, "T" * 20, "U" * 20))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return out.getvalue()
