"""In-flight request limits: a resizable asyncio limiter and an AIMD controller.

``InFlightLimiter`` is a semaphore whose limit can change while requests are in flight
(lowering it only stops new acquisitions until enough slots are released).
An account lane (``consumer.delivery.lane``) takes its own account slot first, then
the global one, so a blocked or slow account never sits on global slots while it waits.

``AdaptiveLimit`` is a pure AIMD state machine: +1 after a window of successes whose
latency stays near the best seen, x0.5 on overload (429, 5xx, timeout). After a
decrease the outcomes of requests already in flight are not counted again, so one
overload episode halves the limit once, not once per in-flight request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class InFlightLimiter:
    """A counting semaphore with a changeable limit (FIFO wake-ups)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def set_limit(self, limit: int) -> None:
        """Change the limit; raising it admits waiters at once."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._wake()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits ahead; never blocks."""
        if self._in_flight < self._limit and not self.waiting:
            self._in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot (first come, first served)."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed to us just as we were cancelled: give it back.
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without acquire()")
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._limit:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._in_flight += 1
            waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class AdaptiveLimit:
    """AIMD limit controller; feed it outcomes, read ``limit``."""

    def __init__(
        self,
        initial: int,
        *,
        minimum: int = 1,
        maximum: int = 64,
        latency_tolerance: float = 2.0,
        best_decay: float = 1.01,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.latency_tolerance = latency_tolerance
        self.best_decay = best_decay
        self._limit = min(max(initial, minimum), maximum)
        self._best: float | None = None
        self._window_ok = 0
        self._window_steady = True
        self._ignore = 0  # outcomes of requests that were in flight at the last decrease

    @property
    def limit(self) -> int:
        return self._limit

    def on_success(self, latency_s: float) -> int:
        """A request succeeded (200 or 400: the server coped) after ``latency_s``."""
        if self._ignore > 0:
            self._ignore -= 1
            return self._limit
        best = self._best
        if best is None or latency_s < best:
            self._best = latency_s
        elif latency_s > best * self.latency_tolerance:
            self._window_steady = False
        self._window_ok += 1
        if self._window_ok >= self._limit:
            if self._window_steady and self._limit < self.maximum:
                self._limit += 1
            self._window_ok = 0
            self._window_steady = True
            if self._best is not None:
                # Let the baseline drift up slowly so one lucky fast answer does not
                # freeze growth forever.
                self._best *= self.best_decay
        return self._limit

    def on_failure(self) -> int:
        """Alias of ``on_overload``."""
        return self.on_overload()

    def on_overload(self) -> int:
        """429, 5xx or a timeout: halve (once per episode), within [minimum, maximum]."""
        if self._ignore > 0:
            self._ignore -= 1
            return self._limit
        before = self._limit
        self._limit = max(self.minimum, before // 2)
        self._ignore = max(0, before - 1)
        self._window_ok = 0
        self._window_steady = True
        return self._limit


Limiter = InFlightLimiter
"""Short name of ``InFlightLimiter``."""
