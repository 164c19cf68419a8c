"""The one classifier of credential keys, URL user-info masking and the known-secrets scrub."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.observability.redact import is_sensitive_key, redact_event_dict, redact_text
from consumer.observability.secrets import (
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
