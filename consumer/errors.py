"""The project's exception tree: the class of an error says what to do with it.

- ``ConfigError``: the operator must fix a setting; raised at start-up, never per event.
- ``RetryableError``: transient; retry with backoff, the events stay in flight.
- ``PoisonError``: this input (an event or a batch) will never succeed as it is;
  dead-letter it with its reason and move on.
- ``AccountBlockedError``: the API refused the account's credentials or access
  (401/403/404). Not the events' fault: hold the account's offsets, stop sending
  for it, report loudly, never dead-letter.
- ``DeadLetterUnavailable``: the dead-letter topic refuses records for good
  (authorization, unknown topic past the grace period, a fatal producer error).
  Nothing can be finished any more: the engine must stop loudly, never retry forever.

Transform rejections are not exceptions: they are values (``consumer.transform``),
because they are expected on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class XConvError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(XConvError):
    """A setting is missing or invalid; ``setting`` names it (dotted path)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class RetryableError(XConvError):
    """Transient failure: try again later; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransportError(RetryableError):
    """Timeout, refused or dropped connection: no HTTP answer was read."""


class ServerError(RetryableError):
    """HTTP 5xx from the API."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class RateLimitedError(RetryableError):
    """HTTP 429: the account's budget is spent until ``retry_after`` seconds from now."""


class PoisonError(XConvError):
    """This input can never succeed as it is: dead-letter it, never retry."""


class BatchRejectedError(PoisonError):
    """HTTP 400/413/422: X rejected the whole batch (all-or-nothing); ``errors`` is X's list."""

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        debug_id: str | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.errors = list(errors)
        self.debug_id = debug_id
        self.status = status


class AccountBlockedError(XConvError):
    """401/403/404: credentials, access or an unknown pixel / event tag.

    A configuration problem of one account, not of its events: the engine holds
    that account's offsets and stops sending for it until the operator fixes it.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class DeadLetterUnavailable(XConvError):
    """The dead-letter topic refuses records for good: the engine must stop loudly.

    Raised for authorization failures, an unknown topic past the grace period and
    fatal producer errors; the message names the topic and the error, never a record.
    """
