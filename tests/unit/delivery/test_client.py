"""The HTTP client over real loopback HTTP against a small aiohttp server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from oauthlib.oauth1 import RequestValidator, ResourceEndpoint

from consumer.delivery.auth import OAuth1Auth, PixelTokenAuth
from consumer.delivery.client import XAdsClient, make_session
from consumer.delivery.responses import parse_response
from consumer.errors import TransportError

CONSUMER_KEY = "ck" + "a" * 23
CONSUMER_SECRET = "consumer-secret-for-tests"
ACCESS_TOKEN = "at" + "b" * 23
ACCESS_TOKEN_SECRET = "token-secret-for-tests"


class Validator(RequestValidator):
    """Accepts exactly one client and token; everything else is oauthlib's own checks."""

    def __init__(self) -> None:
        super().__init__()
        self.nonces: set[str] = set()

    @property
    def enforce_ssl(self) -> bool:
        return False  # loopback test server

    @property
    def safe_characters(self) -> set[str]:
        return set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key == CONSUMER_KEY

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        return token == ACCESS_TOKEN

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: Any = None,
        access_token: Any = None,
    ) -> bool:
        if nonce in self.nonces:
            return False
        self.nonces.add(nonce)
        return True

    def validate_realms(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return CONSUMER_SECRET

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        return ACCESS_TOKEN_SECRET

    @property
    def dummy_client(self) -> str:
        return "dummy" + "c" * 20

    @property
    def dummy_access_token(self) -> str:
        return "dummy" + "t" * 20


@dataclass
class Server:
    base_url: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    validator = Validator()
    endpoint = ResourceEndpoint(validator)
    state = Server(base_url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        pixel = request.match_info["pixel"]
        body = await request.read()
        headers = dict(request.headers)
        valid = None
        if "Authorization" in headers:
            valid, _ = endpoint.validate_protected_resource_request(
                str(request.url), http_method=request.method, body=body, headers=headers
            )
        state.seen.append({"pixel": pixel, "headers": headers, "body": body, "valid": valid})
        if pixel == "slow":
            await state.release.wait()
        if pixel == "html404":
            return web.Response(status=404, text="<html>Not Found</html>", content_type="text/html")
        if pixel == "redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if valid is False:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED_ACCESS"}]}, status=401)
        n = len(orjson.loads(body)["conversions"])
        return web.json_response(
            {"data": {"conversions_processed": n, "debug_id": "dbg-1"}},
            headers={"X-Rate-Limit-Remaining": "99", "X-Rate-Limit-Reset": "2000000000"},
        )

    app = web.Application()
    app.router.add_post("/12/measurement/conversions/{pixel}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base_url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = make_session(connect_timeout_s=2.0, total_timeout_s=10.0, limit=10)
    try:
        yield s
    finally:
        await s.close()


def oauth() -> OAuth1Auth:
    return OAuth1Auth(CONSUMER_KEY, CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET)


BODY = b'{"conversions":[{"event_id":"ol288"},{"event_id":"ol288"}]}'


async def test_oauth1_signature_verifies_with_oauthlib(
    server: Server, session: aiohttp.ClientSession
) -> None:
    client = XAdsClient(session, server.base_url + "/", "12", oauth())
    response = await client.send("oka17", BODY)
    assert response.status == 200
    (seen,) = server.seen
    assert seen["valid"] is True
    assert seen["body"] == BODY
    assert seen["headers"]["Content-Type"] == "application/json"
    auth_header = seen["headers"]["Authorization"]
    assert auth_header.startswith("OAuth ")
    assert 'oauth_signature_method="HMAC-SHA1"' in auth_header
    accepted = parse_response(response.status, response.headers, response.body, 0.0)
    assert accepted.conversions_processed == 2
    assert accepted.debug_id == "dbg-1"
    assert response.headers["x-rate-limit-remaining"] == "99"  # lower-cased keys


async def test_each_attempt_has_a_fresh_nonce(
    server: Server, session: aiohttp.ClientSession
) -> None:
    client = XAdsClient(session, server.base_url, "12", oauth())
    for _ in range(3):
        assert (await client.send("oka17", BODY)).status == 200
    assert all(s["valid"] for s in server.seen)  # the validator refuses a reused nonce


async def test_wrong_secret_fails_oauthlib_verification(
    server: Server, session: aiohttp.ClientSession
) -> None:
    bad = OAuth1Auth(CONSUMER_KEY, "wrong", ACCESS_TOKEN, ACCESS_TOKEN_SECRET)
    response = await XAdsClient(session, server.base_url, "12", bad).send("oka17", BODY)
    assert response.status == 401
    assert server.seen[0]["valid"] is False


async def test_pixel_token_header(server: Server, session: aiohttp.ClientSession) -> None:
    client = XAdsClient(session, server.base_url, "12", PixelTokenAuth("tok-123"))
    response = await client.send("oka17", BODY)
    assert response.status == 200
    headers = server.seen[0]["headers"]
    assert headers["X-Pixel-Token"] == "tok-123"
    assert "Authorization" not in headers
    assert "tok-123" not in repr(PixelTokenAuth("tok-123"))
    assert CONSUMER_SECRET not in repr(oauth())


async def test_non_200_answers_are_returned_not_raised(
    server: Server, session: aiohttp.ClientSession
) -> None:
    client = XAdsClient(session, server.base_url, "12", PixelTokenAuth("t"))
    html = await client.send("html404", BODY)
    assert html.status == 404
    assert b"Not Found" in html.body
    redirect = await client.send("redirect", BODY)
    assert redirect.status == 302  # not followed
    assert len(server.seen) == 2


async def test_timeout_maps_to_transport_error(server: Server) -> None:
    session = make_session(connect_timeout_s=2.0, total_timeout_s=0.3, limit=2)
    try:
        client = XAdsClient(session, server.base_url, "12", PixelTokenAuth("t"))
        with pytest.raises(TransportError) as info:
            await client.send("slow", BODY)
        assert "timeout" in str(info.value)
    finally:
        await session.close()


async def test_refused_connection_maps_to_transport_error(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = XAdsClient(session, f"http://127.0.0.1:{port}", "12", PixelTokenAuth("t"))
    with pytest.raises(TransportError):
        await client.send("oka17", BODY)


async def test_dropped_connection_maps_to_transport_error(
    session: aiohttp.ClientSession,
) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()
        await writer.wait_closed()

    raw = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    try:
        client = XAdsClient(session, f"http://127.0.0.1:{port}", "12", PixelTokenAuth("t"))
        with pytest.raises(TransportError):
            await client.send("oka17", BODY)
    finally:
        raw.close()
        await raw.wait_closed()


def test_url_quotes_pixel_and_version() -> None:
    client = XAdsClient(None, "https://ads-api.x.com/", "12", PixelTokenAuth("t"))  # type: ignore[arg-type]
    assert client.url_for("o8z6j") == "https://ads-api.x.com/12/measurement/conversions/o8z6j"
    assert client.url_for("a/b") == "https://ads-api.x.com/12/measurement/conversions/a%2Fb"
