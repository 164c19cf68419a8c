"""Turn one HTTP answer of the conversions endpoint into an outcome or an exception.

The status decides the class (so an HTML error page still maps correctly); the JSON
body, when there is one, only adds detail (X's error list, ``debug_id``,
``conversions_processed``).

- 2xx -> ``Accepted`` (X documents 200; other 2xx are read the same way).
- 400, 413, 422 -> ``BatchRejectedError``: something in the batch is invalid or too
  big; isolation (``split``) finds the culprits.
- 401, 403, 404 and other unexpected 4xx/3xx (405, 410, 415, a redirect ...) ->
  ``AccountBlockedError``: credentials, access, pixel or base URL need an operator;
  offsets are held, nothing is dead-lettered.
- 408, 425 -> ``RetryableError``; 429 -> ``RateLimitedError``; 5xx -> ``ServerError``.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from consumer.errors import (
    AccountBlockedError,
    BatchRejectedError,
    RateLimitedError,
    RetryableError,
    ServerError,
)

_MAX_MESSAGE = 300


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# Header values come from outside: anything not a finite number in a sane range is
# ignored rather than trusted (``inf`` once crashed a delivery task with OverflowError).
_MAX_HEADER_NUMBER = 1e15


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or abs(number) > _MAX_HEADER_NUMBER:
        return None
    return number


def _int(value: str | None) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """The ``x-rate-limit-*`` (or ``x-account-rate-limit-*``) triple of a response."""

    limit: int | None
    remaining: int
    reset: float
    scope: Literal["app", "account"]

    @property
    def reset_epoch(self) -> float:
        """When the window resets, epoch seconds (same as ``reset``)."""
        return self.reset

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders | None:
        """Read whichever family is present; with both, the one with less remaining.

        Returns None when neither family has both ``remaining`` and ``reset``.
        """
        lowered = _lower(headers)
        found: list[RateLimitHeaders] = []
        for prefix, scope in (("x-rate-limit-", "app"), ("x-account-rate-limit-", "account")):
            remaining = _int(lowered.get(prefix + "remaining"))
            reset = _float(lowered.get(prefix + "reset"))
            if remaining is None or reset is None or remaining < 0 or reset < 0:
                continue
            limit = _int(lowered.get(prefix + "limit"))
            found.append(cls(limit, remaining, reset, scope))  # type: ignore[arg-type]
        if not found:
            return None
        return min(found, key=lambda h: h.remaining)


def parse_retry_after(value: str | None, wall_now: float) -> float | None:
    """``Retry-After`` as delay seconds or an HTTP date; None when absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    seconds = _float(text)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall_now)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The API took the batch."""

    conversions_processed: int | None
    debug_id: str | None
    rate_limit: RateLimitHeaders | None


def _json(body: bytes) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _errors(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    if doc is None:
        return []
    raw = doc.get("errors")
    if not isinstance(raw, list):
        return []
    return [e for e in raw if isinstance(e, dict)]


def _summary(status: int, errors: list[dict[str, Any]]) -> tuple[str, str]:
    """First error's code and message (bounded), or ``HTTP_<status>``."""
    if errors:
        code = str(errors[0].get("code") or f"HTTP_{status}")
        message = str(errors[0].get("message") or "")[:_MAX_MESSAGE]
        if len(errors) > 1:
            message += f" (+{len(errors) - 1} more)"
        return code, message
    return f"HTTP_{status}", "no error details in the response body"


def parse_response(
    status: int, headers: Mapping[str, str], body: bytes, wall_now: float
) -> Accepted:
    """Return ``Accepted`` for a 2xx; raise the exception of ``consumer.errors`` otherwise."""
    lowered = _lower(headers)
    doc = _json(body)
    rate = RateLimitHeaders.parse(lowered)

    if 200 <= status < 300:
        data = doc.get("data") if doc is not None else None
        processed: int | None = None
        debug_id: str | None = None
        if isinstance(data, dict):
            count = data.get("conversions_processed")
            if isinstance(count, int) and not isinstance(count, bool):
                processed = count
            elif isinstance(count, str):
                processed = _int(count)
            raw_id = data.get("debug_id")
            debug_id = str(raw_id) if raw_id is not None else None
        return Accepted(processed, debug_id, rate)

    errors = _errors(doc)
    code, message = _summary(status, errors)
    retry_after = parse_retry_after(lowered.get("retry-after"), wall_now)

    if status in (400, 413, 422):
        debug = None
        if doc is not None and isinstance(doc.get("debug_id"), str):
            debug = doc["debug_id"]
        raise BatchRejectedError(
            f"HTTP {status} {code}: {message}", errors=errors, debug_id=debug, status=status
        )
    if status == 429:
        hint = retry_after
        if rate is not None:
            until_reset = max(0.0, rate.reset - wall_now)
            hint = until_reset if hint is None else max(hint, until_reset)
        raise RateLimitedError(f"HTTP 429 {code}: {message}", retry_after=hint)
    if status >= 500:
        raise ServerError(status, f"HTTP {status} {code}: {message}", retry_after=retry_after)
    if status in (408, 425):
        raise RetryableError(f"HTTP {status} {code}: {message}", retry_after=retry_after)
    raise AccountBlockedError(status, code, message)
