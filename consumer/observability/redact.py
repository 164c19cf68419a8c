"""PII and secret redaction for log event dicts: pure, no I/O, cheap enough for every line.

Two independent nets, so that one mistake in a call site is not enough to leak:

1. **By key name.** A value whose key names a secret (the shared classifier,
   :func:`consumer.observability.secrets.is_secret_key`) or a personal field
   (``email``, ``phone``, ``ip_address``, ``user_agent``...) is replaced by
   ``[redacted]`` whatever it holds, including nested containers.
2. **By value pattern.** Every other string (event message, exception text, nested values,
   dict keys) is scanned for e-mail addresses, phone numbers, IPv4/IPv6 addresses and
   credential shapes (``Bearer x``, ``oauth_signature="x"``, ``password=x``, Python pairs
   ``('oauth_token', 'x')``, percent-encoded ``oauth_token%3Dx``, ``signature: x``,
   ``scheme://userinfo@host``); each hit is replaced by a typed placeholder
   (``[email]``, ``[phone]``, ``[ip]``, ``[secret]``).

The third net, the configured secrets' values, runs on the rendered line
(``consumer.observability.logging.ScrubKnownSecrets``). :func:`redact_headers` applies
the same rules to dead-letter headers.

Infrastructure addresses are not personal data: values under the keys in
``INFRA_ADDRESS_KEYS`` (``bootstrap_servers``, ``listen``, ``base_url``...) keep their IP
addresses (the other patterns still apply), and loopback/unspecified addresses
(``127.0.0.0/8``, ``::1``, ``0.0.0.0``, ``::``) are kept everywhere.

Numbers are only redacted when they look like phone numbers written by a human: a leading
``+``, a parenthesised area code, or 7 to 15 digits split into groups by spaces, dashes or
dots. Bare digit runs (offsets, partitions, timestamps), decimals (durations), ISO dates,
hex hashes and UUIDs are left alone; ``int``/``float`` values are never touched.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import orjson

from consumer.observability.secrets import (
    KNOWN_SECRETS,
    SECRET_KEY_PARTS,
    SECRET_KEYS,
    SECRET_WORDS_PATTERN,
    is_secret_key,
    mask_url_userinfo,
    normalise_key,
)
from consumer.observability.secrets import (
    SECRET as SECRET,  # noqa: PLC0414 - re-exported: the placeholder callers compare to
)

REDACTED: Final = "[redacted]"
EMAIL: Final = "[email]"
PHONE: Final = "[phone]"
IP: Final = "[ip]"

#: Key name parts (after splitting ``snake_case``, ``kebab-case``, ``dotted.keys`` and
#: ``camelCase``) that make the whole value personal data. Credentials are classified by
#: :func:`consumer.observability.secrets.is_secret_key` (the one classifier for secrets).
PERSONAL_KEY_PARTS: Final = frozenset(
    {"email", "emails", "phone", "phones", "msisdn", "ip", "ipv4", "ipv6"}
)

#: Whole (normalised) key names that are personal although no single part is.
PERSONAL_KEYS: Final = frozenset(
    {
        "ip_address",
        "user_agent",
        "useragent",
        "remote_addr",
        "x_forwarded_for",
        "forwarded",
        "sasl_username",
        "first_name",
        "last_name",
        "full_name",
        "street",
        "street_address",
        "shipping_address",
        "billing_address",
        "postal_code",
        "zip",
    }
)

#: Every key part / whole key that redacts a value: secrets and personal data.
SENSITIVE_KEY_PARTS: Final = SECRET_KEY_PARTS | PERSONAL_KEY_PARTS
SENSITIVE_KEYS: Final = SECRET_KEYS | PERSONAL_KEYS

#: Keys whose values carry the service's own infrastructure endpoints: IP addresses
#: under them (recursively) are kept. E-mail/phone/secret patterns still apply.
INFRA_ADDRESS_KEYS: Final = frozenset(
    {
        "listen",
        "bind",
        "host",
        "hosts",
        "port",
        "bootstrap",
        "bootstrap_servers",
        "broker",
        "brokers",
        "base_url",
        "endpoint",
        "metrics_address",
        "sandbox_url",
    }
)

_KEY_PLAIN: Final = 0
_KEY_SENSITIVE: Final = 1
_KEY_INFRA: Final = 2


@lru_cache(maxsize=4096)
def _classify_key(key: str) -> int:
    if is_secret_key(key):
        return _KEY_SENSITIVE
    normal = normalise_key(key)
    if normal in PERSONAL_KEYS or any(part in PERSONAL_KEY_PARTS for part in normal.split("_")):
        return _KEY_SENSITIVE
    if normal in INFRA_ADDRESS_KEYS:
        return _KEY_INFRA
    return _KEY_PLAIN


def is_sensitive_key(key: str) -> bool:
    """True when a value stored under ``key`` is always replaced by ``[redacted]``."""
    return _classify_key(key) == _KEY_SENSITIVE


# --- value patterns ------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)
# `Bearer x`, `Basic x`: the scheme stays, the credential goes.
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9._~+/=\-]{6,}")
# oauth_*="value" inside an OAuth header, except harmless protocol parameters.
_OAUTH_NAMES: Final = r"oauth_(?:consumer_key|token|signature|nonce|verifier|callback)"
_OAUTH_PARAM = re.compile(rf"(?i)\b({_OAUTH_NAMES})(\s*=\s*)(\"[^\"]*\"|[^\s,&\"]+)")
# Cheap substring tests that gate the case-insensitive patterns below (slow in `re`).
_SECRET_WORDS: Final = (
    "pass",
    "secret",
    "token",
    "key",
    "authorization",
    "cookie",
    "credential",
    "sign",
)
_AUTH_SCHEME_WORDS: Final = ("bearer", "basic", "digest")
_KEY_WORD: Final = rf"[\w.\-]*(?:{SECRET_WORDS_PATTERN}|signature|{_OAUTH_NAMES})"
# A quoted value as Python's repr or JSON writes it: backslash escapes inside.
_QUOTED_VALUE: Final = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
# key=value / key: value where the key's last word names a secret.
_SECRET_KV = re.compile(
    rf"(?i)((?:{SECRET_WORDS_PATTERN}|signature))\b([\"']?\s*[=:]\s*)"
    r"(?!\[(?:redacted|secret)\])"  # already masked (librdkafka masks its own dump)
    rf"({_QUOTED_VALUE}|[^\s\"',;&)}}\]]+)"
)
# Python reprs of pairs, as oauthlib logs its parameters: ('oauth_token', 'value').
_SECRET_PAIR = re.compile(rf"(?i)(['\"]{_KEY_WORD}['\"]\s*,\s*)({_QUOTED_VALUE})")
# Percent-encoded key=value inside an encoded query or an OAuth signature base string:
# oauth_token%3Dvalue%26... (%253D / %2526 once more encoded). The value ends at the
# encoded separator.
_SECRET_ENCODED = re.compile(
    rf"(?i)({_KEY_WORD})(%3D|%253D)((?:[^%&\s,\"']|%(?!26|2526)[0-9A-Fa-f]{{2}})+)"
)
# Lines that print signing material bare: "signature base string: POST&...",
# "signing key: ...", "Signature: ...".
_SIGNING_LINE = re.compile(
    r"(?i)\b(base string|signing key|signing string|signature)(\s*[:=]\s*)(\S+)"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)"
)
# Candidates only; ipaddress validates them (times like 12:30:45 are not addresses).
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|"
    r"(?:\d{1,3}\.){3}\d{1,3})?(?:%[\w.]+)?(?![\w:])"
)
_PHONE_CANDIDATE = re.compile(r"(?<![\w.+\-(])(?:\+|\()?\d[\d .()\-]*\d(?![\w\-]|\.\w)")
_ISO_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_GROUP_SPLIT = re.compile(r"[ .()\-]+")
_DIGIT = re.compile(r"\d")
_LOOPBACK_V4_PREFIX: Final = "127."


def _ipv4_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith(_LOOPBACK_V4_PREFIX) or text == "0.0.0.0":  # noqa: S104
        return text
    return IP


def _ipv6_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.count(":") < 2:
        return text
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return text
    if addr.is_loopback or addr.is_unspecified:
        return text
    return IP


def _looks_like_phone(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15:
        return False
    if text[0] in "+(":
        return True
    if _ISO_DATE.match(text):
        return False
    seps = set(_GROUP_SPLIT.findall(text))
    if seps == {"."} and _IPV4.fullmatch(text):
        return False  # an address kept on purpose (loopback, infrastructure key)
    groups = [g for g in _GROUP_SPLIT.split(text) if g]
    if len(groups) < 2:
        return False  # a bare digit run: an offset, an id, a timestamp
    if seps == {"."} and len(groups) == 2:
        return False  # a decimal number
    if len(groups) == 2:
        # National formats such as "030 123456" or "555-1234"; not "1000000-1000499" (an
        # offset range with a long first part). A "200 1234" in free text is redacted too:
        # over-redaction is the safe side.
        first, second = groups
        return len(first) <= 5 and len(second) >= 3
    return True


def _phone_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    return PHONE if _looks_like_phone(text) else text


def _keep_two_groups(match: re.Match[str]) -> str:
    return match.group(1) + match.group(2) + SECRET


def _keep_one_group(match: re.Match[str]) -> str:
    return match.group(1) + SECRET


def _redact_credentials(text: str) -> str:
    """The credential shapes: schemes, key=value, pairs, percent-encoded, signing lines."""
    # Case-insensitive alternations are slow in `re`: run them only when a keyword is there.
    has_space = " " in text
    has_kv = "=" in text or ":" in text
    has_pair = "," in text and ("'" in text or '"' in text)
    has_encoded = "%" in text
    if not (has_space or has_kv or has_pair or has_encoded):
        return text
    lower = text.lower()
    if has_space and any(word in lower for word in _AUTH_SCHEME_WORDS):
        text = _AUTH_SCHEME.sub(_keep_two_groups, text)
    if not any(word in lower for word in _SECRET_WORDS):
        return text
    if has_kv:
        text = _SECRET_KV.sub(_keep_two_groups, text)
        if "oauth_" in lower:
            text = _OAUTH_PARAM.sub(_keep_two_groups, text)
        if "sign" in lower or "base string" in lower:
            text = _SIGNING_LINE.sub(_keep_two_groups, text)
    if has_pair:
        text = _SECRET_PAIR.sub(_keep_one_group, text)
    if has_encoded and ("%3d" in lower or "%253d" in lower):
        text = _SECRET_ENCODED.sub(_keep_two_groups, text)
    return text


def redact_text(text: str, *, keep_ips: bool = False) -> str:
    """Replace e-mails, phones, IPs and credential shapes in free text by placeholders."""
    if "@" in text:
        text = mask_url_userinfo(text)
        text = _EMAIL_RE.sub(EMAIL, text)
    text = _redact_credentials(text)
    if not keep_ips:
        if ":" in text:
            text = _IPV6.sub(_ipv6_sub, text)
        if "." in text:
            text = _IPV4.sub(_ipv4_sub, text)
    if _DIGIT.search(text) is not None:
        text = _PHONE_CANDIDATE.sub(_phone_sub, text)
    return text


def contains_contact(text: str) -> bool:
    """True when ``text`` holds an e-mail address or a phone number, by the same
    patterns ``redact_text`` replaces: the transform drops (free text) or hashes (ids)
    such values, so what it sends and what a log line would show agree.

    Cheap on the common input: text without ``@`` and without a digit is one scan.
    """
    if "@" in text and _EMAIL_RE.search(text) is not None:
        return True
    if _DIGIT.search(text) is None:
        return False
    return any(_looks_like_phone(m.group(0)) for m in _PHONE_CANDIDATE.finditer(text))


_PHONE_CHARS: Final = "0123456789 +-()."


def is_contact_id(text: str) -> bool:
    """True when an id (order or conversion id, item id, twclid) holds an e-mail address
    or IS a phone number (nothing but digits and phone punctuation, shaped as
    ``redact_text`` recognises phones). Cheaper than :func:`contains_contact`: ids are
    unique per event, so no cache helps, and an id with a letter is no phone number
    (``ORD-100024``), while a bare digit run is an id, not a phone (``5600000100007``).
    """
    if "@" in text and _EMAIL_RE.search(text) is not None:
        return True
    if text.isdigit() or text.strip(_PHONE_CHARS):
        return False  # a bare digit run (an order number), or a character no phone has
    return _looks_like_phone(text.strip())


def redact_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """X's error objects with every text redacted as a log line's would be.

    X's messages echo the values they refuse (``hashed_email (x@y.z) is not a valid
    SHA-256 hash``): the dead-letter writer calls this on ``DeadLetter.errors`` (and
    ``redact_text`` on ``DeadLetter.message``) before building the headers. Keys are
    X's own (``code``, ``message``, ``parameter``), so only values are scanned.
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        out.append({str(key): redact_value(value) for key, value in error.items()})
    return out


def redact_value(value: Any, *, keep_ips: bool = False) -> Any:
    """Redact any loggable value by pattern; containers recursively, keys by name too.

    Objects other than str/bytes/numbers/containers are turned into ``str(value)`` and
    scanned, so a custom ``__repr__`` cannot smuggle PII past the renderer.
    """
    if isinstance(value, str):
        return redact_text(value, keep_ips=keep_ips)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return _redact_mapping(value, keep_ips=keep_ips)
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, keep_ips=keep_ips) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return redact_text(bytes(value).decode("utf-8", "replace"), keep_ips=keep_ips)
    return redact_text(str(value), keep_ips=keep_ips)


def _redact_mapping(mapping: Mapping[Any, Any], *, keep_ips: bool) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, val in mapping.items():
        if isinstance(key, str):
            kind = _classify_key(key)
            out_key = redact_text(key, keep_ips=keep_ips)
        else:
            kind = _KEY_PLAIN
            out_key = key
        if kind == _KEY_SENSITIVE:
            out[out_key] = REDACTED if val is not None else None
        else:
            out[out_key] = redact_value(val, keep_ips=keep_ips or kind == _KEY_INFRA)
    return out


def redact_event_dict(
    event_dict: Mapping[str, Any], passthrough: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Return a redacted copy of a structlog event dict, keys in their original order.

    Top-level keys are chosen by code, so they are classified but not scanned; keys in
    ``passthrough`` (values structlog itself adds, like the timestamp) are copied as is.
    """
    out: dict[str, Any] = {}
    for key, val in event_dict.items():
        if key in passthrough:
            out[key] = val
            continue
        kind = _classify_key(key)
        if kind == _KEY_SENSITIVE:
            out[key] = REDACTED if val is not None else None
        elif isinstance(val, str):
            out[key] = redact_text(val, keep_ips=kind == _KEY_INFRA)
        else:
            out[key] = redact_value(val, keep_ips=kind == _KEY_INFRA)
    return out


class RedactProcessor:
    """structlog processor wrapping :func:`redact_event_dict`; put it last before the renderer.

    ``passthrough`` names keys that structlog itself fills (timestamp, level), so they are
    not scanned: a small saving on every line.
    """

    __slots__ = ("_passthrough",)

    def __init__(self, passthrough: frozenset[str] = frozenset({"timestamp", "level"})) -> None:
        self._passthrough = passthrough

    def __call__(self, logger: object, method_name: str, event_dict: Any) -> Any:
        return redact_event_dict(event_dict, self._passthrough)


#: Dead-letter headers whose values are free text (messages, X's errors) and are scanned.
DEAD_LETTER_TEXT_HEADERS: Final = frozenset({"xconv.message", "xconv.field"})
DEAD_LETTER_JSON_HEADERS: Final = frozenset({"xconv.x.errors"})


def redact_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Kafka headers as a dead-letter record may carry them: no credential, no PII.

    Any header whose name the classifier calls sensitive (an original ``authorization``
    header, say) keeps its name with ``[redacted]`` as value; the free-text ``xconv.*``
    headers are scanned like a log line (``xconv.x.errors`` as JSON, so it stays valid);
    the coordinates (topic, partition, offset, time, attempts, reason) are left exact.
    Order and names are kept.
    """
    out: list[tuple[str, bytes]] = []
    for key, value in headers:
        if is_sensitive_key(key):
            out.append((key, REDACTED.encode()))
        elif key in DEAD_LETTER_TEXT_HEADERS:
            text = KNOWN_SECRETS.scrub(redact_text(value.decode("utf-8", "replace")))
            out.append((key, text.encode()))
        elif key in DEAD_LETTER_JSON_HEADERS:
            out.append((key, _redact_json(value)))
        else:
            out.append((key, value))
    return out


def _redact_json(value: bytes) -> bytes:
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return KNOWN_SECRETS.scrub(redact_text(value.decode("utf-8", "replace"))).encode()
    redacted = orjson.dumps(redact_value(decoded))
    return KNOWN_SECRETS.scrub(redacted.decode()).encode()
