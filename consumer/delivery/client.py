"""Thin aiohttp client for ``POST /{version}/measurement/conversions/{pixel_id}``.

One attempt per call: the engine owns retries, pacing and interpretation
(``responses.parse_response``). Anything that prevents reading a complete HTTP answer
(timeouts, refused/reset connections, a truncated body) becomes ``TransportError``;
every HTTP answer, whatever its status, is returned as a ``Response``. Redirects are
not followed (a POST must not silently turn into something else).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from consumer.delivery.auth import Auth
from consumer.errors import TransportError

USER_AGENT = "xconv/0.1 (+aiohttp)"


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer; ``headers`` keys are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def conversions_url(base_url: str, version: str, pixel_id: str) -> str:
    """The conversions endpoint of one pixel, its path parts percent-encoded."""
    base = base_url.rstrip("/")
    path_version = quote(str(version).strip("/"), safe="")
    return f"{base}/{path_version}/measurement/conversions/{quote(pixel_id, safe='')}"


def make_session(
    connect_timeout_s: float, total_timeout_s: float, limit: int = 100
) -> aiohttp.ClientSession:
    """One shared session with a pooled connector; call inside the running loop."""
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(
        total=total_timeout_s, sock_connect=connect_timeout_s, connect=connect_timeout_s
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        raise_for_status=False,
    )


class XAdsClient:
    """Sends one request body to one pixel's conversions endpoint."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        version: str,
        auth: Auth,
    ) -> None:
        self._session = session
        self._base_url = base_url
        self._version = version
        self._auth = auth

    def url_for(self, pixel_id: str) -> str:
        return conversions_url(self._base_url, self._version, pixel_id)

    async def send(self, pixel_id: str, body: bytes) -> Response:
        """POST ``body``; return the answer or raise ``TransportError``."""
        url = self.url_for(pixel_id)
        headers = {"Content-Type": "application/json", **self._auth.headers("POST", url)}
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                payload = await resp.read()
                return Response(
                    status=resp.status,
                    headers={k.lower(): v for k, v in resp.headers.items()},
                    body=payload,
                )
        except TimeoutError as exc:
            raise TransportError(f"timeout sending to pixel {pixel_id}") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__} sending to pixel {pixel_id}") from exc
        except asyncio.CancelledError:
            raise
