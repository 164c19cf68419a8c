"""Request authentication for the conversions endpoint.

Two ways exist: OAuth 1.0a user context (HMAC-SHA1, signed per attempt with a fresh
nonce and timestamp; a JSON body is not part of the base string, per RFC 5849 only
form-encoded bodies are) and the Conversion API token sent as ``X-Pixel-Token``.
Secrets never appear in ``repr``.
"""

from __future__ import annotations

from typing import Literal, Protocol, cast

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_TYPE_AUTH_HEADER, Client

_Method = Literal["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"]


class Auth(Protocol):
    """Produces the authentication headers of one request attempt."""

    def headers(self, method: str, url: str) -> dict[str, str]: ...


class OAuth1Auth:
    """OAuth 1.0a user-context signing (oauthlib, HMAC-SHA1, Authorization header)."""

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        access_token: str,
        access_token_secret: str,
    ) -> None:
        self._client = Client(
            consumer_key,
            client_secret=consumer_secret,
            resource_owner_key=access_token,
            resource_owner_secret=access_token_secret,
            signature_method=SIGNATURE_HMAC_SHA1,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
        )

    def headers(self, method: str, url: str) -> dict[str, str]:
        """A freshly signed ``Authorization`` header (new nonce and timestamp each call)."""
        # No body is passed: the JSON body must not enter the signature base string.
        _, signed, _ = self._client.sign(url, http_method=cast(_Method, method.upper()))
        return {"Authorization": signed["Authorization"]}

    def __repr__(self) -> str:
        return "OAuth1Auth(<redacted>)"


class PixelTokenAuth:
    """The Conversion API access token from X Events Manager."""

    def __init__(self, token: str) -> None:
        self._token = token

    def headers(self, method: str, url: str) -> dict[str, str]:
        del method, url
        return {"X-Pixel-Token": self._token}

    def __repr__(self) -> str:
        return "PixelTokenAuth(<redacted>)"
