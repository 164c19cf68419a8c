"""Normalisation rules of single fields: pure functions, cheap on the common input shapes."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Final

import phonenumbers

from consumer.transform.types import ReasonCode

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_sha256 = hashlib.sha256


def is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and _HEX64.fullmatch(text) is not None


def hash_email(raw: str) -> str | None:
    """SHA-256 hex of the trimmed, lower-cased address; a 64-hex value passes through.

    Returns None for text that cannot be an address (not exactly one ``@`` with text on
    both sides, inner white space): such a value is dropped as an identifier, never sent.
    """
    text = raw.strip()
    if len(text) == 64 and _HEX64.fullmatch(text):
        return text.lower()
    text = text.lower()
    at = text.find("@")
    if at <= 0 or at == len(text) - 1 or text.count("@") != 1 or " " in text or "\t" in text:
        return None
    return _sha256(text.encode()).hexdigest()


_PHONE_PUNCT: Final = str.maketrans("", "", " -().\u00a0/\t")
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
# North American Numbering Plan regions: a 10-digit national number is +1 and its digits.
NANP_REGIONS: Final = frozenset(
    "US CA AG AI AS BB BM BS DM DO GD GU JM KN KY LC MP MS PR SX TC TT VC VG VI".split()  # noqa: SIM905
)
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE


def _fast_phone(compact: str, nanp: bool) -> str | None:
    """E.164 without a ``phonenumbers`` parse for the two shapes that need none."""
    if not compact.isascii():
        return None
    if compact.startswith("+"):
        # the shape of _E164 without a regex: "+", a non-zero digit, 7-15 digits in all
        digits = compact[1:]
        if 7 <= len(digits) <= 15 and digits.isdigit() and digits[0] != "0":
            return compact
        return None
    if nanp and compact.isdigit():
        if len(compact) == 10 and compact[0] > "1" and compact[3] > "1":
            return "+1" + compact
        if len(compact) == 11 and compact[0] == "1" and compact[1] > "1" and compact[4] > "1":
            return "+" + compact
    return None


def normalize_phone(raw: str, region: str) -> str | None:
    """E.164 form of a phone number, or None when it cannot be parsed.

    Fast paths (a ``phonenumbers`` parse costs 10-30 µs): input that is E.164 once
    punctuation is removed (only its shape is checked), and 10-digit NANP numbers when
    the default region is in the NANP. Everything else is parsed with the default
    region and must be a possible number (not only a local one).
    """
    compact = raw.replace(" ", "").replace("-", "")
    if compact[:1] == "+" and compact.isascii():  # E.164 once spaces and dashes are gone
        digits = compact[1:]
        if 7 <= len(digits) <= 15 and digits.isdigit() and digits[0] != "0":
            return compact
    if "(" in compact or "." in compact or "/" in compact or "\u00a0" in compact:
        compact = compact.translate(_PHONE_PUNCT)
    fast = _fast_phone(compact, region in NANP_REGIONS)
    if fast is not None:
        return fast
    if compact.startswith("+") and compact[1:].isdigit() and compact.isascii():
        return None  # looked like E.164 but has a bad length or a leading zero
    return _parse_phone(raw, region)


@lru_cache(maxsize=1024)
def _parse_phone(raw: str, region: str) -> str | None:
    """The ``phonenumbers`` parse (10-30 µs), kept for the last 1024 distinct inputs: a
    customer's number repeats across their orders and redeliveries. Pure, so the cache
    cannot change a result; bounded, so it holds at most 1024 numbers in memory."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != _POSSIBLE:
        return None
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def hash_phone(raw: str, region: str) -> str | None:
    """SHA-256 hex of the E.164 number; a 64-hex value passes through lower-cased."""
    text = raw.strip()
    if len(text) == 64 and _HEX64.fullmatch(text):
        return text.lower()
    e164 = normalize_phone(text, region)
    if e164 is None:
        return None
    return _sha256(e164.encode()).hexdigest()


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def normalize_ip(raw: str, send_ipv6: bool) -> str | None:
    """Dotted-decimal IPv4 (what X documents); IPv4-mapped IPv6 is unwrapped.

    Other IPv6 addresses are returned compressed only when ``send_ipv6``; else None.
    Leading zeros in IPv4 parts are refused (ambiguous: octal in some parsers).
    """
    text = raw.strip()
    if ":" not in text:
        return text if _IPV4.fullmatch(text) else None
    if not send_ipv6 and "ffff" not in text.lower():
        return None  # not IPv4-mapped (its ffff group is always spelled out): dropped anyway
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        if send_ipv6 and address.scope_id is None:
            return address.compressed
    return None


# --- time ----------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)
# UTC offset text -> milliseconds: every whole-minute offset ``fromisoformat`` accepts.
_OFFSET_MS: Final = {
    f"{sign}{hours:02d}:{minutes:02d}": (1 if sign == "+" else -1) * (hours * 60 + minutes) * 60_000
    for sign in "+-"
    for hours in range(24)
    for minutes in range(60)
}


def parse_time_ms(value: object) -> int | ReasonCode:
    """Epoch milliseconds (UTC) of an ISO 8601 text with an offset, or of epoch s/ms/µs.

    Epoch numbers are told apart by size: below 1e11 seconds, below 1e14 milliseconds,
    below 1e17 microseconds (GA4's ``timestamp_micros``). Digit-only text counts as a
    number. A time without offset is ``naive_time``.
    """
    kind = type(value)
    if kind is str:
        text: str = value.strip()  # type: ignore[attr-defined]
        if text.isdigit() and text.isascii() and len(text) < 18:
            return _epoch_ms(int(text))
        if len(text) < 10 or len(text) > 40:
            return ReasonCode.INVALID_TIME
        # Fast path, the shape producers send: ``2026-01-01T01:45:10.654+02:00`` or
        # ``...Z`` (whole seconds, ms or µs). Only the local part is parsed: an aware
        # datetime's subtraction costs ~0.4 µs. fromisoformat still checks its digits
        # and ranges (the fraction is digits: no offset hides in it), and the offset is
        # one of the whole-minute ones it accepts.
        offset: int | None
        if text[-1] == "Z":
            local, offset = text[:-1], 0
        else:
            local, offset = text[:-6], _OFFSET_MS.get(text[-6:])
        if (
            offset is not None
            and (
                len(local) == 19
                or (len(local) in (23, 26) and local[19] == "." and local[20:].isdigit())
            )
            and local[10] == "T"
            and local[4] == local[7] == "-"
            and local[13] == local[16] == ":"
        ):
            try:
                delta = datetime.fromisoformat(local) - _EPOCH_NAIVE
            except ValueError:
                pass  # left to the general path (which answers invalid_time)
            else:
                ms: int = delta.days * 86_400_000 + delta.seconds * 1000
                return ms + delta.microseconds // 1000 - offset
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return ReasonCode.INVALID_TIME
        if moment.utcoffset() is None:  # also None without tzinfo
            return ReasonCode.NAIVE_TIME
        try:
            delta = moment - _EPOCH
        except OverflowError:
            return ReasonCode.INVALID_TIME
        return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    if kind is int:
        return _epoch_ms(value)  # type: ignore[arg-type]
    if kind is float:
        number: float = value  # type: ignore[assignment]
        if not math.isfinite(number) or number < 0:
            return ReasonCode.INVALID_TIME
        if number < 1e11:
            return round(number * 1000)
        if number < 1e14:
            return round(number)
        if number < 1e17:
            return round(number / 1000)
        return ReasonCode.INVALID_TIME
    return ReasonCode.INVALID_TIME


def _epoch_ms(number: int) -> int | ReasonCode:
    if number < 0:
        return ReasonCode.INVALID_TIME
    if number < 100_000_000_000:
        return number * 1000
    if number < 100_000_000_000_000:
        return number
    if number < 100_000_000_000_000_000:
        return number // 1000
    return ReasonCode.INVALID_TIME


_TWO: Final = tuple(f"{n:02d}" for n in range(60))
_THREE: Final = tuple(f"{n:03d}" for n in range(1000))
# "yyyy-MM-ddTHH:mm:" per epoch minute; events of a stream share few minutes (no PII).
_minute_cache: dict[int, str] = {}


def format_time_ms(epoch_ms: int) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC, the form X's error text asks for."""
    seconds, millis = divmod(epoch_ms, 1000)
    minute, secs = divmod(seconds, 60)
    prefix = _minute_cache.get(minute)
    if prefix is None:
        t = time.gmtime(minute * 60)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        if len(_minute_cache) > 4096:
            _minute_cache.clear()
        _minute_cache[minute] = prefix
    return f"{prefix}{_TWO[secs]}.{_THREE[millis]}Z"


# --- money ---------------------------------------------------------------------------

_DECIMAL_TEXT: Final = re.compile(r"[0-9]{1,15}(\.[0-9]{1,10})?")
# [0-9] is ASCII only (unlike \d); one C-level fullmatch beats the str-method checks of
# is_decimal_text by ~80 ns per amount (four amounts per event in the benchmark mix).
match_decimal: Final = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,10})?").fullmatch
MAX_AMOUNT: Final = 1e15


def is_decimal_text(text: str) -> bool:
    """The ``_DECIMAL_TEXT`` grammar (up to 15 digits, optionally a dot and 1-10 digits; no
    sign, exponent, "_", nan/inf) with str methods, cheaper than the regex on the hot path."""
    if not text.isascii() or not text.replace(".", "", 1).isdigit():
        return False
    dot = text.find(".")
    if dot < 0:
        return len(text) <= 15
    return 0 < dot <= 15 and 0 < len(text) - dot - 1 <= 10


def amount_number(value: object) -> float | None:
    """A non-negative amount as the float to send, or None when invalid.

    Decimal text goes through ``float`` once (shortest round trip, so "19.99" is sent as
    19.99); a JSON number is used as is. Use ``parse_amount`` when the text is needed.
    """
    kind = type(value)
    if kind is str:
        text: str = value.strip()  # type: ignore[attr-defined]
        return float(text) if match_decimal(text) is not None else None
    if kind is float:
        number: float = value  # type: ignore[assignment]
        # NaN and infinities fail the comparison
        return number if 0.0 <= number < MAX_AMOUNT else None
    if kind is int:
        integer: int = value  # type: ignore[assignment]
        return float(integer) if 0 <= integer < MAX_AMOUNT else None
    return None


def parse_amount(value: object) -> tuple[float, str] | None:
    """A non-negative amount as (float, decimal text), or None when invalid.

    The text keeps the producer's digits ("20.00" stays "20.00"); a JSON number keeps
    its shortest round-trip form (19.99 stays 19.99), so no binary rounding shows up.
    """
    number = amount_number(value)
    if number is None:
        return None
    if type(value) is str:
        return number, value.strip()
    if type(value) is float:
        return number, repr(number)
    return number, str(value)


def sum_amounts(parts: list[tuple[str, int]]) -> tuple[float, str] | None:
    """Exact sum of price * quantity over decimal texts (Decimal, never float)."""
    try:
        total = sum((Decimal(text) * quantity for text, quantity in parts), Decimal(0))
    except InvalidOperation:
        return None
    if total >= Decimal(int(MAX_AMOUNT)):
        return None
    text = format(total, "f")
    return float(text), text


def parse_count(value: object) -> int | None:
    """A positive integer (an integral float or digit text is accepted), else None."""
    kind = type(value)
    if kind is int:
        count: int = value  # type: ignore[assignment]
        return count if 0 < count < 1_000_000_000 else None
    if kind is float:
        number: float = value  # type: ignore[assignment]
        if math.isfinite(number) and number.is_integer() and 0 < number < 1e9:
            return int(number)
        return None
    if kind is str:
        text: str = value.strip()  # type: ignore[attr-defined]
        if text.isascii() and text.isdigit() and len(text) < 10:
            count = int(text)
            return count if count > 0 else None
    return None
