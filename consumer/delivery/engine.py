"""The delivery engine: Kafka in, X Web Conversions out, offsets committed behind.

One consume loop fetches messages in batches, transforms them and fills
per-(account, pixel) micro-batches; every full or lingered batch becomes a delivery
task that waits for its account's rate budget and in-flight slots, sends, retries
transient failures forever, isolates the bad events of a rejected batch, and marks
its offsets done. A commit loop commits each partition's contiguous watermark.

Invariant: an offset is committed only when every event below it was accepted (200)
or its dead-letter record was acknowledged. Everything else (rebalances, shutdown,
crashes) at worst redelivers, and X de-duplicates redeliveries by ``conversion_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from consumer.delivery.auth import Auth, OAuth1Auth, PixelTokenAuth
from consumer.delivery.backpressure import Backpressure
from consumer.delivery.batcher import Batch, Batcher, BatchItem
from consumer.delivery.client import XAdsClient, make_session
from consumer.delivery.concurrency import AdaptiveLimit, Limiter
from consumer.delivery.dlq import DeadLetter, DeadLetterSink, HeaderProducer
from consumer.delivery.ratebudget import RateBudget
from consumer.delivery.responses import RateLimitHeaders, parse_response
from consumer.delivery.retry import Backoff
from consumer.delivery.split import plan_isolation
from consumer.delivery.watermark import OffsetTracker
from consumer.errors import (
    AccountBlockedError,
    BatchRejectedError,
    ConfigError,
    RateLimitedError,
    RetryableError,
    ServerError,
    TransportError,
)
from consumer.observability.health import CONSUME_LOOP, HealthState
from consumer.observability.metrics import Metrics
from consumer.observability.redact import redact_text
from consumer.settings import AccountSettings, Settings
from consumer.transform import Conversion, Transformer

log = structlog.get_logger("xconv.engine")
# librdkafka's own log lines go through the same processors (and redaction) as ours.
KAFKA_LOGGER = logging.getLogger("confluent_kafka")

TP = tuple[str, int]
BatchKey = tuple[str, str]

# How long a blocked account (401/403/404) waits before probing the API again.
BLOCKED_PROBE_INITIAL_S = 15.0
BLOCKED_PROBE_MAX_S = 300.0


@dataclass
class AccountState:
    """Everything the engine keeps per ad account."""

    settings: AccountSettings
    client: XAdsClient
    budget: RateBudget
    limiter: Limiter
    adaptive: AdaptiveLimit | None
    unblocked: asyncio.Event = field(default_factory=asyncio.Event)
    blocked_reason: str | None = None
    # Set (and replaced) on every accepted request: retries sleeping in backoff wake up
    # as soon as the API answers again, so a backlog drains at once after an outage.
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def signal_progress(self) -> None:
        self.progress.set()
        self.progress = asyncio.Event()

    async def backoff(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if another request of the account succeeds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.progress.wait(), delay)

    @property
    def account_id(self) -> str:
        return self.settings.account_id


@dataclass(frozen=True)
class DrainReport:
    """What shutdown achieved: ``clean`` means nothing was left in flight."""

    clean: bool
    left_in_flight: int


def account_auth(account: AccountSettings) -> Auth:
    """The account's request signer; the settings guarantee its secrets are present."""
    if account.auth == "pixel_token" and account.pixel_token is not None:
        return PixelTokenAuth(account.pixel_token.get_secret_value())
    parts = (
        account.consumer_key,
        account.consumer_secret,
        account.access_token,
        account.access_token_secret,
    )
    values = [p.get_secret_value() for p in parts if p is not None]
    if len(values) != len(parts):
        raise ConfigError(f"accounts.{account.account_id}", "incomplete OAuth 1.0a credentials")
    return OAuth1Auth(*values)


def consumer_config(settings: Settings, group_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = settings.kafka.client_config()
    conf.update(
        {
            "group.id": group_id or settings.kafka.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka.session_timeout_ms,
            "max.poll.interval.ms": settings.kafka.max_poll_interval_ms,
            "enable.partition.eof": False,
            # librdkafka's prefetch queue counts against memory too (default 64 MB).
            "queued.max.messages.kbytes": 16384,
            "logger": KAFKA_LOGGER,
        }
    )
    conf.update(settings.kafka.extra)
    return conf


def producer_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = settings.kafka.client_config()
    conf.update({"acks": "all", "enable.idempotence": True, "linger.ms": 5, "logger": KAFKA_LOGGER})
    conf.update(settings.kafka.producer_extra)
    return conf


class Engine:
    """Runs until ``request_stop()``; then drains within the configured bound."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        health: HealthState,
        transformer: Transformer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        group_id: str | None = None,
        stop_at_end_offsets: dict[TP, int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.transformer = transformer or Transformer(settings.transform, settings.routing)
        self._clock = clock
        self._wall = wall
        self._group_id = group_id
        self._rng = rng or random.Random()
        self._stop_at = stop_at_end_offsets
        d = settings.delivery
        self._tracker = OffsetTracker()
        self._batcher = Batcher(
            max_events=settings.batching.max_events,
            max_bytes=settings.batching.max_request_bytes,
            linger_s=settings.batching.linger_ms / 1000.0,
            clock=clock,
        )
        self._backpressure = Backpressure.from_ratio(d.max_buffered_events, d.resume_ratio)
        self._backoff = Backoff(base_s=d.retry_base_s, cap_s=d.retry_cap_s, rng=self._rng)
        self._global_limiter = Limiter(d.max_in_flight)
        self._accounts: dict[str, AccountState] = {}
        self._owned: set[TP] = set()
        self._paused: set[TP] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._closing = False
        self._consumer: AIOConsumer | None = None
        self._producer: HeaderProducer | None = None
        self._dlq: DeadLetterSink | None = None
        self._session: aiohttp.ClientSession | None = None
        self.counts: Counter[str] = Counter()
        self._dropped_seen: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop fetching; ``run`` then drains, commits and returns."""
        self._stop.set()

    async def run(self) -> DrainReport:
        s = self.settings
        self._session = make_session(
            connect_timeout_s=s.api.connect_timeout_s,
            total_timeout_s=s.api.request_timeout_s,
            limit=s.delivery.max_in_flight,
        )
        for account in s.accounts:
            self._accounts[account.account_id] = self._account_state(account)
        dlq_config = producer_config(s)
        self._producer = HeaderProducer(dlq_config, metrics=self.metrics)
        self._dlq = DeadLetterSink(
            self._producer,
            s.kafka.dead_letter_topic,
            backoff=self._backoff,
            metrics=self.metrics,
            max_record_bytes=int(dlq_config.get("message.max.bytes", 1_000_000)),
            unknown_topic_grace_s=s.kafka.unknown_topic_grace_s,
            clock=self._clock,
            redact=redact_text,
        )
        # Two or more workers: rebalance callbacks re-enter the consumer (commit).
        self._consumer = AIOConsumer(consumer_config(s, self._group_id), max_workers=4)
        await self._consumer.subscribe(
            list(s.kafka.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.health.register(CONSUME_LOOP)
        self.health.set_started()
        self.health.set_waiting_for_assignment(True)
        log.info(
            "engine_started",
            topics=list(s.kafka.topics),
            group_id=self._group_id or s.kafka.group_id,
            accounts=sorted(self._accounts),
        )
        committer = asyncio.create_task(self._commit_loop(), name="xconv-commit")
        try:
            await self._consume_loop()
        finally:
            report = await self._drain()
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self._close()
        return report

    def _account_state(self, account: AccountSettings) -> AccountState:
        assert self._session is not None
        s = self.settings
        state = AccountState(
            settings=account,
            client=XAdsClient(self._session, s.api.base_url, s.api.version, account_auth(account)),
            budget=RateBudget(
                requests_per_window=account.requests_per_window,
                window_s=account.window_s,
                events_per_window=account.events_per_window or None,
                clock=self._clock,
            ),
            limiter=Limiter(account.max_in_flight),
            adaptive=(
                AdaptiveLimit(
                    initial=max(1, account.max_in_flight // 2),
                    minimum=1,
                    maximum=account.max_in_flight,
                )
                if s.delivery.adaptive_concurrency
                else None
            ),
        )
        state.unblocked.set()
        self.metrics.account_blocked.labels(account=account.account_id).set(0)
        return state

    async def _drain(self) -> DrainReport:
        """Flush partial batches, wait for in-flight work (bounded), commit."""
        self._closing = True
        self.health.set_draining()
        for batch in self._batcher.drain():
            self._dispatch(batch)
        timeout = self.settings.delivery.drain_timeout_s
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        left = self._tracker.total_outstanding
        await self._commit()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        report = DrainReport(clean=not pending and left == 0, left_in_flight=left)
        log.info("engine_drained", clean=report.clean, left_in_flight=left)
        return report

    async def _close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.flush(10)
            with contextlib.suppress(Exception):
                await self._producer.close()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.close()
        if self._session is not None:
            await self._session.close()

    # -- consuming -------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._consumer is not None
        size = self.settings.kafka.fetch_batch_size
        while not self._stop.is_set():
            deadline = self._batcher.next_deadline()
            timeout = 0.2 if deadline is None else min(0.2, max(0.0, deadline - self._clock()))
            # Never fetch more than the buffer has room for: one big fetch would otherwise
            # overshoot max_buffered_events before back-pressure gets a chance to pause.
            room = self._backpressure.high_water - self._backpressure.held
            messages = await self._consumer.consume(
                num_messages=max(1, min(size, room)), timeout=timeout
            )
            self.health.beat(CONSUME_LOOP)
            if messages:
                self._ingest(messages)
            for batch in self._batcher.due(self._clock()):
                self._dispatch(batch)
            await self._apply_backpressure()
            if self._stop_at is not None and self._reached_end():
                log.info("reached_end_offsets")
                self._stop.set()

    def _ingest(self, messages: Sequence[Any]) -> None:
        """Hot path: track, transform, batch. No awaits, no per-event metrics calls."""
        tracker, transform, batcher = self._tracker, self.transformer.transform, self._batcher
        accounts, stop_at = self._accounts, self._stop_at
        taken = 0
        rejected: Counter[str] = Counter()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka_fetch_error", code=err.name(), fatal=err.fatal())
                continue
            tp = (msg.topic(), msg.partition())
            epoch = tracker.epoch(tp)
            if epoch is None:
                continue  # partition revoked since the fetch: its new owner reads it
            offset = msg.offset()
            if stop_at is not None and offset >= stop_at.get(tp, 0):
                continue  # replay: past the snapshot of end offsets
            try:
                tracker.track(tp, offset)
            except ValueError:
                continue  # already taken (a re-fetch after pause/seek): never twice
            taken += 1
            result = transform(msg.value() or b"")
            if isinstance(result, Conversion):
                route = result.route
                if route.account_id not in accounts:
                    rejected["unknown_account"] += 1
                    self._spawn(
                        self._dead_letter(
                            [(msg, tp, offset, epoch)],
                            DeadLetter(
                                reason="unknown_account",
                                message="routed to an account that has no credentials configured",
                            ),
                        )
                    )
                    continue
                item = BatchItem(
                    topic=tp[0],
                    partition=tp[1],
                    offset=offset,
                    epoch=epoch,
                    payload=result.payload,
                    conversion_id=result.conversion_id,
                    source=msg,
                )
                full = batcher.add((route.account_id, route.pixel_id), item)
                if full is not None:
                    self._dispatch(full)
            else:
                rejected[result.reason] += 1
                self._spawn(
                    self._dead_letter(
                        [(msg, tp, offset, epoch)],
                        DeadLetter(
                            reason=result.reason,
                            message=result.message,
                            field=result.field,
                        ),
                    )
                )
        self._backpressure.add(taken)
        self.metrics.events_consumed_total.labels(topic=messages[0].topic() or "").inc(
            len(messages)
        )
        self.metrics.events_transformed_total.inc(taken - sum(rejected.values()))
        for reason, n in rejected.items():
            self.metrics.events_rejected_total.labels(reason=reason).inc(n)
        self.metrics.events_in_flight.set(self._backpressure.held)
        self.counts["consumed"] += taken

    async def _apply_backpressure(self) -> None:
        assert self._consumer is not None
        bp = self._backpressure
        if not self._paused and self._owned and bp.should_pause():
            to_pause = sorted(self._owned)
            await self._consumer.pause([TopicPartition(t, p) for t, p in to_pause])
            self._paused.update(to_pause)
            log.info("partitions_paused", count=len(to_pause), held_events=bp.held)
        elif self._paused and bp.should_resume():
            to_resume = sorted(self._paused & self._owned)
            if to_resume:
                await self._consumer.resume([TopicPartition(t, p) for t, p in to_resume])
            self._paused.clear()
            log.info("partitions_resumed", count=len(to_resume), held_events=bp.held)
        self.metrics.partitions_paused.set(len(self._paused))

    def _reached_end(self) -> bool:
        assert self._stop_at is not None
        return all(
            self._tracker.watermark(tp) is not None
            and (self._tracker.watermark(tp) or 0) >= end
            and self._tracker.outstanding(tp) == 0
            for tp, end in self._stop_at.items()
            if end > 0 and tp in self._owned
        ) and self._owned >= {tp for tp, end in self._stop_at.items() if end > 0}

    # -- rebalancing -----------------------------------------------------------------

    async def _on_assign(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._tracker.assign(tp)
            self._owned.add(tp)
        # Paused state does not survive a move: a new partition joins the pause.
        if self._paused and tps:
            await consumer.pause([TopicPartition(t, p) for t, p in tps])
            self._paused.update(tps)
        self.health.set_assigned(bool(self._owned))
        self.health.set_waiting_for_assignment(not self._owned)
        log.info("partitions_assigned", partitions=[f"{t}[{p}]" for t, p in tps])

    async def _on_revoke(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        revoked = set(tps)
        # Send what is buffered now, then wait (bounded) for these partitions' batches.
        for batch in self._batcher.drain():
            self._dispatch(batch)
        timeout = 0.0 if self._closing else self.settings.delivery.revoke_timeout_s
        deadline = self._clock() + timeout
        # A bounded poll of pure state (no event to wait on across many batches).
        while self._clock() < deadline and any(  # noqa: ASYNC110
            self._tracker.outstanding(tp) for tp in revoked
        ):
            await asyncio.sleep(0.05)
        await self._commit(only=revoked)
        self._forget(tps)
        log.info("partitions_revoked", partitions=[f"{t}[{p}]" for t, p in tps])

    async def _on_lost(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._forget(tps)  # another member owns them now: commit nothing
        log.warning("partitions_lost", partitions=[f"{t}[{p}]" for t, p in tps])

    def _forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._tracker.revoke(tp)
            self._owned.discard(tp)
            self._paused.discard(tp)
            self.metrics.remove_partition(*tp)
        self.health.set_assigned(bool(self._owned))
        self.health.set_waiting_for_assignment(not self._owned)

    # -- committing ------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = self.settings.delivery.commit_interval_s
        while True:
            await asyncio.sleep(interval)
            await self._commit()
            await self._update_lag()
            self._publish_dropped_identifiers()

    async def _commit(self, only: set[TP] | None = None) -> None:
        """Commit the contiguous watermark of owned partitions (``only`` if given)."""
        if self._consumer is None:
            return
        marks = {
            tp: off
            for tp, off in self._tracker.committable_all().items()
            if only is None or tp in only
        }
        if not marks:
            return
        offsets = [TopicPartition(t, p, off) for (t, p), off in marks.items()]
        try:
            await self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # e.g. a rebalance in progress: the watermark stays and the next tick retries.
            log.warning(
                "commit_failed", error=str(exc.args[0]) if exc.args else "", count=len(marks)
            )
            return
        for tp, off in marks.items():
            self._tracker.mark_committed(tp, off)
            self.metrics.committed_offset.labels(topic=tp[0], partition=str(tp[1])).set(off)
        log.debug("committed", partitions=len(marks))

    def _publish_dropped_identifiers(self) -> None:
        """Copy the transform's drop counters (pure state) into the metric."""
        t = self.transformer
        for kind, total in (
            ("email", t.dropped_emails),
            ("phone", t.dropped_phones),
            ("ip", t.dropped_ips),
            ("user_agent", t.dropped_user_agents),
        ):
            new = total - self._dropped_seen.get(kind, 0)
            if new > 0:
                self.metrics.dropped_identifiers_total.labels(kind=kind).inc(new)
                self._dropped_seen[kind] = total

    async def _update_lag(self) -> None:
        if self._consumer is None:
            return
        for tp in list(self._owned):
            try:
                _, high = await self._consumer.get_watermark_offsets(
                    TopicPartition(*tp), timeout=1, cached=True
                )
            except KafkaException:
                continue
            mark = self._tracker.watermark(tp)
            if mark is not None and high >= 0:
                self.metrics.consumer_lag.labels(topic=tp[0], partition=str(tp[1])).set(
                    max(0, high - mark)
                )

    # -- delivering ------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery_task_crashed", error=repr(task.exception()))

    def _dispatch(self, batch: Batch) -> None:
        self.metrics.batch_size_events.observe(len(batch.items))
        self._spawn(self._deliver(batch))

    async def _deliver(self, batch: Batch) -> None:
        """Send ``batch`` until it is accepted or its events are dead-lettered."""
        account = self._accounts[batch.key[0]]
        probe_delay = BLOCKED_PROBE_INITIAL_S
        while True:
            if not account.unblocked.is_set():
                await account.unblocked.wait()
            batch.attempts += 1
            try:
                debug_id = await self._send(account, batch)
            except RetryableError as exc:
                delay = self._backoff.delay_for(exc, batch.attempts)
                cause = _cause(exc)
                self.metrics.retries_total.labels(account=account.account_id, cause=cause).inc()
                log.info(
                    "batch_retry",
                    batch_id=batch.id,
                    account=account.account_id,
                    cause=cause,
                    attempt=batch.attempts,
                    retry_in_s=round(delay, 3),
                    events=len(batch.items),
                )
                await account.backoff(delay)
            except BatchRejectedError as exc:
                await self._isolate(account, batch, exc)
                return
            except AccountBlockedError as exc:
                if self.settings.delivery.on_account_blocked == "dead_letter":
                    await self._dead_letter_batch(
                        batch, "account_blocked", exc.message, debug_id=None, errors=()
                    )
                    return
                self._block(account, exc)
                await asyncio.sleep(probe_delay * (0.5 + self._rng.random()))
                probe_delay = min(BLOCKED_PROBE_MAX_S, probe_delay * 2)
                # This task probes: it retries without waiting for the unblock event.
                try:
                    debug_id = await self._send(account, batch)
                except (RetryableError, AccountBlockedError):
                    continue
                except BatchRejectedError as rejected:
                    self._unblock(account)
                    await self._isolate(account, batch, rejected)
                    return
                self._unblock(account)
                self._complete(batch, account, debug_id)
                return
            else:
                self._complete(batch, account, debug_id)
                return

    async def _send(self, account: AccountState, batch: Batch) -> str:
        """One request within the account's budget and slots; returns X's debug_id."""
        aid = account.account_id
        async with account.limiter:
            delay = account.budget.reserve(len(batch.items))
            if delay > 0:
                await asyncio.sleep(delay)
            # A 429 or an exhausted server budget may have arrived while we waited.
            while (blocked := account.budget.blocked_for()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(blocked)
            body = batch.body()
            async with self._global_limiter:
                in_flight = self.metrics.requests_in_flight.labels(account=aid)
                in_flight.inc()
                start = self._clock()
                try:
                    response = await account.client.send(batch.key[1], body)
                except TransportError:
                    self.metrics.requests_total.labels(account=aid, status="transport_error").inc()
                    self._adapt(account, ok=False)
                    raise
                finally:
                    in_flight.dec()
                elapsed = self._clock() - start
        self.metrics.request_duration_seconds.labels(account=aid).observe(elapsed)
        self.metrics.requests_total.labels(account=aid, status=str(response.status)).inc()
        self.metrics.events_sent_total.labels(account=aid).inc(len(batch.items))
        limits = RateLimitHeaders.parse(response.headers)
        if limits is not None:
            account.budget.observe(
                limits.limit, limits.remaining, limits.reset_epoch, self._wall(), sent_at=start
            )
        self.metrics.rate_budget_remaining.labels(account=aid).set(
            account.budget.remaining_estimate()
        )
        try:
            accepted = parse_response(
                response.status, response.headers, response.body, self._wall()
            )
        except RateLimitedError as exc:
            self.metrics.rate_limited_total.labels(account=aid).inc()
            account.budget.block_until(self._clock() + (exc.retry_after or 1.0))
            self._adapt(account, ok=False)
            raise
        except ServerError:
            self._adapt(account, ok=False)
            raise
        self._adapt(account, ok=True, latency=elapsed)
        return accepted.debug_id or ""

    def _adapt(self, account: AccountState, *, ok: bool, latency: float = 0.0) -> None:
        if account.adaptive is None:
            return
        limit = account.adaptive.on_success(latency) if ok else account.adaptive.on_overload()
        account.limiter.set_limit(limit)

    def _complete(self, batch: Batch, account: AccountState, debug_id: str) -> None:
        self._finish(batch.items)
        account.signal_progress()
        self.metrics.events_accepted_total.labels(account=account.account_id).inc(len(batch.items))
        self.counts["accepted"] += len(batch.items)
        log.debug(
            "batch_accepted",
            batch_id=batch.id,
            debug_id=debug_id,
            account=account.account_id,
            events=len(batch.items),
            attempts=batch.attempts,
        )

    def _finish(self, items: Sequence[BatchItem]) -> None:
        done = self._tracker.done
        for it in items:
            done((it.topic, it.partition), it.offset, it.epoch)
        self._backpressure.release(len(items))
        self.metrics.events_in_flight.set(self._backpressure.held)

    async def _isolate(self, account: AccountState, batch: Batch, exc: BatchRejectedError) -> None:
        """All-or-nothing 400: dead-letter the bad events, resend the good ones."""
        plan = plan_isolation(len(batch.items), exc.errors)
        log.info(
            "batch_rejected",
            batch_id=batch.id,
            debug_id=exc.debug_id,
            account=account.account_id,
            events=len(batch.items),
            bad_known=len(plan.bad),
            bisecting=plan.bisecting,
        )
        letters = []  # one sink write for all bad events, not one acknowledgement each
        for index, errors in plan.bad.items():
            item = batch.items[index]
            message = "; ".join(str(e.get("message", "")) for e in errors)[:500] or str(exc)
            letters.append(
                (
                    (item.source, (item.topic, item.partition), item.offset, item.epoch),
                    DeadLetter(
                        reason="api_rejected",
                        message=message,
                        field=_first_parameter(errors),
                        attempts=batch.attempts,
                        debug_id=exc.debug_id,
                        errors=list(errors),
                    ),
                )
            )
        if letters:
            await self._dead_letter_each(letters)
        groups = [plan.resend, *plan.halves]
        subs = [batch.subset(group) for group in groups if group]
        await asyncio.gather(*(self._deliver(sub) for sub in subs))

    async def _dead_letter_batch(
        self,
        batch: Batch,
        reason: str,
        message: str,
        *,
        debug_id: str | None,
        errors: Sequence[Any],
    ) -> None:
        await self._dead_letter_items(
            batch.items,
            DeadLetter(
                reason=reason,
                message=message,
                attempts=batch.attempts,
                debug_id=debug_id,
                errors=list(errors),
            ),
        )

    async def _dead_letter_items(self, items: Sequence[BatchItem], letter: DeadLetter) -> None:
        await self._dead_letter(
            [(it.source, (it.topic, it.partition), it.offset, it.epoch) for it in items], letter
        )

    async def _dead_letter(
        self, entries: Sequence[tuple[Any, TP, int, int]], letter: DeadLetter
    ) -> None:
        await self._dead_letter_each([(entry, letter) for entry in entries])

    async def _dead_letter_each(
        self, entries: Sequence[tuple[tuple[Any, TP, int, int], DeadLetter]]
    ) -> None:
        assert self._dlq is not None
        await self._dlq.write([(msg, letter) for (msg, _, _, _), letter in entries])
        for (_, tp, offset, epoch), _ in entries:
            self._tracker.done(tp, offset, epoch)
        self._backpressure.release(len(entries))
        self.metrics.events_in_flight.set(self._backpressure.held)
        for reason, n in Counter(letter.reason for _, letter in entries).items():
            self.metrics.events_dead_lettered_total.labels(reason=reason).inc(n)
        self.counts["dead_lettered"] += len(entries)

    # -- blocked accounts ------------------------------------------------------------

    def _block(self, account: AccountState, exc: AccountBlockedError) -> None:
        if account.unblocked.is_set():
            account.unblocked.clear()
            account.blocked_reason = f"{exc.status} {exc.code}"
            self.metrics.account_blocked.labels(account=account.account_id).set(1)
            self.health.set_account_blocked(account.account_id, account.blocked_reason)
            log.error(
                "account_blocked",
                account=account.account_id,
                status=exc.status,
                code=exc.code,
                message=exc.message,
                action="holding offsets; fix the credentials, access, pixel or event tag",
            )

    def _unblock(self, account: AccountState) -> None:
        if not account.unblocked.is_set():
            account.unblocked.set()
            account.blocked_reason = None
            self.metrics.account_blocked.labels(account=account.account_id).set(0)
            self.health.set_account_blocked(account.account_id, None)
            log.warning("account_unblocked", account=account.account_id)


def _cause(exc: RetryableError) -> str:
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
