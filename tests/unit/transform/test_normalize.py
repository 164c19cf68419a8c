"""Field rules: hashing vectors, phone/IP/time/money normalisation."""

from __future__ import annotations

import hashlib

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.transform.normalize import (
    format_time_ms,
    hash_email,
    hash_phone,
    normalize_ip,
    normalize_phone,
    parse_amount,
    parse_count,
    parse_time_ms,
    sum_amounts,
)
from consumer.transform.types import ReasonCode

VECTOR = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"


@pytest.mark.parametrize(
    "raw", ["test-email@test.com", "  Test-Email@TEST.com\t", "TEST-EMAIL@TEST.COM"]
)
def test_email_vector_from_x_docs(raw: str) -> None:
    assert hash_email(raw) == VECTOR


def test_email_already_hashed_passes_through_lower_cased() -> None:
    assert hash_email(VECTOR.upper()) == VECTOR
    assert hash_email(f"  {VECTOR} ") == VECTOR


@pytest.mark.parametrize(
    "raw", ["", "   ", "no-at-sign", "@example.com", "ava@", "a b@example.com"]
)
def test_email_that_cannot_be_an_address_is_dropped(raw: str) -> None:
    assert hash_email(raw) is None


@given(st.emails())
def test_email_hash_is_idempotent(address: str) -> None:
    once = hash_email(address)
    assert once is not None
    assert hash_email(once) == once
    assert hash_email(once.upper()) == once


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 (201) 555-0123", "US", "+12015550123"),
        ("+12015550123", "US", "+12015550123"),
        ("(201) 555-0123", "US", "+12015550123"),
        ("201.555.0123", "US", "+12015550123"),
        ("1-201-555-0123", "US", "+12015550123"),
        ("+44 7400 123456", "US", "+447400123456"),
        ("07400 123456", "GB", "+447400123456"),
        ("0044 7400 123456", "GB", "+447400123456"),
        ("030 1234567", "DE", "+49301234567"),
        ("06 12 34 56 78", "FR", "+33612345678"),
    ],
)
def test_phone_to_e164(raw: str, region: str, e164: str) -> None:
    assert normalize_phone(raw, region) == e164
    assert hash_phone(raw, region) == hashlib.sha256(e164.encode()).hexdigest()


@pytest.mark.parametrize("raw", ["", "abc", "12", "555-0123", "+0 123 456 789", "+1", "++1234567"])
def test_unparseable_phone_is_dropped(raw: str) -> None:
    assert hash_phone(raw, "US") is None


def test_phone_already_hashed_passes_through() -> None:
    digest = hashlib.sha256(b"+12015550123").hexdigest()
    assert hash_phone(digest.upper(), "US") == digest


@given(st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True))
def test_nanp_fast_path_agrees_with_phonenumbers(digits: str) -> None:
    parsed = phonenumbers.parse(digits, "US")
    slow = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    assert normalize_phone(digits, "US") == slow
    assert normalize_phone(f"({digits[:3]}) {digits[3:6]}-{digits[6:]}", "US") == slow


@given(st.from_regex(r"\+[1-9][0-9]{7,13}", fullmatch=True))
def test_e164_fast_path_keeps_the_digits(number: str) -> None:
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    assert normalize_phone(spaced, "DE") == number


@pytest.mark.parametrize(
    ("raw", "send_ipv6", "expected"),
    [
        ("8.25.197.25", False, "8.25.197.25"),
        (" 203.0.113.7 ", False, "203.0.113.7"),
        ("::ffff:203.0.113.7", False, "203.0.113.7"),
        ("2001:db8::1", False, None),
        ("2001:DB8:0:0::1", True, "2001:db8::1"),
        ("256.1.1.1", False, None),
        ("01.2.3.4", False, None),
        ("1.2.3", False, None),
        ("example.com", False, None),
        ("", False, None),
    ],
)
def test_ip_address(raw: str, send_ipv6: bool, expected: str | None) -> None:
    assert normalize_ip(raw, send_ipv6) == expected


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        ("2022-02-18T01:14:00.603Z", 1645146840603),
        ("2022-02-18T02:14:00.603+01:00", 1645146840603),
        ("2022-02-17T20:44:00.603-04:30", 1645146840603),
        ("2022-02-18T01:14:00.6039Z", 1645146840603),
        ("2022-02-18T01:14:00Z", 1645146840000),
        (1645146840, 1645146840000),
        (1645146840.603, 1645146840603),
        (1645146840603, 1645146840603),
        (1645146840603123, 1645146840603),
        ("1645146840603", 1645146840603),
    ],
)
def test_time_parsing(raw: object, ms: int) -> None:
    assert parse_time_ms(raw) == ms


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("2022-02-18T01:14:00.603", ReasonCode.NAIVE_TIME),
        ("2022-02-18", ReasonCode.NAIVE_TIME),
        ("yesterday", ReasonCode.INVALID_TIME),
        ("2022-13-40T00:00:00Z", ReasonCode.INVALID_TIME),
        (-5, ReasonCode.INVALID_TIME),
        (float("nan"), ReasonCode.INVALID_TIME),
        (10**20, ReasonCode.INVALID_TIME),
        (True, ReasonCode.INVALID_TIME),
        (None, ReasonCode.INVALID_TIME),
        ({"t": 1}, ReasonCode.INVALID_TIME),
    ],
)
def test_time_rejections(raw: object, code: ReasonCode) -> None:
    assert parse_time_ms(raw) == code


@given(st.integers(min_value=0, max_value=253402300799999))
def test_time_format_is_x_form_and_round_trips(ms: int) -> None:
    text = format_time_ms(ms)
    assert len(text) == 24
    assert text.endswith("Z")
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(
    ("raw", "number", "text"),
    [
        ("19.99", 19.99, "19.99"),
        ("20.00", 20.0, "20.00"),
        (19.99, 19.99, "19.99"),
        (0.1, 0.1, "0.1"),
        (20, 20.0, "20"),
        ("0", 0.0, "0"),
    ],
)
def test_amounts_keep_their_digits(raw: object, number: float, text: str) -> None:
    assert parse_amount(raw) == (number, text)


@pytest.mark.parametrize(
    "raw", ["-1", -0.01, "1,000.00", "1e3", "abc", "", float("inf"), True, None]
)
def test_invalid_amounts(raw: object) -> None:
    assert parse_amount(raw) is None


def test_sum_of_items_is_exact() -> None:
    assert sum_amounts([("0.10", 3), ("19.99", 1)]) == (20.29, "20.29")


@pytest.mark.parametrize(("raw", "count"), [(3, 3), (3.0, 3), ("4", 4)])
def test_counts(raw: object, count: int) -> None:
    assert parse_count(raw) == count


@pytest.mark.parametrize("raw", [0, -1, 2.5, "0", "x", True, None, "٣"])
def test_invalid_counts(raw: object) -> None:
    assert parse_count(raw) is None


@given(
    st.text(alphabet="0123456789.-+e_ ", max_size=30)
    | st.from_regex(r"[0-9]{1,16}(\.[0-9]{1,11})?", fullmatch=True)
)
def test_amount_text_fast_check_equals_the_decimal_grammar(text: str) -> None:
    from consumer.transform.normalize import _DECIMAL_TEXT

    expected = _DECIMAL_TEXT.fullmatch(text.strip()) is not None
    assert (parse_amount(text) is not None) == expected


@given(st.text(alphabet="+0123456789 -()٣", max_size=20))
def test_e164_shape_checks_equal_the_regex(text: str) -> None:
    """The string-method E.164 fast paths accept exactly what ``_E164`` matches."""
    from consumer.transform.normalize import _E164

    compact = text.replace(" ", "").replace("-", "")
    result = normalize_phone(text, "ZZ")  # unknown region: no NANP path, no parse success
    if _E164.fullmatch(compact):
        assert result == compact
    elif compact.startswith("+") and compact[1:].isdigit() and compact.isascii():
        assert result is None  # E.164-like but a bad length or a leading zero


@given(st.ip_addresses(v=6).map(str) | st.ip_addresses(v=6).map(lambda a: str(a).upper()))
def test_ipv6_shortcut_equals_the_full_parse(text: str) -> None:
    import ipaddress

    mapped = ipaddress.IPv6Address(text).ipv4_mapped
    assert normalize_ip(text, False) == (None if mapped is None else str(mapped))


def _time_by_aware_datetime(text: str) -> int | ReasonCode:
    """parse_time_ms's general path (``fromisoformat`` of the whole text, an aware
    subtraction): the reference the ISO fast path must equal."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return ReasonCode.INVALID_TIME
    if moment.utcoffset() is None:
        return ReasonCode.NAIVE_TIME
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


_iso_times = st.builds(
    lambda moment, fraction, offset: moment.isoformat(timespec=fraction) + offset,
    st.datetimes(),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-08:00", "+14:00", "-23:59"])
    | st.from_regex(r"[+-][0-9]{2}:[0-9]{2}", fullmatch=True),
)
# The same shape with one character replaced: digits, separators, letters, non-ASCII digits.
_odd_times = st.builds(
    lambda text, position, char: (
        text[: position % len(text)] + char + text[position % len(text) + 1 :]
    ),
    _iso_times,
    st.integers(0, 40),
    st.sampled_from([*"09T:-+.Z ,tz\u0663", "", "00", "ZZ", "+01:00"]),
)


@given(_iso_times | _odd_times)
def test_iso_time_fast_path_equals_the_aware_datetime_parse(text: str) -> None:
    if 10 <= len(text.strip()) <= 40 and not text.strip().isdigit():
        assert parse_time_ms(text) == _time_by_aware_datetime(text)
