"""Which keys hold credentials, and how to mask them: the one classifier every output uses.

``check-config`` output, log redaction (``consumer.observability.redact``), exception
texts and dead-letter headers all ask :func:`is_secret_key`, so a librdkafka property
such as ``sasl.password``, ``ssl.keystore.password`` or ``sasl.oauthbearer.client.secret``
is masked in every one of them, not only in the place that happened to list it.

Pure: no I/O. The one piece of state, :class:`KnownSecrets`, holds the configured secret
values so that a line carrying one of them verbatim (a third-party debug line with no
recognisable key around it) is still scrubbed; it is filled once at start-up.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Final
from urllib.parse import quote

import orjson

MASK: Final = "[redacted]"
SECRET: Final = "[secret]"  # noqa: S105 (a placeholder, not a password)

#: Key name parts (after splitting ``snake_case``, ``kebab-case``, ``dotted.keys`` and
#: ``camelCase``) that make a value a credential.
SECRET_KEY_PARTS: Final = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "signature",
        "keytab",
    }
)

#: Whole (normalised) key names that hold credentials although no single part says so.
SECRET_KEYS: Final = frozenset(
    {
        "consumer_key",
        "api_key",
        "apikey",
        "private_key",
        "proxy_authorization",
        "auth_header",
        "signing_key",
        "ssl_key_pem",  # librdkafka: the client's private key as PEM text
        "ssl_key",
        "sasl_oauthbearer_config",  # librdkafka marks it sensitive: may carry a secret
    }
)

#: Key suffixes (normalised) that hold credentials: ``...private_key_pem`` and friends.
SECRET_KEY_SUFFIXES: Final = (
    "consumer_key",
    "api_key",
    "private_key",
    "key_pem",
    "key_password",
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_SPLIT = re.compile(r"[_\-.\s]+")


def normalise_key(key: str) -> str:
    """``sasl.oauthbearer.clientSecret`` -> ``sasl_oauthbearer_client_secret``."""
    return _KEY_SPLIT.sub("_", _CAMEL.sub("_", key).lower()).strip("_")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True when a value stored under ``key`` is a credential and must never be shown."""
    normal = normalise_key(key)
    if normal in SECRET_KEYS or normal.endswith(SECRET_KEY_SUFFIXES):
        return True
    return any(part in SECRET_KEY_PARTS for part in normal.split("_"))


#: Regex alternation of the words that, as the last word of a key in free text
#: (``password=x``, ``"sasl.password": "x"``), mark the value as a credential.
SECRET_WORDS_PATTERN: Final = "|".join(
    (
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        r"api[_\-]?key",
        r"consumer[_\-]key",
        r"private[_\-]key",
        r"signing[_\-]key",
        "authorization",
        "cookie",
        "credentials?",
    )
)

# scheme://userinfo@host: the whole user-info goes (a bare token is a credential too).
_URL_USERINFO = re.compile(r"(?<=://)[^/\s?#]+@")


def mask_url_userinfo(text: str) -> str:
    """Replace the user-info of every URL in ``text`` (``https://u:p@h`` -> ``https://[secret]@h``)."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_USERINFO.sub(SECRET + "@", text)


def mask_secrets(value: object) -> object:
    """A copy of plain data (dicts, lists, scalars) with every credential masked.

    Values under a secret key become ``[redacted]`` (``None`` stays ``None``: "not set"
    is useful and safe); strings elsewhere keep their text but lose URL user-info.
    """
    if isinstance(value, dict):
        return {
            key: (MASK if val is not None else None)
            if isinstance(key, str) and is_secret_key(key)
            else mask_secrets(val)
            for key, val in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return mask_url_userinfo(value)
    return value


#: Secrets shorter than this are not scrubbed by value: they would mask common words.
MIN_KNOWN_SECRET_LENGTH: Final = 6


def secret_forms(secret: str) -> set[str]:
    """The ways a secret shows up in text: as is, percent-encoded (once and twice, as in an
    OAuth signature base string), and JSON-escaped."""
    once = quote(secret, safe="")
    forms = {secret, once, quote(once, safe=""), orjson.dumps(secret).decode()[1:-1]}
    forms.add(quote(secret, safe="~"))  # RFC 3986 unreserved set, as oauthlib encodes
    return {form for form in forms if len(form) >= MIN_KNOWN_SECRET_LENGTH}


class KnownSecrets:
    """The configured secret values; :meth:`scrub` replaces any of their forms in a text.

    Thread-safe registration; scrubbing reads an immutable compiled pattern.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secrets: Iterable[str]) -> None:
        """Remember these values (too-short ones are ignored, see ``MIN_KNOWN_SECRET_LENGTH``)."""
        with self._lock:
            forms = set(self._forms)
            for secret in secrets:
                if len(secret) >= MIN_KNOWN_SECRET_LENGTH:
                    forms |= secret_forms(secret)
            self._forms = frozenset(forms)
            # Longest first, so a secret's encoded form wins over a shorter one inside it.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def clear(self) -> None:
        with self._lock:
            self._forms = frozenset()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._forms)

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(SECRET, text)


#: The process-wide registry: filled by ``consumer.commands.common.load_or_report`` with
#: the loaded settings' secrets, consulted by the log renderer on every line.
KNOWN_SECRETS: Final = KnownSecrets()
