"""Authentication as X does it: OAuth 1.0a HMAC-SHA1 (verified by oauthlib) or X-Pixel-Token.

The signature base string is rebuilt from the method, the URL the server reconstructs
(``public_base_url`` or scheme + ``Host`` header, then the raw path and query) and the
OAuth parameters; a JSON body is not part of it (RFC 5849 signs form bodies only).
A timestamp further than ``skew_s`` from the clock is stale; a nonce seen before for the
same client and token inside the window is a replay. Nonces are kept in bounded memory.

A plainly written header of known credentials, fresh and correctly signed, is accepted
without oauthlib's request machinery (same parameters, oauthlib's normalisation and base
string written out, the base URI and HMAC key made once); every other request, so every
refusal, goes through oauthlib's ResourceEndpoint as before.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from oauthlib.common import Request
from oauthlib.oauth1 import RequestValidator, ResourceEndpoint
from oauthlib.oauth1.rfc5849 import SIGNATURE_HMAC_SHA1, signature
from oauthlib.oauth1.rfc5849.utils import escape

from consumer.sandbox.config import AccountConfig


class AuthFailure(enum.Enum):
    """Why a request was refused; reason names for stats and logs, not secrets."""

    MISSING = "missing"
    MALFORMED = "malformed"
    STALE_TIMESTAMP = "stale_timestamp"
    REPLAYED_NONCE = "replayed_nonce"
    UNKNOWN_CLIENT = "unknown_client"
    UNKNOWN_TOKEN = "unknown_token"  # noqa: S105 - a reason name
    BAD_SIGNATURE = "bad_signature"
    BAD_PIXEL_TOKEN = "bad_pixel_token"  # noqa: S105 - a reason name


@dataclass(frozen=True, slots=True)
class AuthResult:
    """``accounts`` are the ad accounts the verified credentials may act for."""

    failure: AuthFailure | None
    accounts: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return self.failure is None


class NonceStore:
    """Remembers (client, token, nonce) for ``ttl_s``; at most ``capacity`` entries.

    Past capacity the oldest entries go first: a replay of an evicted nonce would then
    pass, which only happens if more than ``capacity`` requests arrive within ``ttl_s``.
    """

    def __init__(self, ttl_s: float, capacity: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, key: tuple[str, str, str]) -> bool:
        """True the first time ``key`` is offered inside its lifetime, False for a replay."""
        now = self._clock()
        seen = self._seen
        while seen:
            oldest_key, expires = next(iter(seen.items()))
            if expires > now and len(seen) < self._capacity:
                break
            del seen[oldest_key]
        if key in seen:
            return False
        seen[key] = now + self._ttl_s
        return True


@dataclass(frozen=True, slots=True)
class _Credential:
    consumer_secret: str
    access_token_secret: str
    accounts: frozenset[str]

    def signing_key(self) -> bytes:
        """RFC 5849 3.4.2's HMAC key, as oauthlib's signature._sign_hmac builds it."""
        key = f"{escape(self.consumer_secret)}&{escape(self.access_token_secret)}"
        return key.encode()

    def signer(self) -> _HmacSha1:
        return _HmacSha1(self.signing_key())


class _HmacSha1:
    """HMAC-SHA1 (RFC 2104) of one key with its padded inner and outer hashes made once:
    each signature copies two hash states instead of setting a key up. ``hmac.digest``
    does the same work through OpenSSL, which, with the caches cold after a 500-event
    body, cost about 30 us a request in the server; CPython's own SHA-1 (``_sha1``,
    where the build has it) with copied states, about 12 us."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA1_BLOCK:
            key = _sha1(key).digest()
        key = key.ljust(_SHA1_BLOCK, b"\0")
        self._inner = _sha1(key.translate(_IPAD))
        self._outer = _sha1(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()
        return digest


_sha1: Callable[[bytes], Any]
try:  # CPython's own SHA-1, no OpenSSL look-ups
    from _sha1 import sha1 as _builtin_sha1  # type: ignore[import-not-found]

    _sha1 = _builtin_sha1
except ImportError:  # pragma: no cover - a build without it
    _sha1 = hashlib.sha1

_SHA1_BLOCK: Final = 64
_IPAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OPAD: Final = bytes(byte ^ 0x5C for byte in range(256))


_DUMMY = "xconv-sandbox-dummy"
_LONG_AGO_S = 10 * 365 * 86400  # oauthlib's own window, wide open: ours uses the clock

# The header as clients write it: OAuth k="v", k="v" (no quotes or backslashes inside a
# value, no realm, only these keys, each once). Anything else goes to oauthlib as is.
_OAUTH_KEYS: Final = frozenset(
    {
        "oauth_consumer_key",
        "oauth_token",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_nonce",
        "oauth_version",
        "oauth_signature",
    }
)
_BASE_URI_CACHE_SIZE: Final = 256
_MAX_VALUE: Final = 256  # _Validator._printable's bound
_UNRESERVED_RE: Final = re.compile(r"[A-Za-z0-9_.~-]*", re.ASCII)  # what quote() keeps


def _escape(value: str) -> str:
    """oauthlib's ``utils.escape`` (``quote(value, safe="~")``), which leaves unreserved
    characters as they are: most values (keys, nonces, timestamps) need no call."""
    return value if _UNRESERVED_RE.fullmatch(value) else escape(value)


def signature_base_string(method: str, escaped_base_uri: str, params: dict[str, str]) -> str:
    """oauthlib's ``normalize_parameters`` then ``signature_base_string`` (RFC 5849
    3.4.1), written out so that the unreserved values skip ``quote``."""
    pairs = sorted((_escape(key), _escape(value)) for key, value in params.items())
    normalized = "&".join(f"{key}={value}" for key, value in pairs)
    # Escaped parts joined by = and &: quote() would only change %, = and & in it.
    encoded = normalized.replace("%", "%25").replace("=", "%3D").replace("&", "%26")
    return f"{_escape(method.upper())}&{escaped_base_uri}&{encoded}"


# The header exactly as oauthlib's Client (and so xconv's signer) writes it: one C-level
# match does the parsing and the checks of _plain_params for it.
_CLIENT_HEADER_RE: Final = re.compile(
    r'OAuth oauth_nonce="([A-Za-z0-9_.~-]{1,256})", oauth_timestamp="([0-9]{10})", '
    r'oauth_version="(1\.0)", oauth_signature_method="HMAC-SHA1", '
    r'oauth_consumer_key="([A-Za-z0-9_.~-]{1,256})", oauth_token="([A-Za-z0-9_.~-]{1,256})", '
    r'oauth_signature="([A-Za-z0-9%]+)"',
    re.ASCII,
)


def _plain_params(authorization: str) -> tuple[str, str, str, str, str, str | None] | None:
    """(consumer key, token, nonce, timestamp, signature as written, version or ``None``)
    of a header written ``OAuth k="v", ...`` with ``, `` between items, the six or seven
    keys of a signed request once each, HMAC-SHA1, version 1.0 if any, a 10-digit
    timestamp and the other values 1 to 256 unreserved characters (so that unquoting
    and escaping leave them as they are); ``None`` for any other header."""
    match = _CLIENT_HEADER_RE.fullmatch(authorization)
    if match is not None:
        nonce, timestamp, version, client_key, token, given = match.groups()
        return client_key, token, nonce, timestamp, given, version
    if not authorization.startswith("OAuth "):
        return None
    items = authorization[6:].split(", ")
    if not 6 <= len(items) <= 7:
        return None
    params: dict[str, str] = {}
    for item in items:
        key, sep, quoted = item.partition('="')
        if not sep or quoted[-1:] != '"':
            return None
        params[key] = quoted[:-1]
    if len(params) != len(items) or not params.keys() <= _OAUTH_KEYS:
        return None
    version = params.get("oauth_version")
    client_key = params.get("oauth_consumer_key", "")
    token = params.get("oauth_token", "")
    nonce = params.get("oauth_nonce", "")
    timestamp = params.get("oauth_timestamp", "")
    if not (
        (version is None or version == "1.0")
        and params.get("oauth_signature_method") == SIGNATURE_HMAC_SHA1
        and 0 < len(client_key) <= _MAX_VALUE
        and 0 < len(token) <= _MAX_VALUE
        and 0 < len(nonce) <= _MAX_VALUE
        and len(timestamp) == 10
        and timestamp.isascii()
        and timestamp.isdigit()
        and _UNRESERVED_RE.fullmatch(client_key + token + nonce) is not None
    ):
        return None
    return client_key, token, nonce, timestamp, params.get("oauth_signature", ""), version


def _plain_base_string(
    prefix: str, *, client_key: str, nonce: str, timestamp: str, token: str, version: str | None
) -> str:
    """:func:`signature_base_string` of a signed request's parameters when every value is
    unreserved (so escaped as it is): the keys in their sorted order, ``=`` and ``&``
    already percent-encoded. ``prefix`` is the escaped method and base URI, each
    followed by ``&``."""
    base = (
        f"{prefix}oauth_consumer_key%3D{client_key}%26oauth_nonce%3D{nonce}"
        f"%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D{timestamp}"
        f"%26oauth_token%3D{token}"
    )
    return base if version is None else f"{base}%26oauth_version%3D{version}"


def _escape_base64(signature_bytes: bytes) -> bytes:
    """``escape`` of a base64 text: ``+``, ``/`` and ``=`` are its only reserved characters."""
    return signature_bytes.replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")


class _Validator(RequestValidator):
    """oauthlib's hooks, answered from the sandbox's account table.

    oauthlib checks key and nonce formats against narrow defaults (20-30 alphanumerics);
    real X tokens contain ``-`` and clients choose their nonce length, so any printable
    value up to 256 characters is accepted here.
    """

    def __init__(
        self,
        credentials: Mapping[tuple[str, str], _Credential],
        nonces: NonceStore,
        skew_s: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self._credentials = credentials
        self._client_secrets = {key: c.consumer_secret for (key, _), c in credentials.items()}
        self._nonces = nonces
        self._skew_s = skew_s
        self._clock = clock
        self.failure: AuthFailure | None = None

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        return (SIGNATURE_HMAC_SHA1,)

    @property
    def enforce_ssl(self) -> bool:
        return False  # the sandbox is plain HTTP on loopback or a compose network

    @property
    def timestamp_lifetime(self) -> int:
        return _LONG_AGO_S

    @property
    def dummy_client(self) -> str:
        return _DUMMY

    @property
    def dummy_access_token(self) -> str:
        return _DUMMY

    @staticmethod
    def _printable(value: str) -> bool:
        return 0 < len(value) <= 256 and value.isprintable()

    def check_client_key(self, client_key: str) -> bool:
        return self._printable(client_key)

    def check_access_token(self, request_token: str) -> bool:
        return self._printable(request_token)

    def check_nonce(self, nonce: str) -> bool:
        return self._printable(nonce)

    def validate_timestamp_and_nonce(  # noqa: PLR0917 - oauthlib's signature
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Request,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        if abs(self._clock() - int(timestamp)) > self._skew_s:
            self.failure = AuthFailure.STALE_TIMESTAMP
            return False
        if not self._nonces.first_use((client_key, access_token or "", nonce)):
            self.failure = AuthFailure.REPLAYED_NONCE
            return False
        return True

    def validate_client_key(self, client_key: str, request: Request) -> bool:
        if client_key in self._client_secrets:
            return True
        self.failure = self.failure or AuthFailure.UNKNOWN_CLIENT
        return False

    def validate_access_token(self, client_key: str, token: str, request: Request) -> bool:
        if (client_key, token) in self._credentials:
            return True
        self.failure = self.failure or AuthFailure.UNKNOWN_TOKEN
        return False

    def validate_realms(
        self,
        client_key: str,
        token: str,
        request: Request,
        uri: str | None = None,
        realms: Any = None,
    ) -> bool:
        return True

    def get_client_secret(self, client_key: str, request: Request) -> str:
        return self._client_secrets.get(client_key, _DUMMY)

    def get_access_token_secret(self, client_key: str, token: str, request: Request) -> str:
        credential = self._credentials.get((client_key, token))
        return credential.access_token_secret if credential else _DUMMY


class Authenticator:
    """Verifies either way of authenticating and names the failure (for stats, not answers)."""

    def __init__(
        self,
        accounts: Iterable[AccountConfig],
        *,
        skew_s: float = 300.0,
        nonce_capacity: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        table: dict[tuple[str, str], _Credential] = {}
        self._pixel_tokens: dict[str, str] = {}
        for account in accounts:
            pair = (account.consumer_key, account.access_token)
            known = table.get(pair)
            table[pair] = _Credential(
                account.consumer_secret,
                account.access_token_secret,
                (known.accounts if known else frozenset()) | {account.account_id},
            )
            if account.pixel_token:
                self._pixel_tokens[account.account_id] = account.pixel_token
        self._credentials = table
        # A replayed nonce is only possible while its timestamp is fresh: keep it that long.
        self.nonces = NonceStore(2 * skew_s, nonce_capacity, clock)
        self._validator = _Validator(table, self.nonces, skew_s, clock)
        self._endpoint = ResourceEndpoint(self._validator)
        self._clock = clock
        self._skew_s = skew_s
        self._base_uris: dict[str, str] = {}
        self._prefixes: dict[tuple[str, str], str] = {}
        self._signers = {pair: c.signer() for pair, c in table.items()}

    def verify_oauth(self, method: str, uri: str, authorization: str | None) -> AuthResult:
        if not authorization or not authorization.lstrip().startswith("OAuth "):
            return AuthResult(AuthFailure.MISSING)
        fast = self._verify_fast(method, uri, authorization)
        if fast is not None:
            return fast
        return self._verify_oauthlib(method, uri, authorization)

    def _base_uri(self, uri: str) -> str:
        """oauthlib's base string URI, escaped, kept per URI (the endpoint's few URLs)."""
        cache = self._base_uris
        base = cache.get(uri)
        if base is None:
            if len(cache) >= _BASE_URI_CACHE_SIZE:
                cache.clear()
            base = cache[uri] = escape(signature.base_string_uri(uri))
        return base

    def _verify_fast(self, method: str, uri: str, authorization: str) -> AuthResult | None:
        """The accepting path without oauthlib's request machinery; ``None``: ask oauthlib.

        Only the header the way clients write it is decided here: ``OAuth k="v", ...``
        with ``, `` between items, the six or seven keys of a signed request once each,
        every value but the signature made of unreserved characters (so that unquoting
        and escaping leave it as it is), known credentials, a fresh timestamp and the
        signature exactly as oauthlib's client encodes it. The base string is then
        written in its sorted order directly (:func:`_plain_base_string`) and signed with
        the HMAC key made once per credentials. The nonce is spent only then, as oauthlib
        does before it checks a signature. Every other request goes to oauthlib
        untouched, so each failure keeps oauthlib's verdict and reason.
        """
        if "?" in uri:
            return None
        plain = _plain_params(authorization)
        if plain is None:
            return None
        client_key, token, nonce, timestamp, given, version = plain
        credential = self._credentials.get((client_key, token))
        stamp = int(timestamp)
        if (
            credential is None
            or abs(time.time() - stamp) > _LONG_AGO_S
            or abs(self._clock() - stamp) > self._skew_s
        ):
            return None
        base = _plain_base_string(
            self._prefix(method, uri),
            client_key=client_key,
            nonce=nonce,
            timestamp=timestamp,
            token=token,
            version=version,
        )
        # oauthlib's HMAC-SHA1 signing (signature._sign_hmac), with the key made once
        digest = self._signers[(client_key, token)].digest(base.encode())
        expected = _escape_base64(binascii.b2a_base64(digest, newline=False))
        if not hmac.compare_digest(expected, given.encode()):
            return None
        if not self.nonces.first_use((client_key, token, nonce)):
            return AuthResult(AuthFailure.REPLAYED_NONCE)
        return AuthResult(None, credential.accounts)

    def _prefix(self, method: str, uri: str) -> str:
        """The base string's first two parts and their ``&``s, kept per method and URI."""
        cache = self._prefixes
        key = (method, uri)
        prefix = cache.get(key)
        if prefix is None:
            if len(cache) >= _BASE_URI_CACHE_SIZE:
                cache.clear()
            prefix = cache[key] = f"{_escape(method.upper())}&{self._base_uri(uri)}&"
        return prefix

    def _verify_oauthlib(self, method: str, uri: str, authorization: str) -> AuthResult:
        """The whole verification by oauthlib's ResourceEndpoint (and its failure reasons)."""
        validator = self._validator
        validator.failure = None
        try:
            valid, request = self._endpoint.validate_protected_resource_request(
                uri, http_method=method, body=None, headers={"Authorization": authorization}
            )
        except (ValueError, TypeError, KeyError):  # oauthlib: header it cannot parse
            return AuthResult(AuthFailure.MALFORMED)
        if valid and request is not None:
            credential = self._credentials[(request.client_key, request.resource_owner_key)]
            return AuthResult(None, credential.accounts)
        if validator.failure is not None:
            return AuthResult(validator.failure)
        if request is None or request.validator_log.get("signature") is None:
            return AuthResult(AuthFailure.MALFORMED)
        return AuthResult(AuthFailure.BAD_SIGNATURE)

    def verify_pixel_token(self, account_id: str, token: str) -> AuthResult:
        expected = self._pixel_tokens.get(account_id)
        if expected is not None and hmac.compare_digest(expected.encode(), token.encode()):
            return AuthResult(None, frozenset({account_id}))
        return AuthResult(AuthFailure.BAD_PIXEL_TOKEN)
