"""Redaction: PII and secrets never survive; the operationally useful values do."""

from __future__ import annotations

import ipaddress
import traceback

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.observability.redact import (
    EMAIL,
    IP,
    PHONE,
    REDACTED,
    SECRET,
    RedactProcessor,
    contains_contact,
    is_sensitive_key,
    redact_errors,
    redact_event_dict,
    redact_text,
    redact_value,
)


@pytest.mark.parametrize(
    ("text", "secret", "placeholder"),
    [
        ("mail john.doe+promo@example.co.uk now", "john.doe+promo@example.co.uk", EMAIL),
        ("address: TEST-Email@Test.COM.", "TEST-Email@Test.COM", EMAIL),
        ("call +1 (555) 123-4567 today", "555) 123-4567", PHONE),
        ("call +15551234567 today", "+15551234567", PHONE),
        ("call 555-123-4567 today", "555-123-4567", PHONE),
        ("call 555.123.4567 today", "555.123.4567", PHONE),
        ("call (555) 123-4567 today", "123-4567", PHONE),
        ("ring 020 7946 0958 today", "7946 0958", PHONE),
        ("ring 030 123456 today", "030 123456", PHONE),
        ("from 203.0.113.9 today", "203.0.113.9", IP),
        ("from 10.1.2.3:9092 today", "10.1.2.3", IP),
        ("peer [2001:db8::1]:443 today", "2001:db8::1", IP),
        ("peer 2001:0db8:85a3:0000:0000:8a2e:0370:7334 today", "8a2e:0370:7334", IP),
        ("peer fe80::1ff:fe23:4567:890a%eth0 today", "fe80::1ff", IP),
        ("mapped ::ffff:198.51.100.7 today", "198.51.100.7", IP),
        ("Authorization: Bearer abcdef123456", "abcdef123456", SECRET),
        ("header X-Pixel-Token: pxtok-998877", "pxtok-998877", SECRET),
        ('OAuth oauth_consumer_key="ck123", oauth_signature="sig%3D"', "ck123", SECRET),
        ('OAuth oauth_consumer_key="ck123", oauth_signature="sig%3D"', "sig%3D", SECRET),
        ("sasl.password=hunter2 next", "hunter2", SECRET),
        ('{"access_token": "at-777", "n": 1}', "at-777", SECRET),
        ("dsn postgres://user:pa55word@db.internal/x", "pa55word", SECRET),
        ("consumer_secret = s3cr3t", "s3cr3t", SECRET),
    ],
)
def test_pii_in_text_is_replaced(text: str, secret: str, placeholder: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert placeholder in out


@pytest.mark.parametrize(
    "text",
    [
        "offset 1234567890 partition 12 epoch 3",
        "took 0.123456789 s, budget 99999.5",
        "at 2024-01-15T12:30:45.123456Z and 2024-01-15 12:30:45",
        "debug_id 550e8400-e29b-41d4-a716-446655440000",
        "uuid 12345678-1234-a123-8123-123456789012",
        "hash e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8",
        "hash 1234567890123456789012345678901234567890123456789012345678901234",
        "offsets 1000000-1000499 committed",
        "broker 127.0.0.1:9092 and [::1]:9464 and 0.0.0.0:9464 and 127.100.200.1",
        "librdkafka 2.16.1, python 3.11.9, window 900 s",
        "batch b-17-000042 of 500 events, 3999871 bytes",
        "timestamp_ms 1732800000000",
        "ratio 0.5 and 12:30:45 and aa:bb:cc",
        "rate budget tokens: 5",
        "POST /12/measurement/conversions/oka17 -> 200",
    ],
)
def test_useful_values_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_key_names_redact_whole_values_recursively() -> None:
    event = {
        "event": "sending",
        "email": "a@b.co",
        "hashed_email": "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8",
        "phone_number": 15551234567,
        "ip_address": None,
        "accessToken": "opaque",
        "consumer_key": "ck",
        "headers": {"X-Pixel-Token": "t", "Authorization": "OAuth x", "content-type": "json"},
        "identifiers": [{"user_agent": "Mozilla/5.0", "twclid": "abc"}],
        "tokens_remaining": 7,
        "account": "18ce552mlaq",
    }
    out = redact_event_dict(event)
    assert out["email"] == REDACTED
    assert out["hashed_email"] == REDACTED
    assert out["phone_number"] == REDACTED
    assert out["ip_address"] is None
    assert out["accessToken"] == REDACTED
    assert out["consumer_key"] == REDACTED
    assert out["headers"] == {
        "X-Pixel-Token": REDACTED,
        "Authorization": REDACTED,
        "content-type": "json",
    }
    assert out["identifiers"] == [{"user_agent": REDACTED, "twclid": "abc"}]
    assert out["tokens_remaining"] == 7
    assert out["account"] == "18ce552mlaq"
    assert list(out) == list(event)


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("sasl_password", True),
        ("access_token_secret", True),
        ("pixel_token", True),
        ("x-pixel-token", True),
        ("client_ip", True),
        ("userAgent", True),
        ("skip", False),
        ("tokens_remaining", False),
        ("offset", False),
        ("debug_id", False),
    ],
)
def test_key_classification(key: str, sensitive: bool) -> None:
    assert is_sensitive_key(key) is sensitive


def test_infrastructure_keys_keep_ips_but_not_other_pii() -> None:
    out = redact_event_dict(
        {
            "bootstrap_servers": ["10.0.0.1:9092", "10.0.0.2:9092"],
            "base_url": "http://admin@example.com@192.0.2.10:8080",
            "listen": "192.0.2.20:9464",
            "peer": "192.0.2.30",
        }
    )
    assert out["bootstrap_servers"] == ["10.0.0.1:9092", "10.0.0.2:9092"]
    assert out["listen"] == "192.0.2.20:9464"
    assert "192.0.2.10" in out["base_url"]
    assert "admin@example.com" not in out["base_url"]
    assert out["peer"] == IP


def test_nested_values_keys_bytes_and_objects_are_scanned() -> None:
    class Custom:
        def __repr__(self) -> str:
            return "Custom(owner=jane@example.org)"

        __str__ = __repr__

    out = redact_value(
        {
            "jane@example.org": 1,
            "list": ["x", ("+44 20 7946 0958",)],
            "raw": b'{"note":"from 203.0.113.50"}',
            "obj": Custom(),
            "exc": ValueError("bad address 203.0.113.51"),
            "n": 3.5,
            "flag": True,
        }
    )
    rendered = repr(out)
    for leaked in ("jane@example.org", "7946", "203.0.113.50", "203.0.113.51"):
        assert leaked not in rendered
    assert out["n"] == 3.5
    assert out["flag"] is True
    # The e-mail pattern takes every RFC 5322 local-part character, "owner=" included.
    assert out["obj"] == f"Custom({EMAIL})"


def test_processor_passes_structlog_fields_through_and_keeps_order() -> None:
    proc = RedactProcessor()
    event = {
        "event": "to 203.0.113.9",
        "level": "info",
        "timestamp": "2024-01-01T00:00:00Z",
        "partition": 3,
    }
    out = proc(None, "info", event)
    assert out == {
        "event": f"to {IP}",
        "level": "info",
        "timestamp": "2024-01-01T00:00:00Z",
        "partition": 3,
    }
    assert list(out) == list(event)


@settings(max_examples=300, deadline=None)
@given(email=st.emails(), prefix=st.sampled_from(["", "to ", "user=", "<", "("]))
def test_generated_emails_never_survive(email: str, prefix: str) -> None:
    out = redact_text(f"{prefix}{email} done")
    assert email not in out
    assert EMAIL in out


@settings(max_examples=300, deadline=None)
@given(
    a=st.integers(0, 255),
    b=st.integers(0, 255),
    c=st.integers(0, 255),
    d=st.integers(1, 255),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_generated_public_ipv4_never_survives(
    a: int, b: int, c: int, d: int, port: int | None
) -> None:
    if a in (0, 127):
        a = 8
    ip = f"{a}.{b}.{c}.{d}"
    shown = ip if port is None else f"{ip}:{port}"
    out = redact_text(f"connect {shown} failed")
    assert ip not in out
    assert IP in out


@settings(max_examples=200, deadline=None)
@given(groups=st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
def test_generated_ipv6_never_survives(groups: list[int]) -> None:
    groups[0] = 0x2001  # keep it away from ::1 and ::
    addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    for form in (str(addr), addr.exploded):
        out = redact_text(f"client {form} closed")
        assert form not in out
        assert IP in out


@pytest.mark.parametrize(
    "fmt",
    [phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL],
)
def test_example_numbers_of_every_region_are_redacted(fmt: int) -> None:
    leaked = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            text = phonenumbers.format_number(number, fmt)
            if redact_text(f"tel {text} end") != f"tel {PHONE} end":
                leaked.append(text)
    assert leaked == []


def test_exception_text_is_scanned() -> None:
    try:
        raise RuntimeError("send failed for bob@example.net via 198.51.100.20 (+1 202 555 0143)")
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(exc))
    out = redact_text(text)
    for leaked in ("bob@example.net", "198.51.100.20", "555 0143"):
        assert leaked not in out
    assert "RuntimeError: send failed for" in out


def test_x_errors_are_redacted_for_dead_letter_headers() -> None:
    errors = [
        {
            "code": "INVALID_PARAMETER",
            "message": "hashed_email (jane.doe@example.com) is not a valid SHA-256 hash",
            "parameter": "conversions[3].identifiers[0].hashed_email",
        },
        {
            "code": "INVALID_PARAMETER",
            "message": "conversion_id (+1 415 555 0100) is rejected, from 203.0.113.9",
            "parameter": "conversions[4].conversion_id",
        },
    ]
    out = redact_errors(errors)
    assert out[0] == {
        "code": "INVALID_PARAMETER",
        "message": f"hashed_email ({EMAIL}) is not a valid SHA-256 hash",
        "parameter": "conversions[3].identifiers[0].hashed_email",
    }
    assert out[1]["code"] == "INVALID_PARAMETER"
    assert out[1]["parameter"] == "conversions[4].conversion_id"
    assert PHONE in out[1]["message"]
    assert IP in out[1]["message"]
    assert "415 555" not in out[1]["message"]
    assert "203.0.113.9" not in out[1]["message"]
    assert errors[0]["message"].startswith("hashed_email (jane")  # the input is not changed


@given(st.emails(), st.sampled_from(["", "got ", "value ("]))
def test_contains_contact_agrees_with_redact_text(email: str, prefix: str) -> None:
    text = f"{prefix}{email} done"
    assert contains_contact(text)
    assert not contains_contact(redact_text(text))


@pytest.mark.parametrize(
    "text",
    ["Merino Wool Blanket", "ORD-100024", "5600000100007", "2026-01-01T00:00:00.000Z", "19.99"],
)
def test_contains_contact_keeps_ordinary_text(text: str) -> None:
    assert not contains_contact(text)
    assert redact_text(text) == text
