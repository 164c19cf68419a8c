"""Batch delivery: send, check what X processed, isolate, dead-letter, finish.

Every batch ends in exactly one recorded outcome per event: accepted (200), dead-
lettered with its reason, or abandoned because its partition was revoked (the new
owner consumes it again). Until then it is retried with bounded waits:

- transient failures (5xx, 429, timeouts, dropped connections): backoff with full
  jitter, capped server hints, woken early when the account's API answers again;
- 401/403/404: the account's gate closes; the batch waits at the gate, and the gate
  picks one waiting batch as the probe (``consumer.delivery.gate``);
- 400/413/422: X rejected the batch whole; X's pointers (or bisection) find the bad
  events, those are dead-lettered in one write, the rest is sent again.

A sick account next to a healthy one (``consumer.delivery.parking``): a batch failing
for ``park_after_s``, or while its account crowds a full buffer, is set aside by the
stuck policy (parked, or dead-lettered as ``undeliverable``) and the account's gate
closes; while it is closed, the account's batches are set aside at once, but for the
one probe. With no healthy account, batches are held whatever the policy.

A 200 whose ``conversions_processed`` is below the number sent is not resent (X
de-duplicates by ``conversion_id``, and the count does not say which ones it dropped);
it is logged at warning level with the batch id, X's ``debug_id`` and both counts, and
the shortfall is counted in ``xconv_events_unprocessed_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import structlog

from consumer.delivery.batcher import Batch
from consumer.delivery.dlq import DeadLetter, KafkaMessage, record_size
from consumer.delivery.gate import GateMode, ProbeOutcome, Ticket
from consumer.delivery.lane import AccountLane
from consumer.delivery.parking import (
    PARK_HEADROOM_BYTES,
    Policy,
    judge_failure,
    next_note,
    original_headers,
    park_letter,
)
from consumer.delivery.responses import Accepted
from consumer.delivery.retry import Backoff
from consumer.delivery.split import plan_isolation
from consumer.delivery.watermark import Chunk
from consumer.errors import (
    AccountBlockedError,
    BatchRejectedError,
    RateLimitedError,
    RetryableError,
    ServerError,
    TransportError,
)
from consumer.observability.metrics import PARKED_TOO_LONG, TOO_LARGE, UNDELIVERABLE, Metrics

log = structlog.get_logger("xconv.engine")


class DeadLetterSinkLike(Protocol):
    """What batch delivery needs of the dead-letter sink."""

    async def write(self, entries: Sequence[tuple[KafkaMessage, DeadLetter]]) -> None: ...


class BatchDelivery:
    """Drives batches to an outcome; the engine spawns ``deliver`` under its supervisor."""

    def __init__(
        self,
        *,
        lanes: Mapping[str, AccountLane],
        sink: DeadLetterSinkLike,
        backoff: Backoff,
        metrics: Metrics,
        finish: Callable[[Sequence[Chunk]], None],
        is_stale: Callable[[Sequence[Chunk]], bool],
        abandon: Callable[[Sequence[Chunk]], None],
        dead_letter_when_blocked: bool = False,
        counts: Counter[str] | None = None,
        policy: Policy = Policy.HOLD,
        parking: DeadLetterSinkLike | None = None,
        park_after_s: float = 60.0,
        parked_max_age_s: float = 0.0,
        max_record_bytes: int = 1_000_000,
        crowding: Callable[[str], bool] = lambda _account: False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        parking_topic: str | None = None,
    ) -> None:
        self._lanes = lanes
        self._sink = sink
        self._backoff = backoff
        self._metrics = metrics
        self._finish = finish
        self._is_stale = is_stale
        self._abandon = abandon
        self._dead_letter_when_blocked = dead_letter_when_blocked
        self.counts: Counter[str] = counts if counts is not None else Counter()
        if policy is Policy.PARK and parking is None:
            raise ValueError("the park policy needs a parking sink")
        self.policy = policy
        self._parking = parking
        self._park_after_s = park_after_s
        self._parked_max_age_s = parked_max_age_s
        self._max_record_bytes = max_record_bytes
        self._crowding = crowding
        self._clock = clock
        self._wall = wall
        self._parking_topic = parking_topic

    async def deliver(self, batch: Batch) -> None:
        """Send ``batch`` until each of its events has an outcome."""
        lane = self._lanes[batch.key[0]]
        while True:
            if self._is_stale(batch.chunks):
                self._drop_stale(batch)
                return
            why = self.divert(lane, batch=batch)
            if why is not None:  # the gate is closed and another account is healthy
                await self._set_aside(lane, batch, why)
                return
            ticket = await lane.gate.admit()
            if self._is_stale(batch.chunks):  # the wait at a closed gate can be long
                if ticket.probe:
                    lane.gate.finish(ProbeOutcome.ABANDONED)
                self._drop_stale(batch)
                return
            batch.attempts += 1
            try:
                accepted = await lane.send(batch)
            except RetryableError as exc:
                self._probe_done(lane, ticket, ProbeOutcome.FAILED)
                if not isinstance(exc, RateLimitedError):  # a 429 is pacing, not sickness
                    batch.last_reason = retry_cause(exc)
                    lane.note_failure(batch.last_reason)
                    if batch.failing_since is None:
                        batch.failing_since = self._clock()
                # Judged beside the others as they were at the failure: after the wait,
                # only if that still holds and the account did not answer meanwhile (at
                # the end of an outage of every account, none is set aside).
                beside_healthy = self._other_healthy(lane)
                if await self._stuck(lane, batch, beside_healthy):
                    return
                failed_at = self._clock()
                await self._retry_later(lane, batch, exc)
                answered = lane.last_success_at is not None and lane.last_success_at > failed_at
                if not answered and await self._stuck(lane, batch, beside_healthy):
                    return
                continue
            except BatchRejectedError as exc:
                # The API authenticated the request and judged its content.
                self._probe_done(lane, ticket, ProbeOutcome.ACCEPTED)
                await self._isolate(lane, batch, exc)
                return
            except AccountBlockedError as exc:
                batch.last_reason = f"{exc.status} {exc.code}"
                lane.note_failure(batch.last_reason)
                if batch.failing_since is None:
                    batch.failing_since = self._clock()
                if await self._blocked(lane, batch, ticket, exc):
                    return
                continue
            except BaseException:
                self._probe_done(lane, ticket, ProbeOutcome.ABANDONED)
                raise
            self._probe_done(lane, ticket, ProbeOutcome.ACCEPTED)
            self._complete(lane, batch, accepted)
            return

    # -- the stuck policy ------------------------------------------------------------

    def _other_healthy(self, lane: AccountLane) -> bool:
        return any(other.healthy for other in self._lanes.values() if other is not lane)

    def _is_parked(self, batch: Batch) -> bool:
        """Some of its events came from the parking topic (they were parked before)."""
        if self._parking_topic is None or self.policy is not Policy.PARK:
            return False
        topic = self._parking_topic
        return any(src.topic() == topic for src in batch.sources)

    def divert(
        self, lane: AccountLane, *, arriving: bool = False, batch: Batch | None = None
    ) -> str | None:
        """Why the account's events are to be set aside now, or None to send them.

        While the gate is closed (blocked, sick, or probing) and another account is
        healthy, but never the one event or batch that the gate's probe is due for.
        Events ``arriving`` from Kafka are set aside too while the account is failing and
        over its buffer share (its quota). Whether ``batch`` holds parked events is asked
        only at a closed gate (it looks at every event).
        """
        if self.policy is Policy.HOLD:
            return None
        if lane.gate.mode is GateMode.OPEN:
            if (
                arriving
                and lane.failing
                and self._crowding(lane.account_id)
                and self._other_healthy(lane)
            ):
                return "failing and over its buffer share"
            return None
        if lane.gate.state.probe_due():
            return None
        # Parked events go back to the parking topic even when nobody else is healthy:
        # they are one probe's worth, and holding them would hold their partition.
        parked = batch is not None and self._is_parked(batch)
        if not parked and not self._other_healthy(lane):
            return None
        return f"account {lane.gate.mode.value}: {lane.gate.state.reason or 'unknown'}"

    async def _stuck(self, lane: AccountLane, batch: Batch, beside_healthy: bool) -> bool:
        """Set ``batch`` aside when the stuck policy says so; True when it did."""
        since = batch.failing_since
        verdict = judge_failure(
            self.policy,
            failing_for=None if since is None else self._clock() - since,
            park_after_s=self._park_after_s,
            crowding=self._crowding(lane.account_id),
            other_healthy=beside_healthy and self._other_healthy(lane),
            parked_at_closed_gate=lane.gate.mode is not GateMode.OPEN and self._is_parked(batch),
        )
        if not verdict.set_aside:
            return False
        reason = f"{verdict.why}: {batch.last_reason or 'failing'}"
        if lane.gate.block(reason):
            log.error(
                "account_sick",
                account=lane.account_id,
                reason=reason,
                policy=self.policy.value,
                next_probe_in_s=round(lane.gate.state.seconds_to_probe() or 0.0, 1),
                action="its events are set aside until a probe is accepted",
            )
        await self._set_aside(lane, batch, verdict.why)
        return True

    async def _set_aside(self, lane: AccountLane, batch: Batch, why: str) -> None:
        await self.set_aside(
            lane,
            batch.sources,
            batch.chunks,
            attempts=batch.attempts,
            failing_since=batch.failing_since,
            reason=batch.last_reason or (lane.gate.state.reason or why),
            why=why,
            batch_id=batch.id,
        )

    async def set_aside(
        self,
        lane: AccountLane,
        sources: Sequence[Any],
        chunks: Sequence[Chunk],
        *,
        attempts: int,
        failing_since: float | None,
        reason: str,
        why: str,
        batch_id: str | None = None,
    ) -> None:
        """Park the events (policy park) or dead-letter them (``undeliverable``).

        They finish once Kafka acknowledged their records; a parked event past
        ``parked_max_age_s``, or too large to carry the park headers, is dead-lettered.
        """
        aid = lane.account_id
        if self.policy is Policy.DEAD_LETTER:
            letter = DeadLetter(UNDELIVERABLE, f"account {aid}: {why}: {reason}", attempts=attempts)
            pairs = zip(sources, chunks, strict=True)
            await self.dead_letter([(src, chunk, letter) for src, chunk in pairs])
            return
        assert self._parking is not None
        now = self._wall()
        since = now if failing_since is None else now - (self._clock() - failing_since)
        parked: list[tuple[Any, Chunk, DeadLetter]] = []
        letters: list[tuple[Any, Chunk, DeadLetter]] = []
        for src, chunk in zip(sources, chunks, strict=True):
            note = next_note(
                src, account=aid, attempts=attempts, failing_since=since, reason=reason, now=now
            )
            size = record_size(src.key(), src.value(), original_headers(src))
            if self._parked_max_age_s and now - note.first_failure > self._parked_max_age_s:
                message = f"parked {note.parks - 1} times since its first failure: {reason}"
                too_old = DeadLetter(PARKED_TOO_LONG, message, attempts=attempts)
                letters.append((src, chunk, too_old))
            elif size + PARK_HEADROOM_BYTES > self._max_record_bytes:
                message = f"a record of {size} bytes leaves no room for the park headers"
                letters.append((src, chunk, DeadLetter(TOO_LARGE, message, attempts=attempts)))
            else:
                parked.append((src, chunk, park_letter(note)))
        if letters:
            await self.dead_letter(letters)
        if not parked:
            return
        await self._parking.write([(cast(KafkaMessage, src), letter) for src, _, letter in parked])
        self._finish([chunk for _, chunk, _ in parked])
        self._metrics.events_parked_total.labels(account=aid).inc(len(parked))
        self.counts["parked"] += len(parked)
        log.warning(
            "batch_parked",
            batch_id=batch_id,
            account=aid,
            events=len(parked),
            why=why,
            reason=reason,
            attempts=attempts,
        )

    # -- outcomes --------------------------------------------------------------------

    def _probe_done(
        self, lane: AccountLane, ticket: Ticket, outcome: ProbeOutcome, reason: str | None = None
    ) -> None:
        if not ticket.probe:
            return
        lane.gate.finish(outcome, reason)
        if outcome is ProbeOutcome.ABANDONED:
            return
        self._metrics.account_probes_total.labels(
            account=lane.account_id, outcome=outcome.value
        ).inc()
        if outcome is ProbeOutcome.ACCEPTED:
            log.warning("account_unblocked", account=lane.account_id)
        else:
            log.warning(
                "account_probe_failed",
                account=lane.account_id,
                outcome=outcome.value,
                reason=lane.gate.state.reason,
                next_probe_in_s=round(lane.gate.state.seconds_to_probe() or 0.0, 1),
            )

    async def _blocked(
        self, lane: AccountLane, batch: Batch, ticket: Ticket, exc: AccountBlockedError
    ) -> bool:
        """401/403/404: True when the batch is finished (dead-letter policy)."""
        reason = f"{exc.status} {exc.code}"
        if self._dead_letter_when_blocked:
            self._probe_done(lane, ticket, ProbeOutcome.ACCEPTED)
            letter = DeadLetter("account_blocked", exc.message, attempts=batch.attempts)
            await self.dead_letter(
                [
                    (src, chunk, letter)
                    for src, chunk in zip(batch.sources, batch.chunks, strict=True)
                ]
            )
            return True
        if ticket.probe:
            self._probe_done(lane, ticket, ProbeOutcome.BLOCKED, reason)
        elif lane.gate.block(reason):
            log.error(
                "account_blocked",
                account=lane.account_id,
                status=exc.status,
                code=exc.code,
                message=exc.message,
                next_probe_in_s=round(lane.gate.state.seconds_to_probe() or 0.0, 1),
                action="holding offsets; fix the credentials, access, pixel or event tag",
            )
        return False

    async def _retry_later(self, lane: AccountLane, batch: Batch, exc: RetryableError) -> None:
        delay = self._backoff.delay_for(exc, batch.attempts)
        cause = retry_cause(exc)
        self._metrics.retries_total.labels(account=lane.account_id, cause=cause).inc()
        log.info(
            "batch_retry",
            batch_id=batch.id,
            account=lane.account_id,
            cause=cause,
            attempt=batch.attempts,
            retry_in_s=round(delay, 3),
            events=len(batch),
        )
        await lane.backoff(delay)

    def _complete(self, lane: AccountLane, batch: Batch, accepted: Accepted) -> None:
        sent = len(batch)
        processed = accepted.conversions_processed
        if processed is not None and processed != sent:
            if processed < sent:
                self._metrics.events_unprocessed_total.labels(account=lane.account_id).inc(
                    sent - max(0, processed)
                )
            log.warning(
                "batch_partially_processed" if processed < sent else "batch_processed_count_odd",
                batch_id=batch.id,
                debug_id=accepted.debug_id,
                account=lane.account_id,
                sent=sent,
                processed=processed,
                policy="not resent: X de-duplicates by conversion_id",
            )
        self._finish(batch.chunks)
        lane.note_success()
        self._metrics.events_accepted_total.labels(account=lane.account_id).inc(sent)
        self.counts["accepted"] += sent
        log.debug(
            "batch_accepted",
            batch_id=batch.id,
            debug_id=accepted.debug_id,
            account=lane.account_id,
            events=sent,
            attempts=batch.attempts,
        )

    def _drop_stale(self, batch: Batch) -> None:
        self._abandon(batch.chunks)
        log.info(
            "batch_abandoned",
            batch_id=batch.id,
            account=batch.key[0],
            events=len(batch),
            why="its partitions were revoked; their new owner delivers them",
        )

    async def _isolate(self, lane: AccountLane, batch: Batch, exc: BatchRejectedError) -> None:
        """All-or-nothing rejection: dead-letter the bad events at once, resend the rest."""
        plan = plan_isolation(len(batch), exc.errors)
        log.info(
            "batch_rejected",
            batch_id=batch.id,
            debug_id=exc.debug_id,
            account=lane.account_id,
            status=exc.status,
            events=len(batch),
            bad_known=len(plan.bad),
            bisecting=plan.bisecting,
        )
        letters: list[tuple[Any, Chunk, DeadLetter]] = []
        for index, errors in plan.bad.items():
            if exc.status == 413:
                letter = DeadLetter(
                    reason="too_large",
                    message="X answered 413 (request too large) for this event alone",
                    attempts=batch.attempts,
                    debug_id=exc.debug_id,
                    errors=list(errors),
                )
            else:
                message = "; ".join(str(e.get("message", "")) for e in errors)[:500]
                letter = DeadLetter(
                    reason="api_rejected",
                    message=message or str(exc),
                    field=_first_parameter(errors),
                    attempts=batch.attempts,
                    debug_id=exc.debug_id,
                    errors=list(errors),
                )
            letters.append((batch.sources[index], batch.chunks[index], letter))
        if letters:
            await self.dead_letter(letters)
        subs = [batch.subset(group) for group in plan.retry_groups if group]
        await asyncio.gather(*(self.deliver(sub) for sub in subs))

    async def dead_letter(self, letters: Sequence[tuple[Any, Chunk, DeadLetter]]) -> None:
        """Write the records in one go; the events finish once Kafka acknowledged all.

        Each entry: the Kafka message, the chunk it was taken in, why it is dead.
        """
        await self._sink.write([(cast(KafkaMessage, src), letter) for src, _, letter in letters])
        self._finish([chunk for _, chunk, _ in letters])
        reasons = Counter(letter.reason for _, _, letter in letters)
        for reason, n in reasons.items():
            self._metrics.events_dead_lettered_total.labels(reason=reason).inc(n)
        self.counts["dead_lettered"] += len(letters)


def retry_cause(exc: RetryableError) -> str:
    """The ``cause`` label of ``xconv_retries_total``."""
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, ServerError):
        return f"http_{exc.status}"
    if isinstance(exc, TransportError):
        return "transport"
    return "other"


def _first_parameter(errors: Sequence[Any]) -> str | None:
    for e in errors:
        parameter = e.get("parameter") if isinstance(e, dict) else None
        if parameter:
            return str(parameter)
    return None
