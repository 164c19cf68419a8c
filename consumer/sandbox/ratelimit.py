"""Per-account fixed-window budget, as X's 15-minute windows, with an injectable clock.

A window opens with the first request after the previous one ended, and closes
``window_s`` later; ``reset`` is that end in epoch seconds (rounded up), as in X's
``x-rate-limit-reset`` header.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.sandbox.config import RateLimitConfig


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset: int
    exhausted: str | None = None  # "requests" or "events" when not allowed

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset),
        }


class FixedWindowLimiter:
    """Counts requests (every authenticated one) and events (accepted ones) per window."""

    def __init__(self, settings: RateLimitConfig, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._window_end = 0.0
        self._requests = 0
        self._events = 0

    def _roll(self) -> float:
        now = self._clock()
        if now >= self._window_end:
            self._window_end = now + self.settings.window_s
            self._requests = 0
            self._events = 0
        return now

    def _decision(self, allowed: bool, exhausted: str | None = None) -> RateDecision:
        limit = self.settings.requests_per_window
        return RateDecision(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - self._requests),
            reset=math.ceil(self._window_end),
            exhausted=exhausted,
        )

    def peek(self) -> RateDecision:
        """The current state without spending anything (for answers before the budget check)."""
        self._roll()
        return self._decision(True)

    def acquire_request(self) -> RateDecision:
        """Spend one request; refused (not spent) when the window's requests are used up."""
        self._roll()
        if not self.settings.enabled:
            return self._decision(True)
        if self._requests >= self.settings.requests_per_window:
            return self._decision(False, "requests")
        self._requests += 1
        return self._decision(True)

    def acquire_events(self, count: int) -> RateDecision:
        """Spend ``count`` events; refused whole when they do not fit the events budget."""
        self._roll()
        budget = self.settings.events_per_window
        if self.settings.enabled and budget and self._events + count > budget:
            return self._decision(False, "events")
        self._events += count
        return self._decision(True)

    def reset(self) -> None:
        self._window_end = 0.0
        self._requests = 0
        self._events = 0
