"""Per-account request pacing: GCRA over requests and events, synced by server headers.

Pacing model. X grants ``requests_per_window`` requests (and, per some pages, an events
budget) per ``window_s`` and answers 429 when an account exceeds it. Sending as fast as
possible burns the window in its first seconds and then stalls on 429 until the reset;
instead every request reserves a slot from a Generic Cell Rate Algorithm: slots are
``window_s / requests_per_window`` apart (and, with an events budget,
``events * window_s / events_per_window`` apart), with a tolerance of ``burst``
back-to-back requests (once the server's headers have been seen). Sustained
throughput is exactly the nominal rate, so the whole budget is usable while it stays
spread over the window.

Header sync. Other replicas may share the account, and the server's window is not
aligned with ours, so ``observe`` reads ``x-rate-limit-remaining`` / ``-reset``: when
the server has fewer requests left than our pace would use before the reset, the slot
interval stretches to spread what is left (minus our own requests the server has not
counted yet) evenly over the time to reset. It never goes below the nominal interval,
and the stretch ends at the reset. With nothing left, sends wait for the reset.

Fair share. Replicas of one consumer group sharing the account each read the same
headers; spreading the whole ``remaining`` over the time to reset, N of them would spend
the window N times too fast and then wait. ``ShareEstimator`` measures this replica's
share of the account's use from the headers alone: between two answers of one window
the server's ``remaining`` dropped by D while this replica sent S of those requests, so
its share is S / D. Pacing then spreads ``remaining * share ** (1 - FAIRNESS)`` minus the
replica's own queued slots over the time to reset. The small exponent favours the
smaller shares, so unequal splits drift to 1/N; see docs/delivery-internals.md.

Whole-second resets. X sends the reset in whole epoch seconds, rounded up, so the real
end of a window lies up to a second before the header's. A group that empties the
window at the nominal rate would then wait for that second with nothing to send. A
window opens no later than the first answer that carries its reset, so its real end is
at most ``window_s`` after that answer: when this bound falls within the rounding second,
pacing uses it as the reset (see ``RateBudget._window_end``).

429. ``block_until`` pauses every new slot of the account until the given time; the
caller re-checks ``blocked_for`` after sleeping for a slot reserved before the block.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal

_UNSEEN_HORIZON_S = 120.0  # how long our reservations are remembered for header sync

Kind = Literal["requests", "events"]

# Fair share (see ``ShareEstimator``).
FAIRNESS = 0.1  # pace at share ** (1 - FAIRNESS): smaller shares grow, unequal splits even out
MIN_SHARE = 0.01  # a replica never plans below 1 % of the account's remaining budget
SHARE_MIN_DROP = 8  # drops of ``remaining`` smaller than this do not move the estimate
SHARE_ALONE_SLACK = 0.02  # others' use within 2 % of the drop (or one request) counts as none
# The estimate's sliding horizon: window_s / 6, within [2 s, 10 s].
SHARE_HORIZON_FRACTION = 1 / 6
SHARE_HORIZON_MIN_S = 2.0
SHARE_HORIZON_MAX_S = 10.0
RESET_SAME_WINDOW_S = 1.5  # resets this close belong to one server window
RESET_ROUNDING_S = 1.0  # the header's reset is the real end rounded up to a whole second


class ShareEstimator:
    """This replica's share of an account's use, from ``remaining`` headers alone.

    Each sample is (``sent_at``: when the observed request was sent, ``seen``: how many
    of our own units were sent up to then, the server's ``remaining`` and reset). Over
    the samples of one server window within ``horizon_s``, the server counted
    ``drop = remaining_old - remaining_new`` units, ``own = seen_new - seen_old`` of them
    ours, so ``share = own / drop``. Others' use below ``SHARE_ALONE_SLACK`` of the drop
    (or one unit) counts as none: a replica alone stays at exactly 1.0. Until a window
    has given ``SHARE_MIN_DROP`` units of drop the previous estimate stands (1.0 at
    first), so a new window starts at the last window's share.
    """

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.share = 1.0
        # (sent_at, seen, remaining, reset_epoch) of the current server window.
        self._samples: deque[tuple[float, int, int, float]] = deque()

    def add(self, sent_at: float, seen: int, remaining: int, reset_epoch: float) -> None:
        samples = self._samples
        if samples:
            last_at, _, last_remaining, last_reset = samples[-1]
            if sent_at <= last_at:
                # Overtaken by the answer to a later request (of this window or the
                # next): the time it covers is covered already.
                return
            if abs(reset_epoch - last_reset) > RESET_SAME_WINDOW_S or remaining > last_remaining:
                samples.clear()  # a new server window (or a reset we cannot compare)
        samples.append((sent_at, seen, remaining, reset_epoch))
        while len(samples) > 1 and samples[1][0] <= sent_at - self.horizon_s:
            samples.popleft()
        _, old_seen, old_remaining, _ = samples[0]
        drop = old_remaining - remaining
        if drop < SHARE_MIN_DROP:
            return
        own = seen - old_seen
        others = drop - own
        if others <= max(1.0, SHARE_ALONE_SLACK * drop):
            self.share = 1.0
        else:
            self.share = min(1.0, max(MIN_SHARE, own / drop))

    @property
    def pace_share(self) -> float:
        """The share planned with: ``share ** (1 - FAIRNESS)`` (1.0 when alone)."""
        return float(self.share ** (1.0 - FAIRNESS))


class RateBudget:
    """Pacing state of one account; all times are ``clock()`` (monotonic) seconds."""

    def __init__(
        self,
        requests_per_window: int,
        window_s: float,
        events_per_window: int | None = None,
        *,
        clock: Callable[[], float],
        burst: int = 10,
        event_burst: int = 500,
    ) -> None:
        if requests_per_window <= 0 or window_s <= 0:
            raise ValueError("requests_per_window and window_s must be positive")
        if burst < 1 or event_burst < 1:
            raise ValueError("burst and event_burst must be at least 1")
        self._clock = clock
        self.requests_per_window = requests_per_window
        self.window_s = window_s
        self.events_per_window = events_per_window or None
        self.burst = burst
        self.event_burst = event_burst
        self._req_interval = window_s / requests_per_window
        self._evt_interval = window_s / self.events_per_window if self.events_per_window else 0.0
        now = clock()
        self._tat_req = now  # theoretical arrival time of the next request
        self._tat_evt = now
        self._blocked_until = -math.inf
        # Server sync: a stretched interval valid until the server's reset.
        self._sync_req: tuple[float, float] | None = None  # (interval, until)
        self._sync_evt: tuple[float, float] | None = None
        # (left for new reservations, reservation counter then, reset_at, kind)
        self._observed: tuple[int, int, float, Kind] | None = None
        self._reserved_requests = 0
        self._reserved_events = 0
        # (reset_epoch, first answer carrying it) of the newest server window seen.
        self._window: tuple[float, float] | None = None
        # (send_at, events) of recent reservations, in reservation order.
        self._recent: deque[tuple[float, int]] = deque()
        horizon = min(
            SHARE_HORIZON_MAX_S, max(SHARE_HORIZON_MIN_S, window_s * SHARE_HORIZON_FRACTION)
        )
        self._shares: dict[Kind, ShareEstimator] = {
            "requests": ShareEstimator(horizon),
            "events": ShareEstimator(horizon),
        }

    # -- intervals -------------------------------------------------------------------

    def _interval(self, now: float, kind: Kind) -> float:
        nominal = self._req_interval if kind == "requests" else self._evt_interval
        sync = self._sync_req if kind == "requests" else self._sync_evt
        if sync is not None and now < sync[1]:
            return max(sync[0], nominal)
        # No server word on this window yet: our share of the configured budget.
        return nominal / self._shares[kind].pace_share

    def _tolerance(self, now: float, kind: Kind) -> float:
        """Burst tolerance in seconds: none before the server's first rate-limit headers
        (a process that just joined cannot know that other replicas left little of the
        window: its burst is what collided with theirs), none while the server asked us
        to slow down."""
        if self._observed is None:
            return 0.0
        if kind == "requests":
            if self._interval(now, kind) > self._req_interval:
                return 0.0
            return (self.burst - 1) * self._req_interval
        if self._interval(now, kind) > self._evt_interval:
            return 0.0
        return self.event_burst * self._evt_interval

    # -- public API ------------------------------------------------------------------

    def reserve(self, events: int = 1) -> float:
        """Reserve the next send slot for a request of ``events`` conversions.

        Returns the seconds to wait before sending (0.0: send now). Every attempt,
        retries included, reserves its own slot.
        """
        now = self._clock()
        start = max(now, self._blocked_until)
        send_at = max(start, self._tat_req - self._tolerance(now, "requests"))
        if self._evt_interval:
            send_at = max(send_at, self._tat_evt - self._tolerance(now, "events"))
        self._tat_req = max(self._tat_req, send_at) + self._interval(send_at, "requests")
        if self._evt_interval:
            self._tat_evt = max(self._tat_evt, send_at) + events * self._interval(send_at, "events")
        self._recent.append((send_at, events))
        self._reserved_requests += 1
        self._reserved_events += events
        self._prune(now)
        return send_at - now

    def next_slot_in(self) -> float:
        """Seconds until the next slot ``reserve`` would hand out (0.0: now); reserves nothing.

        Callers with work ready should reserve only once this is within a short lead:
        a slot reserved far ahead keeps the interval of the moment it was reserved,
        while one reserved just in time uses the latest server headers.
        """
        now = self._clock()
        at = max(now, self._blocked_until, self._tat_req - self._tolerance(now, "requests"))
        if self._evt_interval:
            at = max(at, self._tat_evt - self._tolerance(now, "events"))
        return at - now

    def blocked_for(self) -> float:
        """Seconds until a 429 block (or an exhausted server budget) ends; 0.0 if none."""
        return max(0.0, self._blocked_until - self._clock())

    def block_until(self, monotonic_t: float) -> None:
        """Pause all sends of the account until ``monotonic_t`` (on 429)."""
        self._blocked_until = max(self._blocked_until, monotonic_t)

    def observe(
        self,
        limit: int | None,
        remaining: int,
        reset_epoch: float,
        wall_now: float,
        *,
        sent_at: float | None = None,
        kind: Kind = "requests",
    ) -> None:
        """Sync with ``x-rate-limit-*`` headers of a response.

        ``sent_at`` is the monotonic time the observed request was sent: our
        reservations after it (and before the reset) are not yet in the server's
        ``remaining``. Without it only reservations still in the future are assumed
        uncounted. ``kind`` says whether the server counts requests (the default) or
        events.
        """
        del limit  # the interval comes from remaining/reset; nominal caps the rate
        now = self._clock()
        reset_in = reset_epoch - wall_now
        if reset_in <= 0:
            return  # stale: that window is over
        reset_at = self._window_end(reset_epoch, now, now + reset_in)
        self._prune(now)
        horizon = now if sent_at is None else sent_at
        unseen = 0  # ours after the observed one, counted in this window
        after = 0  # ours after the observed one, whichever window
        for at, events in reversed(self._recent):
            if at <= horizon:
                break
            units = 1 if kind == "requests" else events
            after += units
            if at < reset_at:
                unseen += units
        counter = self._reserved_requests if kind == "requests" else self._reserved_events
        share = self._shares[kind]
        share.add(horizon, counter - after, remaining, reset_epoch)
        left = remaining - unseen
        self._observed = (max(0, left), counter, reset_at, kind)
        if left < 0:
            # Even slots already handed out would overrun: hold everything to the reset.
            self.block_until(reset_at)
            return
        # Our part of what is left: our share of the server's remaining, minus our own
        # slots already handed out (others' queued requests come out of their shares).
        # Whole requests only: a fraction would round up to one more send each.
        allotted = min(left, math.floor(remaining * share.pace_share - unseen + 1e-9))
        if allotted <= 0:
            # What we reserved is our part; new slots start after the reset.
            # (The tolerance is added so that no burst slot lands before the reset.)
            floor = reset_at + self._tolerance(now, kind)
            if kind == "requests":
                self._tat_req = max(self._tat_req, floor)
            else:
                self._tat_evt = max(self._tat_evt, floor)
            return
        tat = self._tat_req if kind == "requests" else self._tat_evt
        span = reset_at - max(now, tat)
        if span <= 0:
            return
        sync = (span / allotted, reset_at)
        if kind == "requests":
            self._sync_req = sync
        else:
            self._sync_evt = sync

    def _window_end(self, reset_epoch: float, now: float, reset_at: float) -> float:
        """The window's end to plan with: ``reset_at`` or a tighter bound on the real end.

        The server counted the request answered at ``now`` in the window ending at
        ``reset_epoch``, so that window opened before the first such answer and ends at
        most ``window_s`` after it. That bound is used only within the rounding second
        before ``reset_at``: further out it would contradict the header (the server's
        window is not ``window_s`` long, or the clocks disagree), and the header stands.
        """
        window = self._window
        if window is None or reset_epoch > window[0] + RESET_SAME_WINDOW_S:
            self._window = window = (reset_epoch, now)
        elif reset_epoch < window[0] - RESET_SAME_WINDOW_S:
            return reset_at  # a late answer from an older window
        bound = window[1] + self.window_s
        if reset_at - RESET_ROUNDING_S <= bound < reset_at:
            return bound
        return reset_at

    def share(self, kind: Kind = "requests") -> float:
        """This replica's estimated share of the account's use (1.0 alone), for metrics."""
        return self._shares[kind].share

    def remaining_estimate(self) -> int:
        """For metrics: the server's last ``remaining`` minus what we reserved beyond it.

        Without a current server observation, the nominal ``requests_per_window``.
        """
        if self._observed is None:
            return self.requests_per_window
        left, counter, reset_at, kind = self._observed
        if self._clock() >= reset_at:
            return self.requests_per_window
        now_counter = self._reserved_requests if kind == "requests" else self._reserved_events
        return max(0, left - (now_counter - counter))

    def current_interval(self) -> float:
        """Seconds between request slots right now (nominal or stretched), for metrics."""
        return self._interval(self._clock(), "requests")

    def _prune(self, now: float) -> None:
        cutoff = now - _UNSEEN_HORIZON_S
        recent = self._recent
        while recent and recent[0][0] < cutoff:
            recent.popleft()
