"""The HTTP client and the response/isolation logic against the sandbox (real HTTP)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest

from consumer.delivery.auth import OAuth1Auth, PixelTokenAuth
from consumer.delivery.client import XAdsClient, make_session
from consumer.delivery.ratebudget import RateBudget
from consumer.delivery.responses import RateLimitHeaders, parse_response
from consumer.delivery.split import plan_isolation
from consumer.errors import (
    AccountBlockedError,
    BatchRejectedError,
    RateLimitedError,
    TransportError,
)
from consumer.sandbox.config import demo_account
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.sandbox


def conversion(event_id: str, n: int, *, bad_hash: bool = False) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    email_hash = "abc" if bad_hash else hashlib.sha256(f"user{n}@example.com".encode()).hexdigest()
    return {
        "conversion_time": stamp,
        "event_id": event_id,
        "identifiers": [{"hashed_email": email_hash}],
        "conversion_id": f"order-{n}-{time.monotonic_ns()}",
    }


def body_of(conversions: list[dict[str, Any]]) -> bytes:
    payloads = [orjson.dumps(c) for c in conversions]
    return b'{"conversions":[' + b",".join(payloads) + b"]}"


def oauth(sb: SandboxHandle, *, secret: str | None = None) -> OAuth1Auth:
    return OAuth1Auth(
        sb.consumer_key,
        secret or sb.consumer_secret,
        sb.access_token,
        sb.access_token_secret,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = make_session(connect_timeout_s=2.0, total_timeout_s=10.0, limit=10)
    try:
        yield s
    finally:
        await s.close()


async def test_oauth1_batch_is_accepted(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    client = XAdsClient(session, sandbox.base_url, "12", oauth(sandbox))
    batch = [conversion(sandbox.event_id, i) for i in range(3)]
    response = await client.send(sandbox.pixel_id, body_of(batch))
    accepted = parse_response(response.status, response.headers, response.body, time.time())
    assert accepted.conversions_processed == 3
    assert accepted.debug_id
    ids = sandbox.conversion_ids()
    assert all(c["conversion_id"] in ids for c in batch)


async def test_pixel_token_is_accepted(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    assert sandbox.pixel_token is not None
    client = XAdsClient(session, sandbox.base_url, "12", PixelTokenAuth(sandbox.pixel_token))
    response = await client.send(sandbox.pixel_id, body_of([conversion(sandbox.event_id, 1)]))
    assert parse_response(response.status, response.headers, response.body, time.time())


async def test_bad_signature_blocks_the_account(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    client = XAdsClient(session, sandbox.base_url, "12", oauth(sandbox, secret="wrong"))
    response = await client.send(sandbox.pixel_id, body_of([conversion(sandbox.event_id, 1)]))
    with pytest.raises(AccountBlockedError) as info:
        parse_response(response.status, response.headers, response.body, time.time())
    assert info.value.status == 401


async def test_rejected_batch_is_isolated_by_pointer(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    client = XAdsClient(session, sandbox.base_url, "12", oauth(sandbox))
    batch = [conversion(sandbox.event_id, i, bad_hash=(i in (1, 3))) for i in range(5)]
    response = await client.send(sandbox.pixel_id, body_of(batch))
    with pytest.raises(BatchRejectedError) as info:
        parse_response(response.status, response.headers, response.body, time.time())
    plan = plan_isolation(len(batch), info.value.errors)
    assert set(plan.bad) == {1, 3}
    (group,) = plan.retry_groups
    resend = [batch[i] for i in group]
    retry = await client.send(sandbox.pixel_id, body_of(resend))
    accepted = parse_response(retry.status, retry.headers, retry.body, time.time())
    assert accepted.conversions_processed == 3


async def test_rate_limit_headers_and_429(
    start_sandbox: Callable[..., SandboxHandle], session: aiohttp.ClientSession
) -> None:
    # the demo account with a tiny budget
    sb = start_sandbox(
        {
            "accounts": [
                {
                    **demo_account().model_dump(),
                    "rate_limit": {"requests_per_window": 3, "window_s": 60},
                }
            ]
        }
    )
    client = XAdsClient(session, sb.base_url, "12", oauth(sb))
    seen: list[RateLimitHeaders] = []
    for i in range(3):
        response = await client.send(sb.pixel_id, body_of([conversion(sb.event_id, i)]))
        accepted = parse_response(response.status, response.headers, response.body, time.time())
        assert accepted.rate_limit is not None
        seen.append(accepted.rate_limit)
    assert [h.remaining for h in seen] == [2, 1, 0]
    response = await client.send(sb.pixel_id, body_of([conversion(sb.event_id, 9)]))
    with pytest.raises(RateLimitedError) as info:
        parse_response(response.status, response.headers, response.body, time.time())
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 61
    # The budget, synced with the last headers, holds new sends until the reset.
    budget = RateBudget(100, 60.0, clock=time.monotonic)
    last = seen[-1]
    budget.observe(last.limit, last.remaining, last.reset_epoch, time.time())
    assert budget.reserve() > 1.0


async def test_hang_and_drop_faults_are_transport_errors(
    sandbox: SandboxHandle,
) -> None:
    session = make_session(connect_timeout_s=2.0, total_timeout_s=0.5, limit=4)
    try:
        client = XAdsClient(session, sandbox.base_url, "12", oauth(sandbox))
        for fault in ("hang", "drop"):
            shares = {"hang": 0.0, "drop": 0.0, fault: 1.0}
            sandbox.set_faults(**shares, hang_s=30.0)
            with pytest.raises(TransportError):
                await client.send(sandbox.pixel_id, body_of([conversion(sandbox.event_id, 1)]))
        sandbox.set_faults(hang=0.0, drop=0.0)
        response = await client.send(sandbox.pixel_id, body_of([conversion(sandbox.event_id, 2)]))
        assert response.status == 200
    finally:
        await session.close()
