"""The sandbox's faults for engine v2 over real HTTP: odd headers, HTML pages, partial 200s."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_sandbox import body_of, conversion, post_token, tiny_limits

pytestmark = pytest.mark.sandbox


@pytest.mark.timeout(60)
async def test_header_overrides_replace_rate_headers_on_every_answer(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox(tiny_limits(requests_per_window=50, window_s=60))
    body = body_of(conversion("h-1", event_id="ev1"))
    odd = {"x-rate-limit-remaining": "inf", "x-rate-limit-reset": "garbage"}
    handle.set_faults(header_overrides=odd)
    status, headers, _ = await post_token(handle, body)
    assert status == 200
    assert headers["x-rate-limit-remaining"] == "inf"
    assert headers["x-rate-limit-reset"] == "garbage"
    assert headers["x-rate-limit-limit"] == "50"  # the others stay
    # Errors carry them too (an injected 503 with a huge retry-after here).
    handle.set_faults(error_503_retry_after=1.0, retry_after_s=1_000_000_000)
    status, headers, _ = await post_token(handle, body)
    assert (status, headers["retry-after"], headers["x-rate-limit-remaining"]) == (
        503,
        "1000000000",
        "inf",
    )
    handle.set_faults(header_overrides={}, error_503_retry_after=0.0)
    status, headers, _ = await post_token(handle, body)
    assert status == 200
    assert headers["x-rate-limit-remaining"].isdigit()


@pytest.mark.timeout(60)
async def test_header_overrides_are_validated(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox(tiny_limits())
    with pytest.raises(AssertionError, match="400"):
        handle.set_faults(header_overrides={"x-a": "1\r\nx-injected: 1"})
    assert handle.faults()["header_overrides"] == {}


@pytest.mark.timeout(60)
async def test_status_override_as_an_html_page(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox(tiny_limits())
    handle.set_faults(status_overrides={"acct1": 404}, error_page_html=True)
    status, headers, payload = await post_token(handle, body_of(conversion("p-1", event_id="ev1")))
    assert status == 404
    assert headers["content-type"].startswith("text/html")
    assert isinstance(payload, bytes)
    assert b"<title>404 Not Found</title>" in payload
    handle.set_faults(status_overrides={})
    status, _, _ = await post_token(handle, body_of(conversion("p-1", event_id="ev1")))
    assert status == 200


@pytest.mark.timeout(60)
async def test_processed_shortfall_reports_a_partial_success(
    start_sandbox: Callable[..., SandboxHandle],
) -> None:
    handle = start_sandbox(tiny_limits())
    handle.set_faults(processed_shortfall=2)
    five = body_of(*(conversion(f"s-{n}", event_id="ev1") for n in range(5)))
    status, _, payload = await post_token(handle, five)
    assert (status, payload["data"]["conversions_processed"]) == (200, 3)
    one = body_of(conversion("s-9", event_id="ev1"))
    status, _, payload = await post_token(handle, one)
    assert (status, payload["data"]["conversions_processed"]) == (200, 0)
    stats = handle.stats()
    assert stats["faults_injected"]["partial_200"] == 2
    assert stats["conversions_unprocessed"] == 3  # 2 of the five, 1 of the one
    assert len(handle.conversion_ids()) == 6  # still recorded as accepted
