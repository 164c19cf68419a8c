"""The sandbox process over real HTTP: auth, errors, rate limits, faults, admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from oauthlib.oauth1 import Client

from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.sandbox

# The reference page's example request body, byte for byte as the page prints it.
PAGE_EXAMPLE = b"""
{
"conversions":[
{
"conversion_time":"2022-02-18T01:14:00.603Z",
"event_id":"ol288",
"identifiers":[
{
"twclid":"23opevjt88psuo13lu8d020qkn"
},
{
"hashed_email":"d360d510a224510f373931ce2d6215a799f5a9c1cef221b0149b6b6b50cced62"
},
{
"hashed_phone_number":"1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"
},
{
"ip_address":"1.0.0.0",
"user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.0.0 Safari/537.36"
}
],
"value":"20.00",
"number_items":3,
"conversion_id":"23294827",
"description":"Pet supply purchases",
"contents":[
{
"content_id":"1",
"content_name":"Blankets",
"content_type":"Pet supplies",
"content_price":100.99,
"num_items":1,
"content_group_id":"123"
}
]
}
]
}"""  # noqa: E501 - the page's text, kept byte for byte

HASH = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"
RATE_HEADERS = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")


def conversion(conversion_id: str, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "conversion_time": "2024-05-01T10:00:00.000Z",
        "event_id": "ol288",
        "identifiers": [{"hashed_email": HASH}],
        "conversion_id": conversion_id,
        "value": 12.5,
        "price_currency": "USD",
    }
    item.update(overrides)
    return item


def body_of(*conversions: dict[str, Any]) -> bytes:
    return orjson.dumps({"conversions": list(conversions)})


def oauth_header(
    sandbox: SandboxHandle,
    url: str,
    *,
    consumer_secret: str | None = None,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> str:
    client = Client(
        sandbox.consumer_key,
        client_secret=consumer_secret or sandbox.consumer_secret,
        resource_owner_key=sandbox.access_token,
        resource_owner_secret=sandbox.access_token_secret,
        timestamp=None if timestamp is None else str(timestamp),
        nonce=nonce,
    )
    _, headers, _ = client.sign(url, http_method="POST")
    header: str = headers["Authorization"]
    return header


async def post(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    client_timeout: float = 30.0,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], Any]:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client_timeout)) as session,
        session.post(url, data=body, headers=all_headers) as response,
    ):
        raw = await response.read()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = raw
        return response.status, {k.lower(): v for k, v in response.headers.items()}, payload


async def post_token(
    sandbox: SandboxHandle, body: bytes, *, pixel_id: str | None = None, **kwargs: Any
) -> tuple[int, dict[str, str], Any]:
    assert sandbox.pixel_token is not None
    return await post(
        sandbox.endpoint(pixel_id), body, headers={"X-Pixel-Token": sandbox.pixel_token}, **kwargs
    )


def codes(payload: Any) -> list[tuple[str, str]]:
    return [(e["code"], e["parameter"]) for e in payload["errors"]]


# ----------------------------------------------------------------------- auth


async def test_page_example_as_written_with_oauth(sandbox: SandboxHandle) -> None:
    url = sandbox.endpoint()
    status, headers, payload = await post(
        url, PAGE_EXAMPLE, headers={"Authorization": oauth_header(sandbox, url)}
    )
    assert status == 200, payload
    assert payload["request"] == {"params": {"account_id": "18ce552mlaq"}}
    assert payload["data"]["conversions_processed"] == 1
    assert len(payload["data"]["debug_id"]) == 36
    assert all(name in headers for name in RATE_HEADERS)
    assert sandbox.conversion_ids() == {"23294827": 1}
    assert sandbox.conversions(5)[0]["contents"][0]["content_name"] == "Blankets"


async def test_page_example_with_pixel_token(sandbox: SandboxHandle) -> None:
    status, _, payload = await post_token(sandbox, PAGE_EXAMPLE)
    assert status == 200, payload
    assert payload["data"]["conversions_processed"] == 1


@pytest.mark.parametrize(
    "case", ["wrong_secret", "stale", "future", "other_host", "missing", "garbage", "bad_token"]
)
async def test_unauthenticated_requests_get_401(sandbox: SandboxHandle, case: str) -> None:
    url = sandbox.endpoint()
    headers: dict[str, str]
    if case == "wrong_secret":
        headers = {"Authorization": oauth_header(sandbox, url, consumer_secret="not-the-secret")}
    elif case == "stale":
        headers = {"Authorization": oauth_header(sandbox, url, timestamp=int(time.time()) - 900)}
    elif case == "future":
        headers = {"Authorization": oauth_header(sandbox, url, timestamp=int(time.time()) + 900)}
    elif case == "other_host":
        signed_for = url.replace("127.0.0.1", "sandbox")
        headers = {"Authorization": oauth_header(sandbox, signed_for)}
    elif case == "missing":
        headers = {}
    elif case == "garbage":
        headers = {"Authorization": 'OAuth oauth_consumer_key="x'}
    else:
        headers = {"X-Pixel-Token": "not-the-token"}
    status, response_headers, payload = await post(url, PAGE_EXAMPLE, headers=headers)
    assert status == 401
    assert payload["errors"] == [
        {
            "code": "UNAUTHORIZED_ACCESS",
            "message": "This request is not properly authenticated",
            "parameter": "",
        }
    ]
    assert all(name in response_headers for name in RATE_HEADERS)
    assert sandbox.stats()["accepted_conversions"] == 0


async def test_replayed_nonce_is_refused(sandbox: SandboxHandle) -> None:
    url = sandbox.endpoint()
    header = oauth_header(sandbox, url, nonce="a-nonce-used-only-once-1234")
    first, _, _ = await post(url, PAGE_EXAMPLE, headers={"Authorization": header})
    second, _, payload = await post(url, PAGE_EXAMPLE, headers={"Authorization": header})
    assert (first, second) == (200, 401)
    assert payload["errors"][0]["code"] == "UNAUTHORIZED_ACCESS"
    assert sandbox.stats()["auth_failures"] == {"replayed_nonce": 1}


async def test_signature_covers_query_but_not_json_body(sandbox: SandboxHandle) -> None:
    url = sandbox.endpoint() + "?trace=1"
    header = oauth_header(sandbox, url)
    status, _, payload = await post(
        url, body_of(conversion("q-1")), headers={"Authorization": header}
    )
    assert status == 200, payload
    tampered = oauth_header(sandbox, url)
    status, _, _ = await post(
        sandbox.endpoint() + "?trace=2",
        body_of(conversion("q-2")),
        headers={"Authorization": tampered},
    )
    assert status == 401


async def test_public_base_url_is_what_clients_sign(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox({"public_base_url": "http://sandbox:8080"})
    signed_for = "http://sandbox:8080/12/measurement/conversions/oka17"
    status, _, payload = await post(
        handle.endpoint(), PAGE_EXAMPLE, headers={"Authorization": oauth_header(handle, signed_for)}
    )
    assert status == 200, payload


# ----------------------------------------------------------------------- errors


async def test_one_bad_conversion_rejects_the_whole_batch(sandbox: SandboxHandle) -> None:
    batch = [conversion(f"ok-{i}") for i in range(10)]
    batch[3] = conversion("bad-3", identifiers=[{"hashed_email": "not-a-hash"}])
    batch[7] = conversion("bad-7", conversion_time="2022-06-16T01:14:00.603")
    status, _, payload = await post_token(sandbox, body_of(*batch))
    assert status == 400
    assert codes(payload) == [
        ("INVALID_PARAMETER", "conversions[3].identifiers[0].hashed_email"),
        ("INVALID_PARAMETER", "conversions[7].conversion_time"),
    ]
    assert "not-a-hash" not in orjson.dumps(payload).decode()
    assert payload["request"]["params"]["account_id"] == sandbox.account_id
    assert sandbox.stats()["accepted_conversions"] == 0
    assert sandbox.conversion_ids() == {}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"conversions": [', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[]", "application/json"),
        (b"", "application/json"),
        (PAGE_EXAMPLE, "text/plain"),
        (b"conversions=1", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_get_400_never_500(
    sandbox: SandboxHandle, body: bytes, content_type: str
) -> None:
    status, _, payload = await post_token(sandbox, body, content_type=content_type)
    assert status == 400
    assert payload["errors"][0]["code"] == "INVALID_PARAMETER"


async def test_more_than_500_conversions(sandbox: SandboxHandle) -> None:
    status, _, payload = await post_token(
        sandbox, body_of(*(conversion(f"c-{i}") for i in range(501)))
    )
    assert status == 400
    assert payload["errors"][0]["message"] == "Conversion count limit is 500"


async def test_not_found_answers(sandbox: SandboxHandle) -> None:
    status, _, payload = await post_token(sandbox, PAGE_EXAMPLE, pixel_id="nopix")
    assert (status, payload["errors"][0]["code"]) == (404, "NOT_FOUND")

    status, _, payload = await post_token(
        sandbox, body_of(conversion("c-1", event_id="zz999"), conversion("c-2"))
    )
    assert status == 404
    assert codes(payload) == [("NOT_FOUND", "conversions[0].event_id")]

    status, _, _ = await post_token(
        sandbox, body_of(conversion("c-3", event_id=f"tw-{sandbox.pixel_id}-{sandbox.event_id}"))
    )
    assert status == 200

    for url in (sandbox.base_url + "/12/nothing/here", sandbox.endpoint(version="9")):
        status, _, payload = await post(url, PAGE_EXAMPLE)
        assert (status, payload["errors"][0]["code"]) == (404, "ROUTE_NOT_FOUND")
    async with aiohttp.ClientSession() as session, session.get(sandbox.endpoint()) as response:
        payload = await response.json()
        assert (response.status, payload["errors"][0]["code"]) == (404, "ROUTE_NOT_FOUND")


# ----------------------------------------------------------------------- rate limits


def tiny_limits(**rate_limit: Any) -> dict[str, Any]:
    return {
        "accounts": [
            {
                "account_id": "acct1",
                "pixel_id": "pix1",
                "event_ids": ["ev1"],
                "consumer_key": "ck1",
                "consumer_secret": "cs1",
                "access_token": "at1",
                "access_token_secret": "ats1",
                "pixel_token": "pt1",
                "rate_limit": rate_limit,
            }
        ]
    }


async def test_rate_limit_headers_and_429_beyond_budget(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox(tiny_limits(requests_per_window=2, window_s=600))
    body = body_of(conversion("r-1", event_id="ev1"))
    answers = [await post_token(handle, body) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert [a[1]["x-rate-limit-remaining"] for a in answers] == ["1", "0", "0"]
    assert {a[1]["x-rate-limit-limit"] for a in answers} == {"2"}
    reset = int(answers[2][1]["x-rate-limit-reset"])
    assert time.time() + 500 < reset <= time.time() + 601
    assert answers[2][2]["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    stats = handle.stats()
    assert stats["rate_limited"] == 1
    assert stats["requests_by_status"] == {"200": 2, "429": 1}


async def test_events_budget(start_sandbox: Callable[..., SandboxHandle]) -> None:
    handle = start_sandbox(tiny_limits(events_per_window=3))
    two = body_of(conversion("e-1", event_id="ev1"), conversion("e-2", event_id="ev1"))
    first, second = await post_token(handle, two), await post_token(handle, two)
    assert (first[0], second[0]) == (200, 429)
    assert handle.stats()["accepted_conversions"] == 2


async def test_headers_off_and_limiting_off(start_sandbox: Callable[..., SandboxHandle]) -> None:
    quiet = start_sandbox(tiny_limits(requests_per_window=1, send_headers=False))
    body = body_of(conversion("h-1", event_id="ev1"))
    answers = [await post_token(quiet, body) for _ in range(2)]
    assert [a[0] for a in answers] == [200, 429]
    assert not any(name in a[1] for a in answers for name in RATE_HEADERS)

    unlimited = start_sandbox(tiny_limits(requests_per_window=1, enabled=False))
    answers = [await post_token(unlimited, body) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]


# ----------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "code", "retry_after"),
    [
        ("error_500", 500, "INTERNAL_ERROR", None),
        ("error_503", 503, "SERVICE_UNAVAILABLE", None),
        ("error_503_retry_after", 503, "SERVICE_UNAVAILABLE", "7"),
        ("burst_429", 429, "TOO_MANY_REQUESTS", None),
    ],
)
async def test_error_faults(
    sandbox: SandboxHandle, fault: str, status: int, code: str, retry_after: str | None
) -> None:
    sandbox.set_faults(**{fault: 1.0, "retry_after_s": 7, "burst_429_reset_s": 30})
    got, headers, payload = await post_token(sandbox, PAGE_EXAMPLE)
    assert got == status
    assert payload["errors"][0]["code"] == code
    assert headers.get("retry-after") == retry_after
    if fault == "burst_429":
        assert headers["x-rate-limit-remaining"] == "0"
        assert int(headers["x-rate-limit-reset"]) >= int(time.time()) + 29
    assert sandbox.stats()["faults_injected"] == {fault: 1}
    assert sandbox.conversion_ids() == {}


async def test_latency_fault_delays_the_answer(sandbox: SandboxHandle) -> None:
    sandbox.set_faults(latency_ms=300)
    started = time.monotonic()
    status, _, _ = await post_token(sandbox, PAGE_EXAMPLE)
    assert status == 200
    assert time.monotonic() - started >= 0.3


async def test_hang_outlasts_the_client_timeout(sandbox: SandboxHandle) -> None:
    sandbox.set_faults(hang=1.0)
    with pytest.raises(asyncio.TimeoutError):
        await post_token(sandbox, PAGE_EXAMPLE, client_timeout=0.5)
    sandbox.set_faults(hang=0.0)
    status, _, _ = await post_token(sandbox, PAGE_EXAMPLE)
    assert status == 200
    assert sandbox.stats()["faults_injected"] == {"hang": 1}


async def test_dropped_connection(sandbox: SandboxHandle) -> None:
    sandbox.set_faults(drop=1.0)
    with pytest.raises(aiohttp.ClientError):
        await post_token(sandbox, PAGE_EXAMPLE)
    assert sandbox.stats()["requests_by_status"] == {"dropped": 1}
    assert "Traceback" not in sandbox.logs()


async def test_reject_conversion_ids_in_a_batch_of_500(sandbox: SandboxHandle) -> None:
    sandbox.set_faults(reject_conversion_ids=["order-137"])
    batch = [conversion(f"order-{i}") for i in range(500)]
    status, _, payload = await post_token(sandbox, body_of(*batch))
    assert status == 400
    assert codes(payload) == [("INVALID_PARAMETER", "conversions[137].conversion_id")]
    del batch[137]
    status, _, payload = await post_token(sandbox, body_of(*batch))
    assert status == 200
    assert payload["data"]["conversions_processed"] == 499
    ids = sandbox.conversion_ids()
    assert len(ids) == 499
    assert "order-137" not in ids


async def test_status_override_from_config_and_at_run_time(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    config = tiny_limits()
    config["accounts"][0]["status_override"] = 403
    handle = start_sandbox(config)
    status, _, payload = await post_token(handle, body_of(conversion("s-1", event_id="ev1")))
    assert (status, payload["errors"][0]["code"]) == (403, "UNAUTHORIZED_CLIENT_APPLICATION")
    handle.set_faults(status_overrides={"acct1": 401})
    status, _, payload = await post_token(handle, body_of(conversion("s-1", event_id="ev1")))
    assert (status, payload["errors"][0]["code"]) == (401, "UNAUTHORIZED_ACCESS")
    handle.set_faults(status_overrides={})
    status, _, _ = await post_token(handle, body_of(conversion("s-1", event_id="ev1")))
    assert status == 200


async def test_same_seed_same_faults(start_sandbox: Callable[..., SandboxHandle]) -> None:
    config = {"seed": 1234, "faults": {"error_500": 0.3, "error_503": 0.3}}
    sequences = []
    for _ in range(2):
        handle = start_sandbox(config)
        sequences.append([(await post_token(handle, PAGE_EXAMPLE))[0] for _ in range(30)])
    assert sequences[0] == sequences[1]
    assert {200, 500, 503} <= set(sequences[0])


async def test_account_cannot_use_another_accounts_credentials(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    config = tiny_limits()
    config["accounts"].append(
        {
            "account_id": "acct2",
            "pixel_id": "pix2",
            "event_ids": ["ev2"],
            "consumer_key": "ck1",
            "consumer_secret": "cs1",
            "access_token": "at2",
            "access_token_secret": "ats2",
        }
    )
    handle = start_sandbox(config)
    url = handle.endpoint("pix2")
    status, _, payload = await post(
        url,
        body_of(conversion("x", event_id="ev2")),
        headers={"Authorization": oauth_header(handle, url)},
    )
    assert (status, payload["errors"][0]["code"]) == (404, "NOT_FOUND")
    status, _, _ = await post(
        url, body_of(conversion("x", event_id="ev2")), headers={"X-Pixel-Token": "pt1"}
    )
    assert status == 401


# ----------------------------------------------------------------------- admin


async def test_admin_endpoints(sandbox: SandboxHandle) -> None:
    assert sandbox.health()["status"] == "ok"
    await post_token(sandbox, body_of(conversion("a"), conversion("b")))
    await post_token(sandbox, body_of(conversion("a"), {**conversion("c"), "conversion_id": "c"}))
    no_id = conversion("z")
    del no_id["conversion_id"]
    await post_token(sandbox, body_of(no_id))
    assert sandbox.conversion_ids() == {"a": 2, "b": 1, "c": 1}
    stats = sandbox.stats()
    assert stats["accepted_conversions"] == 5
    assert stats["unique_conversion_ids"] == 3
    assert stats["duplicate_conversion_ids"] == 1
    assert stats["conversions_without_id"] == 1
    assert stats["accounts"][sandbox.account_id]["accepted_requests"] == 3
    recent = sandbox.conversions(limit=3)
    assert [c.get("conversion_id") for c in recent] == ["a", "c", None]

    faults = sandbox.set_faults(error_500=0.25, seed=9)
    assert (faults["error_500"], faults["seed"]) == (0.25, 9)
    assert sandbox.faults()["error_500"] == 0.25
    with pytest.raises(AssertionError, match="400"):
        sandbox.set_faults(error_500=0.8, error_503=0.8)
    with pytest.raises(AssertionError, match="400"):
        sandbox.set_faults(no_such_fault=1)

    sandbox.reset()
    assert sandbox.conversion_ids() == {}
    assert sandbox.stats()["accepted_conversions"] == 0
    assert sandbox.faults()["error_500"] == 0.0
    assert sandbox.conversions() == []


async def test_recent_conversions_ring_is_bounded(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox({"recent_conversions": 4})
    for start in (0, 3, 6):
        await post_token(handle, body_of(*(conversion(f"k-{i}") for i in range(start, start + 3))))
    assert [c["conversion_id"] for c in handle.conversions(limit=100)] == [
        "k-5",
        "k-6",
        "k-7",
        "k-8",
    ]
    assert [c["conversion_id"] for c in handle.conversions(limit=2)] == ["k-7", "k-8"]


async def test_validation_off_accepts_any_json(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox({"validation": False})
    bad = conversion("bad-1", identifiers=[{"hashed_email": "not-a-hash"}])
    body = orjson.dumps({"conversions": [bad, {"conversion_id": "x"}, 5]})
    status, _, payload = await post_token(handle, body)
    assert status == 200, payload
    assert payload["data"]["conversions_processed"] == 3
    status, _, payload = await post_token(handle, b'{"no": "conversions"}')
    assert (status, payload["data"]["conversions_processed"]) == (200, 0)
    status, _, payload = await post_token(handle, b'{"conversions": [')
    assert status == 400
    assert payload["errors"][0]["message"] == "Request body is not valid JSON"
    status, _, _ = await post(handle.endpoint(), PAGE_EXAMPLE)  # no credentials
    assert status == 401
    stats = handle.stats()
    assert (stats["accepted_requests"], stats["accepted_conversions"]) == (2, 3)
    assert handle.conversion_ids() == {"bad-1": 1, "x": 1}
    assert handle.conversions(limit=3) == [bad, {"conversion_id": "x"}, 5]


async def test_logs_hold_no_identifiers(start_sandbox: Callable[..., SandboxHandle]) -> None:
    handle = start_sandbox(None, log_level="debug")
    await post_token(handle, PAGE_EXAMPLE)
    await post_token(handle, body_of(conversion("p", identifiers=[{"hashed_email": "raw@x.com"}])))
    url = handle.endpoint()
    await post(
        url,
        PAGE_EXAMPLE,
        headers={"Authorization": oauth_header(handle, url, consumer_secret="no")},
    )
    logs = handle.logs()
    assert "sandbox accepted request" in logs
    for secret in (
        "raw@x.com",
        "23opevjt88psuo13lu8d020qkn",
        "1.0.0.0",
        "d360d510a2245",
        "Mozilla",
    ):
        assert secret not in logs
    assert handle.consumer_secret not in logs


@pytest.mark.slow
async def test_one_million_conversion_ids(sandbox: SandboxHandle) -> None:
    """2,000 full batches with distinct ids, then the whole id table over HTTP."""
    assert sandbox.pixel_token is not None
    headers = {"X-Pixel-Token": sandbox.pixel_token, "Content-Type": "application/json"}

    async def send(session: aiohttp.ClientSession, batch: int) -> None:
        items = [conversion(f"id-{batch:05d}-{i:03d}") for i in range(500)]
        async with session.post(sandbox.endpoint(), data=body_of(*items), headers=headers) as resp:
            assert resp.status == 200

    async with aiohttp.ClientSession() as session:
        for start in range(0, 2000, 8):
            await asyncio.gather(*(send(session, b) for b in range(start, start + 8)))
    ids = sandbox.conversion_ids()
    assert len(ids) == 1_000_000
    assert set(ids.values()) == {1}
    assert sandbox.stats()["unique_conversion_ids"] == 1_000_000
