"""The gate of one account's lane: open, blocked on its credentials, or probing.

A 401/403/404 is the account's fault, not the events': sending everything again would
only hammer the API, and waiting for an event that nobody sets (v1) holds the
account's offsets forever. So the gate has explicit states and exactly one prober:

- ``OPEN``: every batch passes.
- ``BLOCKED``: batches wait; at ``next_probe_at`` the oldest waiting batch is let
  through alone, as the probe.
- ``PROBING``: that one request is in flight; nobody else passes.

The probe's outcome decides: accepted (or a 400: authentication passed) opens the
gate and releases every waiter; blocked again doubles the delay (``initial_s`` up to
``max_s``, each delay jittered by x[0.5, 1.5)); a transient failure (5xx, timeout)
keeps the delay and probes again. A probe whose task goes away (shutdown) hands the
turn to the next waiter. ``GateState`` is the pure state machine (injected clock and
random source); ``Gate`` adds the asyncio waiting on top and owns the one timer.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class GateMode(enum.Enum):
    OPEN = "open"
    BLOCKED = "blocked"
    PROBING = "probing"


class ProbeOutcome(enum.Enum):
    ACCEPTED = "accepted"  # the API took the request (or judged its content: 400)
    BLOCKED = "blocked"  # 401/403/404 again
    FAILED = "failed"  # transient: 5xx, 429, timeout, connection error
    ABANDONED = "abandoned"  # the probing task ended without an answer


class GateState:
    """Pure state of a gate; every method takes or reads the injected clock."""

    def __init__(
        self,
        *,
        initial_s: float = 15.0,
        max_s: float = 300.0,
        clock: Callable[[], float],
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self._clock = clock
        self._rng = rng
        self.mode = GateMode.OPEN
        self.reason: str | None = None
        self.delay_s = initial_s
        self.next_probe_at: float | None = None
        self.probes = 0

    def _schedule(self) -> None:
        self.next_probe_at = self._clock() + self.delay_s * (0.5 + self._rng())

    def block(self, reason: str, *, probe_now: bool = False) -> bool:
        """A request was answered 401/403/404; True when this closed an open gate.

        ``probe_now``: closed on evidence from before this process (a parked event), so
        the first probe is due at once.
        """
        if self.mode is not GateMode.OPEN:
            self.reason = reason
            return False
        self.mode = GateMode.BLOCKED
        self.reason = reason
        self.delay_s = self.initial_s
        if probe_now:
            self.next_probe_at = self._clock()
        else:
            self._schedule()
        return True

    def probe_due(self) -> bool:
        """True when blocked and the next probe's time has come."""
        return (
            self.mode is GateMode.BLOCKED
            and self.next_probe_at is not None
            and self._clock() >= self.next_probe_at
        )

    def start_probe(self) -> None:
        if self.mode is not GateMode.BLOCKED:
            raise RuntimeError(f"cannot probe from {self.mode.value}")
        self.mode = GateMode.PROBING
        self.next_probe_at = None
        self.probes += 1

    def finish_probe(self, outcome: ProbeOutcome, reason: str | None = None) -> None:
        """Record the probe's outcome; the gate opens or is blocked with a new time."""
        if self.mode is not GateMode.PROBING:
            raise RuntimeError("no probe in flight")
        if outcome is ProbeOutcome.ACCEPTED:
            self.mode = GateMode.OPEN
            self.reason = None
            self.delay_s = self.initial_s
            return
        self.mode = GateMode.BLOCKED
        if outcome is ProbeOutcome.BLOCKED:
            self.reason = reason or self.reason
            self.delay_s = min(self.max_s, self.delay_s * 2)
        if outcome is ProbeOutcome.ABANDONED:
            self.next_probe_at = self._clock()  # the next waiter probes at once
        else:
            self._schedule()

    def seconds_to_probe(self) -> float | None:
        if self.next_probe_at is None:
            return None
        return max(0.0, self.next_probe_at - self._clock())


@dataclass(slots=True)
class Ticket:
    """What ``Gate.admit`` hands out: ``probe`` is True for the one probing request."""

    probe: bool


class Gate:
    """Asyncio face of ``GateState``: waiters queue FIFO, one timer picks the probe."""

    def __init__(
        self,
        state: GateState,
        *,
        on_change: Callable[[GateState], None] | None = None,
    ) -> None:
        self.state = state
        self._waiters: deque[asyncio.Future[Ticket]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._on_change = on_change

    @property
    def mode(self) -> GateMode:
        return self.state.mode

    async def admit(self) -> Ticket:
        """Return at once while open; else wait until open or chosen as the probe."""
        if self.state.mode is GateMode.OPEN:
            return Ticket(probe=False)
        if self.state.probe_due():
            self.state.start_probe()
            self._changed()
            return Ticket(probe=True)
        waiter: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._arm()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result().probe:
                self.finish(ProbeOutcome.ABANDONED)  # our turn to probe: pass it on
            raise

    def block(self, reason: str, *, probe_now: bool = False) -> bool:
        """A 401/403/404 outside a probe; True when it closed the gate."""
        closed = self.state.block(reason, probe_now=probe_now)
        if closed:
            self._changed()
            self._arm()
        return closed

    def finish(self, outcome: ProbeOutcome, reason: str | None = None) -> None:
        """The probe's outcome; opening releases every waiter in arrival order."""
        self.state.finish_probe(outcome, reason)
        self._changed()
        if self.state.mode is GateMode.OPEN:
            self._cancel_timer()
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(Ticket(probe=False))
        else:
            self._arm()

    def close(self) -> None:
        """Shutdown: stop the timer (waiters are cancelled with their tasks)."""
        self._cancel_timer()

    # -- the one timer -----------------------------------------------------------------

    def _arm(self) -> None:
        if self.state.mode is not GateMode.BLOCKED:
            return
        delay = self.state.seconds_to_probe()
        if delay is None:
            return
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self.state.probe_due():
            self._arm()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self.state.start_probe()
            self._changed()
            waiter.set_result(Ticket(probe=True))
            return
        # Nobody waits: the next admit() probes at once (probe_due stays true).

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.state)
