"""Exponential backoff with full jitter for retriable failures.

Retriable failures (timeouts, 5xx, 429) are retried forever: an event is only ever
delivered or dead-lettered, never dropped. So the cap bounds how stale a retry loop
can get (60 s by default: an outage is noticed within a minute of its end) rather than
how many attempts are made. Full jitter (a uniform delay in ``[0, min(cap, base·2^n))``)
keeps many batches and replicas from retrying in lock-step. A server hint
(``retry-after`` or the rate-limit reset) is a floor: never retry before it, plus a
little jitter so replicas sharing an account do not all fire at the reset instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from consumer.errors import RetryableError

_MAX_EXPONENT = 62


class Backoff:
    """Delay before retry number ``attempt`` (1 = first retry)."""

    def __init__(
        self,
        base_s: float = 0.5,
        cap_s: float = 60.0,
        *,
        rng: random.Random | Callable[[], float] | None = None,
        hint_jitter_s: float = 1.0,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.hint_jitter_s = hint_jitter_s
        if rng is None:
            rng = random.Random()
        self._rng: Callable[[], float] = rng.random if isinstance(rng, random.Random) else rng

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the jittered delay for ``attempt`` (without a server hint)."""
        exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
        return min(self.cap_s, self.base_s * (2.0**exponent))

    def delay_for(self, error: RetryableError | None, attempt: int) -> float:
        """Seconds to wait before retry ``attempt``; never less than ``error.retry_after``."""
        ceiling = self.ceiling(attempt)
        delay = self._rng() * ceiling
        hint = error.retry_after if error is not None else None
        if hint is not None and hint >= 0:
            floor = hint + self._rng() * min(self.hint_jitter_s, ceiling)
            delay = max(delay, floor)
        return delay


def cap_hint(seconds: float | None, cap_s: float) -> tuple[float | None, bool]:
    """A server hint bounded by ``cap_s``; the flag says whether it had to be cut.

    ``retry-after: 1000000000`` or a reset 10^8 s ahead would otherwise freeze an
    account silently; no hint is trusted beyond the account's own window length.
    """
    if seconds is None:
        return None, False
    if seconds > cap_s:
        return cap_s, True
    return max(0.0, seconds), False
