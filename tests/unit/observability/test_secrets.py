"""The one classifier of credential keys, URL user-info masking and the known-secrets scrub."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.observability.redact import is_sensitive_key, redact_event_dict, redact_text
from consumer.observability.secrets import (
    KNOWN_SECRETS,
    MASK,
    SECRET,
    KnownSecrets,
    is_secret_key,
    mask_secrets,
    mask_url_userinfo,
    secret_forms,
)

LIBRDKAFKA_SECRET_KEYS = (
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.kerberos.keytab",
)
OTHER_SECRET_KEYS = (
    "consumer_key",
    "oauth_consumer_key",
    "consumer_secret",
    "access_token",
    "access_token_secret",
    "pixel_token",
    "X-Pixel-Token",
    "Authorization",
    "apiKey",
    "clientSecret",
    "signing_key",
    "oauth_signature",
)
PLAIN_KEYS = (
    "bootstrap.servers",
    "fetch.wait.max.ms",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.certificate.location",
    "sasl.mechanism",
    "sasl_username",
    "tokens_remaining",
    "max_in_flight",
    "auth",
    "default_phone_region",
    "keyed_by",
)


@pytest.mark.parametrize("key", LIBRDKAFKA_SECRET_KEYS + OTHER_SECRET_KEYS)
def test_credential_keys_are_secret_everywhere(key: str) -> None:
    assert is_secret_key(key)
    assert is_sensitive_key(key)  # the log redactor asks the same classifier
    assert redact_event_dict({key: "hunter2-value"})[key] == MASK


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_settings_that_are_not_credentials_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


def test_mask_secrets_walks_extra_dicts_and_urls() -> None:
    data = {
        "kafka": {
            "extra": {"sasl.password": "pw-1", "fetch.wait.max.ms": "100"},
            "producer_extra": {"ssl.keystore.password": "pw-2"},
            "sasl_password": None,
        },
        "api": {"base_url": "https://user:pw-3@ads-api.x.com/path"},
        "list": ["http://tok-4@host:80", 5, True],
    }
    masked = mask_secrets(data)
    assert masked == {
        "kafka": {
            "extra": {"sasl.password": MASK, "fetch.wait.max.ms": "100"},
            "producer_extra": {"ssl.keystore.password": MASK},
            "sasl_password": None,
        },
        "api": {"base_url": f"https://{SECRET}@ads-api.x.com/path"},
        "list": [f"http://{SECRET}@host:80", 5, True],
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://u:p@h.example/x", f"https://{SECRET}@h.example/x"),
        ("https://token@h.example", f"https://{SECRET}@h.example"),
        ("http://a@b.com@192.0.2.1:8080/", f"http://{SECRET}@192.0.2.1:8080/"),
        ("https://h.example/path/@user", "https://h.example/path/@user"),
        ("no url at all", "no url at all"),
    ],
)
def test_url_userinfo(url: str, expected: str) -> None:
    assert mask_url_userinfo(url) == expected


OAUTHLIB_SHAPES = [
    # oauthlib's "Collected params" line: Python reprs of pairs.
    ("Collected params: [('oauth_token', 'tok-123456'), ('a', 'b')]", "tok-123456"),
    ('pairs [("oauth_consumer_key", "ck-123456")]', "ck-123456"),
    ("pairs [('sasl.password', 'pw-123456')]", "pw-123456"),
    # Percent-encoded, as in a signature base string (and encoded twice).
    ("POST&https%3A%2F%2Fh%2F12&oauth_consumer_key%3Dck%2B12345%26oauth_nonce%3D1", "ck%2B12345"),
    ("a%26oauth_token%253Dtok%252B999%2526b", "tok%252B999"),
    # Bare signing material.
    ("Signature: Zm9vYmFyYmF6+/=", "Zm9vYmFyYmF6+/="),
    ("Signing: signature base string: POST&https%3A%2F%2Fh", "POST&https%3A%2F%2Fh"),
    ("Verify HMAC failed: signature base string: GET&x%3Dy", "GET&x%3Dy"),
    ("signing key: cs-secret&ats-secret", "cs-secret&ats-secret"),
    ("Normalized params: oauth_consumer_key=ck-1&oauth_token=tok-2", "ck-1"),
]


@pytest.mark.parametrize(("text", "secret"), OAUTHLIB_SHAPES)
def test_credential_shapes_of_third_party_lines(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert SECRET in out


def test_harmless_pairs_and_encodings_are_kept() -> None:
    for text in (
        "[('oauth_version', '1.0'), ('oauth_signature_method', 'HMAC-SHA1')]",
        "GET&https%3A%2F%2Fh%2F12&a%3D1%26b%3D2",
        "rate budget tokens: 5",
    ):
        assert redact_text(text) == text


def test_secret_forms_cover_percent_and_json_encodings() -> None:
    secret = 'p@ss/w0rd+="x"'
    forms = secret_forms(secret)
    assert secret in forms
    assert quote(secret, safe="") in forms
    assert quote(quote(secret, safe=""), safe="") in forms
    assert 'p@ss/w0rd+=\\"x\\"' in forms


def test_known_secrets_scrub_every_form_and_ignore_short_values() -> None:
    known = KnownSecrets()
    assert known.scrub("nothing registered") == "nothing registered"
    known.add(["s3cr3t/value+1", "abc"])
    text = f"raw s3cr3t/value+1 enc {quote('s3cr3t/value+1', safe='')} abc"
    assert known.scrub(text) == f"raw {SECRET} enc {SECRET} abc"
    known.clear()
    assert len(known) == 0


def _not_in_placeholder(secret: str) -> bool:
    return all(form not in f"x {SECRET} y" for form in secret_forms(secret))


@settings(max_examples=200, deadline=None)
@given(secret=st.text(min_size=6, max_size=40).filter(_not_in_placeholder))
def test_any_registered_secret_never_survives(secret: str) -> None:
    known = KnownSecrets()
    known.add([secret])
    for form in secret_forms(secret):
        assert form not in known.scrub(f"x {form} y")


# --- dead-letter headers ------------------------------------------------------------


class _Message:
    """The part of a Kafka message ``build_headers`` reads."""

    def __init__(self, headers: list[tuple[str, bytes | None]]) -> None:
        self._headers = headers

    def topic(self) -> str:
        return "purchases"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 1234567

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return b"{}"

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers


def test_dead_letter_headers_carry_no_credential_and_stay_decodable() -> None:
    from datetime import UTC, datetime

    from consumer.delivery.dlq import DeadLetter, build_headers, decode_headers
    from consumer.observability.redact import redact_headers

    known = "registered-secret-value-77"
    KNOWN_SECRETS.add([known])
    try:
        message = _Message(
            [("authorization", b"Bearer tok-from-producer"), ("trace", b"t-1"), ("empty", None)]
        )
        letter = DeadLetter(
            reason="api_rejected",
            message=f"X said: token=tok-in-message, url https://u:pw-9@h.example, {known}",
            field="conversions[0].identifiers[0].hashed_email",
            attempts=2,
            debug_id="550e8400-e29b-41d4-a716-446655440000",
            errors=[{"message": "bad jane@example.com", "parameter": "conversions[0]", "n": 7}],
        )
        raw = build_headers(message, letter, datetime(2026, 1, 1, tzinfo=UTC))
        headers = redact_headers(raw)
    finally:
        KNOWN_SECRETS.clear()
    text = repr(headers)
    for leaked in ("tok-from-producer", "tok-in-message", "pw-9", known, "jane@example.com"):
        assert leaked not in text
    assert [k for k, _ in headers] == [k for k, _ in raw]  # names and order kept
    assert dict(headers)["authorization"] == b"[redacted]"
    assert dict(headers)["trace"] == b"t-1"
    view = decode_headers(headers)
    assert view["source"] == {"topic": "purchases", "partition": 3, "offset": 1234567}
    assert view["attempts"] == 2
    assert view["reason"] == "api_rejected"
    assert view["field"] == "conversions[0].identifiers[0].hashed_email"
    assert view["debug_id"] == "550e8400-e29b-41d4-a716-446655440000"
    assert view["errors"] == [{"message": "bad [email]", "parameter": "conversions[0]", "n": 7}]
    assert view == decode_headers(redact_headers(headers))  # idempotent


def test_logged_exceptions_lose_credentials() -> None:
    """Exception text goes through the same classifier and scrub as any field."""
    import io
    import logging

    import structlog

    from consumer.observability.logging import configure_logging

    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    out = io.StringIO()
    try:
        configure_logging("info", "json", out)
        KNOWN_SECRETS.add(["verbatim-secret-in-exc"])
        try:
            raise ConnectionError(
                "connect https://user:pw-in-url@h.example failed; sasl.password=pw-kv "
                "('oauth_token', 'tok-pair') verbatim-secret-in-exc"
            )
        except ConnectionError:
            logging.getLogger("aiohttp.client").exception("request failed")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
        KNOWN_SECRETS.clear()
    text = out.getvalue()
    assert "ConnectionError" in text
    for leaked in ("pw-in-url", "pw-kv", "tok-pair", "verbatim-secret-in-exc"):
        assert leaked not in text


def test_operations_doc_lists_every_key_the_classifiers_use() -> None:
    """docs/operations.md "Redaction guarantees" names every key part, key and suffix."""
    from pathlib import Path

    from consumer.observability.redact import PERSONAL_KEY_PARTS, PERSONAL_KEYS
    from consumer.observability.secrets import SECRET_KEY_PARTS, SECRET_KEY_SUFFIXES, SECRET_KEYS

    doc = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    start = doc.index("### Redaction guarantees")
    section = " ".join(doc[start : doc.index("What is deliberately kept", start)].split())
    addresses = "street/shipping/billing addresses" in section
    missing = []
    for word in sorted(
        SECRET_KEY_PARTS
        | SECRET_KEYS
        | set(SECRET_KEY_SUFFIXES)
        | PERSONAL_KEY_PARTS
        | PERSONAL_KEYS
    ):
        forms = {f"`{word}`", f"`{word.replace('_', '.')}`", f"`{word.removesuffix('s')}(s)`"}
        if any(form in section for form in forms):
            continue
        if addresses and word in {
            "street",
            "street_address",
            "shipping_address",
            "billing_address",
        }:
            continue
        missing.append(word)
    assert missing == []
