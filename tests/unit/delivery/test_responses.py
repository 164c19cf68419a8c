from __future__ import annotations

import email.utils

import orjson
import pytest

from consumer.delivery.responses import (
    Accepted,
    RateLimitHeaders,
    parse_response,
    parse_retry_after,
)
from consumer.delivery.retry import cap_hint
from consumer.errors import (
    AccountBlockedError,
    BatchRejectedError,
    RateLimitedError,
    RetryableError,
    ServerError,
)

NOW = 1_700_000_000.0


def body(doc: object) -> bytes:
    return orjson.dumps(doc)


def test_200_accepted_with_count_debug_id_and_headers() -> None:
    doc = {
        "request": {"params": {"account_id": "18ce552mlaq"}},
        "data": {"conversions_processed": 3, "debug_id": "ff02e052"},
    }
    headers = {
        "X-Rate-Limit-Limit": "100000",
        "X-Rate-Limit-Remaining": "99990",
        "X-Rate-Limit-Reset": str(int(NOW) + 600),
    }
    result = parse_response(200, headers, body(doc), NOW)
    assert result == Accepted(3, "ff02e052", RateLimitHeaders(100000, 99990, NOW + 600, "app"))


def test_200_non_json_is_still_accepted() -> None:
    result = parse_response(200, {}, b"OK", NOW)
    assert result.conversions_processed is None
    assert result.debug_id is None


def test_400_carries_x_errors() -> None:
    errors = [
        {"code": "INVALID_PARAMETER", "message": "bad hash", "parameter": "conversions[2].x"},
        {"code": "MISSING_PARAMETER", "message": "no id", "parameter": "conversions[4]"},
    ]
    with pytest.raises(BatchRejectedError) as info:
        parse_response(400, {}, body({"errors": errors, "request": {}}), NOW)
    assert info.value.errors == errors
    assert "INVALID_PARAMETER" in str(info.value)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_block_the_account(status: int) -> None:
    doc = {"errors": [{"code": "UNAUTHORIZED_ACCESS", "message": "not authenticated"}]}
    with pytest.raises(AccountBlockedError) as info:
        parse_response(status, {}, body(doc), NOW)
    assert info.value.status == status
    assert info.value.code == "UNAUTHORIZED_ACCESS"
    assert info.value.message == "not authenticated"


def test_html_404_page_status_decides() -> None:
    with pytest.raises(AccountBlockedError) as info:
        parse_response(404, {"content-type": "text/html"}, b"<html>Not Found</html>", NOW)
    assert info.value.code == "HTTP_404"


def test_429_retry_after_from_reset_header() -> None:
    headers = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(NOW) + 90)}
    with pytest.raises(RateLimitedError) as info:
        parse_response(429, headers, body({"errors": [{"code": "TOO_MANY_REQUESTS"}]}), NOW)
    assert info.value.retry_after == pytest.approx(90.0)


def test_429_takes_the_later_of_reset_and_retry_after() -> None:
    headers = {
        "x-account-rate-limit-remaining": "0",
        "x-account-rate-limit-reset": str(int(NOW) + 10),
        "retry-after": "30",
    }
    with pytest.raises(RateLimitedError) as info:
        parse_response(429, headers, b"", NOW)
    assert info.value.retry_after == pytest.approx(30.0)


def test_429_without_hints() -> None:
    with pytest.raises(RateLimitedError) as info:
        parse_response(429, {}, b"", NOW)
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_server_error_with_retry_after(status: int) -> None:
    with pytest.raises(ServerError) as info:
        parse_response(status, {"Retry-After": "5"}, b"<html>oops</html>", NOW)
    assert info.value.status == status
    assert info.value.retry_after == 5.0


def test_413_is_a_rejection_to_isolate_and_408_is_retryable() -> None:
    with pytest.raises(BatchRejectedError) as info:
        parse_response(413, {}, b"too large", NOW)
    assert info.value.errors == []
    with pytest.raises(RetryableError):
        parse_response(408, {}, b"", NOW)


@pytest.mark.parametrize("status", [301, 405, 410, 415])
def test_unexpected_statuses_hold_the_account(status: int) -> None:
    with pytest.raises(AccountBlockedError):
        parse_response(status, {}, b"", NOW)


def test_rate_limit_headers_pick_the_present_or_tighter_family() -> None:
    assert RateLimitHeaders.parse({}) is None
    assert RateLimitHeaders.parse({"x-rate-limit-remaining": "5"}) is None
    account_only = RateLimitHeaders.parse(
        {"x-account-rate-limit-remaining": "7", "x-account-rate-limit-reset": "123"}
    )
    assert account_only == RateLimitHeaders(None, 7, 123.0, "account")
    both = RateLimitHeaders.parse(
        {
            "x-rate-limit-remaining": "50",
            "x-rate-limit-reset": "200",
            "x-account-rate-limit-limit": "100",
            "x-account-rate-limit-remaining": "3",
            "x-account-rate-limit-reset": "300",
        }
    )
    assert both is not None
    assert (both.remaining, both.reset_epoch, both.scope) == (3, 300.0, "account")


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("12", NOW) == 12.0
    assert parse_retry_after("-3", NOW) == 0.0
    date = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(45.0)
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    "remaining", ["inf", "-inf", "nan", "1e400", "-5", "garbage", "", "99999999999999999999"]
)
def test_odd_rate_limit_headers_are_ignored_never_raised(remaining: str) -> None:
    # ``inf`` once raised OverflowError inside a delivery task (which then died silently).
    headers = {"x-rate-limit-remaining": remaining, "x-rate-limit-reset": "1700000900"}
    assert RateLimitHeaders.parse(headers) is None
    accepted = parse_response(200, headers, b"{}", 1_700_000_000.0)
    assert accepted.rate_limit is None


@pytest.mark.parametrize("reset", ["inf", "nan", "-1", "1e300"])
def test_odd_reset_values_are_ignored(reset: str) -> None:
    headers = {"x-rate-limit-remaining": "5", "x-rate-limit-reset": reset}
    assert RateLimitHeaders.parse(headers) is None


def test_cap_hint_bounds_every_server_hint() -> None:
    assert cap_hint(None, 900.0) == (None, False)
    assert cap_hint(1_000_000_000.0, 900.0) == (900.0, True)
    assert cap_hint(30.0, 900.0) == (30.0, False)
    assert cap_hint(-3.0, 900.0) == (0.0, False)
