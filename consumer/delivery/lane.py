"""One ad account's lane: its gate, rate budget, in-flight limit and HTTP client.

Everything X says about an account (rate-limit headers, 429, retry hints, 401s) is
read here and nowhere else, so one account's trouble stays in its own lane. ``send``
makes exactly one request for a batch, within the account's pacing and slots, and
returns X's ``Accepted`` or raises an error of ``consumer.errors``; the retry and
isolation decisions belong to batch delivery (``consumer.delivery.deliver``).

Server hints are capped at the account's ``window_s``: no retry-after or reset is
believed beyond one rate window, each cap is counted and logged once per account and
hint, so a hostile or broken header can slow an account down but never freeze it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from consumer.delivery.batcher import Batch
from consumer.delivery.client import Response
from consumer.delivery.concurrency import AdaptiveLimit, InFlightLimiter
from consumer.delivery.gate import Gate, GateMode, GateState
from consumer.delivery.ratebudget import RateBudget
from consumer.delivery.responses import Accepted, RateLimitHeaders, parse_response
from consumer.delivery.retry import cap_hint
from consumer.errors import RateLimitedError, RetryableError, ServerError, TransportError
from consumer.observability.health import HealthState
from consumer.observability.metrics import HINT_RATE_LIMIT_RESET, HINT_RETRY_AFTER, Metrics
from consumer.settings import AccountSettings

log = structlog.get_logger("xconv.engine")


class RequestSender(Protocol):
    """What a lane needs of the HTTP client (``XAdsClient``; a fake in unit tests)."""

    async def send(self, pixel_id: str, body: bytes) -> Response: ...


# X sends the reset in whole epoch seconds and clocks drift: a reset a little beyond
# one window is normal, not a hint to distrust.
RESET_SLACK_S = 5.0

# A request reserves its slot at most this long before the slot: a slot reserved far
# ahead keeps the pace of the moment it was taken (with max_in_flight tasks queued at
# a replica's share that was seconds of stale pace), one taken just in time follows the
# latest headers.
RESERVE_LEAD_S = 0.05


class AccountLane:
    """Per-account delivery state; one instance per configured account."""

    def __init__(
        self,
        settings: AccountSettings,
        client: RequestSender,
        *,
        metrics: Metrics,
        health: HealthState,
        global_limiter: InFlightLimiter,
        gate_state: GateState,
        clock: Callable[[], float],
        wall: Callable[[], float],
        adaptive: AdaptiveLimit | None = None,
    ) -> None:
        self.settings = settings
        self.account_id = settings.account_id
        self.client = client
        self._metrics = metrics
        self._health = health
        self._global = global_limiter
        self._clock = clock
        self._wall = wall
        self.budget = RateBudget(
            requests_per_window=settings.requests_per_window,
            window_s=settings.window_s,
            events_per_window=settings.events_per_window or None,
            clock=clock,
        )
        self.limiter = InFlightLimiter(settings.max_in_flight)
        self.adaptive = adaptive
        self.gate = Gate(gate_state, on_change=self._gate_changed)
        self._capped_logged: set[str] = set()
        # Replaced on every accepted request: retries sleeping in backoff wake up as
        # soon as the API answers again, so a backlog drains at once after an outage.
        self._progress = asyncio.Event()
        # Last accepted request and last failure (monotonic): is the account healthy?
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        # The last failure's cause ("http_500", "401 UNAUTHORIZED_ACCESS"): the reason of
        # events set aside on arrival while the gate is still open.
        self.last_failure_reason = ""
        metrics.account_blocked.labels(account=self.account_id).set(0)
        metrics.rate_budget_share.labels(account=self.account_id).set(1.0)

    # -- waiting ---------------------------------------------------------------------

    def signal_progress(self) -> None:
        """Wake every retry sleeping in ``backoff`` (it looks at its batch again)."""
        self._progress.set()
        self._progress = asyncio.Event()

    def note_success(self) -> None:
        self.last_success_at = self._clock()
        self.signal_progress()

    def note_failure(self, reason: str = "") -> None:
        self.last_failure_at = self._clock()
        if reason:
            self.last_failure_reason = reason

    @property
    def healthy(self) -> bool:
        """Open, and its last outcome was an accepted request (so it has work that flows)."""
        if self.gate.mode is not GateMode.OPEN or self.last_success_at is None:
            return False
        return self.last_failure_at is None or self.last_success_at >= self.last_failure_at

    @property
    def failing(self) -> bool:
        """Closed, or its last outcome was a failure."""
        if self.gate.mode is not GateMode.OPEN:
            return True
        if self.last_failure_at is None:
            return False
        return self.last_success_at is None or self.last_failure_at > self.last_success_at

    async def backoff(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if another request of the account succeeds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), delay)

    # -- one request -----------------------------------------------------------------

    async def send(self, batch: Batch) -> Accepted:
        """One request within the account's budget and slots."""
        aid = self.account_id
        metrics = self._metrics
        async with self.limiter:
            while (ahead := self.budget.next_slot_in()) > RESERVE_LEAD_S:  # noqa: ASYNC110
                await asyncio.sleep(ahead - RESERVE_LEAD_S / 2)
            delay = self.budget.reserve(len(batch))
            if delay > 0:
                await asyncio.sleep(delay)
            # A 429 or an exhausted server budget may have arrived while we waited;
            # block_until is capped at the window, so this loop is bounded.
            while (blocked := self.budget.blocked_for()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(blocked)
            body = batch.body()
            async with self._global:
                in_flight = metrics.requests_in_flight.labels(account=aid)
                in_flight.inc()
                start = self._clock()
                try:
                    response = await self.client.send(batch.key[1], body)
                except TransportError:
                    metrics.requests_total.labels(account=aid, status="transport_error").inc()
                    self._adapt(ok=False)
                    raise
                finally:
                    in_flight.dec()
                elapsed = self._clock() - start
        metrics.request_duration_seconds.labels(account=aid).observe(elapsed)
        metrics.request_body_bytes.observe(len(body))
        metrics.requests_total.labels(account=aid, status=str(response.status)).inc()
        metrics.events_sent_total.labels(account=aid).inc(len(batch))
        wall_now = self._wall()
        limits = RateLimitHeaders.parse(response.headers)
        if limits is not None:
            reset_in, capped = cap_hint(
                limits.reset_epoch - wall_now,
                self.settings.window_s + min(RESET_SLACK_S, 0.1 * self.settings.window_s),
            )
            if capped:
                self._hint_capped(HINT_RATE_LIMIT_RESET, limits.reset_epoch - wall_now)
            if reset_in is not None:
                self.budget.observe(
                    limits.limit, limits.remaining, wall_now + reset_in, wall_now, sent_at=start
                )
        metrics.rate_budget_remaining.labels(account=aid).set(self.budget.remaining_estimate())
        metrics.rate_budget_share.labels(account=aid).set(self.budget.share())
        try:
            accepted = parse_response(response.status, response.headers, response.body, wall_now)
        except RateLimitedError as exc:
            metrics.rate_limited_total.labels(account=aid).inc()
            self._cap_retry_after(exc)
            self.budget.block_until(self._clock() + (exc.retry_after or 1.0))
            self._adapt(ok=False)
            raise
        except ServerError as exc:
            self._cap_retry_after(exc)
            self._adapt(ok=False)
            raise
        except RetryableError as exc:
            self._cap_retry_after(exc)
            raise
        self._adapt(ok=True, latency=elapsed)
        return accepted

    def _cap_retry_after(self, exc: RetryableError) -> None:
        original = exc.retry_after
        exc.retry_after, capped = cap_hint(original, self.settings.window_s)
        if capped:
            self._hint_capped(HINT_RETRY_AFTER, original or 0.0)

    def _hint_capped(self, hint: str, seconds: float) -> None:
        self._metrics.server_hints_capped_total.labels(account=self.account_id, hint=hint).inc()
        if hint not in self._capped_logged:
            self._capped_logged.add(hint)
            log.warning(
                "server_hint_capped",
                account=self.account_id,
                hint=hint,
                seconds=round(seconds, 1),
                capped_to_s=self.settings.window_s,
                note="logged once per account and hint; counted in xconv_server_hints_capped_total",
            )

    def _adapt(self, *, ok: bool, latency: float = 0.0) -> None:
        if self.adaptive is None:
            return
        limit = self.adaptive.on_success(latency) if ok else self.adaptive.on_overload()
        self.limiter.set_limit(limit)

    # -- gate reporting --------------------------------------------------------------

    def _gate_changed(self, state: GateState) -> None:
        aid = self.account_id
        if state.mode is GateMode.OPEN:
            self._metrics.account_blocked.labels(account=aid).set(0)
            self._health.set_account_blocked(aid, None)
            return
        self._metrics.account_blocked.labels(account=aid).set(1)
        self._health.set_account_blocked(aid, state.reason or "blocked")
