"""The delivery engine: wires the source, the transform, batching, lanes and the sink.

Orchestration only; each concern has its own module and owner (see the module map in
``docs/architecture.md``):

- ``source.KafkaSource``: consume, pause/resume, rebalance callbacks, commits, contact;
- ``watermark.OffsetTracker``: what each partition holds and may commit;
- ``batcher.Batcher``: micro-batches per (account, pixel);
- ``lane.AccountLane``: one account's gate, rate budget and in-flight limit;
- ``deliver.BatchDelivery``: send, check, isolate, dead-letter, finish;
- ``dlq``: the dead-letter records and sink;
- ``supervisor.Supervisor``: every task's exception ends the engine loudly.

Invariant: an offset is committed only when every event below it was accepted (200)
or its dead-letter record was acknowledged. Everything else (rebalances, shutdown,
crashes) at worst redelivers, and X de-duplicates redeliveries by ``conversion_id``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from confluent_kafka import KafkaError
from confluent_kafka.aio import AIOConsumer

from consumer.delivery.auth import Auth, OAuth1Auth, PixelTokenAuth
from consumer.delivery.backpressure import Backpressure
from consumer.delivery.batcher import Batch, Batcher, BatchKey
from consumer.delivery.client import XAdsClient, make_session
from consumer.delivery.concurrency import AdaptiveLimit, InFlightLimiter
from consumer.delivery.deliver import BatchDelivery, DeadLetterSinkLike
from consumer.delivery.dlq import DeadLetter, DeadLetterSink, HeaderProducer
from consumer.delivery.gate import GateMode, GateState
from consumer.delivery.lane import AccountLane, RequestSender
from consumer.delivery.parking import Policy, parking_headers, read_note, share
from consumer.delivery.retry import Backoff
from consumer.delivery.source import TP, ConsumerFactory, ConsumerLike, KafkaSource
from consumer.delivery.supervisor import Supervisor, TaskFailure
from consumer.delivery.watermark import Chunk, OffsetTracker
from consumer.errors import ConfigError
from consumer.observability.health import CONSUME_LOOP, HealthState
from consumer.observability.metrics import Metrics
from consumer.observability.redact import redact_text
from consumer.settings import AccountSettings, Settings
from consumer.transform import Conversion, Rejection, Skip, Transformer

log = structlog.get_logger("xconv.engine")
# librdkafka's own log lines go through the same processors (and redaction) as ours.
KAFKA_LOGGER = logging.getLogger("confluent_kafka")

# librdkafka's default message.max.bytes: the largest dead-letter record it will send.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
# How often the revoke handler looks at the revoked partitions' outstanding events.
_REVOKE_POLL_S = 0.05
# Events per chunk at most (see watermark.py): the watermark moves in steps of at most
# this many events, and a crash redelivers at most this many finished ones per partition.
CHUNK_EVENTS = 100
# Above every offset: no end (a replay sets one per partition).
_NO_END = 2**63
# A parking partition held back for a sick account is looked at again after at most
# this long (sooner when the account's gate opens, or at its next probe time).
MAX_HOLD_S = 30.0
# After a parked event was let through as the probe candidate, the partition waits this
# long for the probe's outcome before it is looked at again.
CANDIDATE_WAIT_S = 5.0
_UNKNOWN_ACCOUNT = DeadLetter(
    reason="unknown_account", message="routed to an account that has no credentials configured"
)


def _letter(result: Rejection | Any) -> DeadLetter:
    return DeadLetter(result.reason, result.message, field=result.field)


@dataclass(frozen=True)
class DrainReport:
    """What shutdown achieved.

    ``clean``: nothing was left in flight. ``failure``: the task failure that stopped
    the engine, if one did. ``threads_stuck``: a librdkafka call overran its bound at
    close, so the process must exit without waiting for its worker threads.
    """

    clean: bool
    left_in_flight: int
    failure: TaskFailure | None = None
    threads_stuck: bool = False


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


def _unbound_append(_item: Any) -> None:
    """Placeholder for ``_ingest``'s bound appends before its first conversion."""
    raise AssertionError("append before a run was chosen")


#: How long librdkafka waits to fetch again once its prefetch queue was full (ms).
FETCH_QUEUE_BACKOFF_MS: Final = 100


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
            # With that cap a fast consumer drains the queue in well under a second, and
            # librdkafka then waits fetch.queue.backoff.ms (1 s by default) before it
            # fetches again: measured, 0.6 s without a message every ~50,000 events.
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
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


def _default_consumer(conf: dict[str, Any]) -> ConsumerLike:
    # Two or more workers: rebalance callbacks re-enter the consumer (commit).
    consumer: ConsumerLike = AIOConsumer(conf, max_workers=4)
    return consumer


class Engine:
    """Runs until ``request_stop()`` (or a failure); then drains within the bound."""

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
        consumer_factory: ConsumerFactory | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        client_factory: Callable[[AccountSettings], RequestSender] | None = None,
        consume_parking: bool = True,
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
        self._consumer_factory = consumer_factory or _default_consumer
        self._producer_factory = producer_factory
        self._session_factory = session_factory
        self._client_factory = client_factory
        d = settings.delivery
        self._policy = Policy(d.stuck_policy)
        # The parking topic is read back by the service itself (a replay does not).
        self._parking_topic = settings.kafka.parking_topic
        self._reads_parking = consume_parking and self._policy is Policy.PARK
        self._buffered: Counter[str] = Counter()  # events per account batching or in flight
        self._tracker = OffsetTracker()
        self._batcher = Batcher(
            max_events=settings.batching.max_events,
            max_bytes=settings.batching.max_request_bytes,
            linger_s=settings.batching.linger_ms / 1000.0,
            clock=clock,
        )
        self._backpressure = Backpressure.from_ratio(
            d.max_buffered_events,
            d.resume_ratio,
            d.pause_grace_s,
            refill=min(settings.kafka.fetch_batch_size, d.max_buffered_events // 4),
        )
        self._full_since: float | None = None  # when the buffer reached its high mark
        self._backoff = Backoff(base_s=d.retry_base_s, cap_s=d.retry_cap_s, rng=self._rng)
        self._global_limiter = InFlightLimiter(d.max_in_flight)
        self._supervisor = Supervisor(self._on_failure)
        self._lanes: dict[str, AccountLane] = {}
        self._stop = asyncio.Event()
        self._room = asyncio.Event()  # set whenever events finish
        self._closing = False
        self._source: KafkaSource | None = None
        self._producer: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._delivery: BatchDelivery | None = None
        self.counts: Counter[str] = Counter()
        self._dropped_seen: dict[str, int] = {}
        self._fields_seen: dict[tuple[str, str], int] = {}
        self._skipped_seen: dict[str, int] = {}
        # Per account: the gate's probe count and when a parked event was let through as
        # the probe's candidate (one per probe; another after CANDIDATE_WAIT_S).
        self._candidates: dict[str, tuple[int, float]] = {}

    # -- lifecycle -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop fetching; ``run`` then drains, commits and returns."""
        self._stop.set()

    def _producer_error(self, err: KafkaError) -> None:
        """librdkafka's error_cb for the dead-letter producer: fatal ones stop the engine."""
        if err.fatal():
            self._supervisor.fail(
                TaskFailure("kafka", None, RuntimeError(f"fatal producer error {err.name()}"))
            )

    def _on_failure(self, failure: TaskFailure) -> None:
        self.metrics.task_failures_total.labels(task=failure.kind).inc()
        self.health.set_failed(failure.describe())
        self._stop.set()

    async def run(self) -> DrainReport:
        s = self.settings
        if self._session_factory is not None:
            self._session = self._session_factory()
        elif self._client_factory is None:
            self._session = make_session(
                connect_timeout_s=s.api.connect_timeout_s,
                total_timeout_s=s.api.request_timeout_s,
                limit=s.delivery.max_in_flight,
            )
        for account in s.accounts:
            self._lanes[account.account_id] = self._lane(account)
        pconf = producer_config(s)
        self._producer = (
            self._producer_factory(pconf)
            if self._producer_factory is not None
            else HeaderProducer(pconf, on_error=self._producer_error, metrics=self.metrics)
        )
        sink: DeadLetterSinkLike = DeadLetterSink(
            self._producer,
            s.kafka.dead_letter_topic,
            backoff=Backoff(base_s=0.2, cap_s=30.0, rng=self._rng),
            metrics=self.metrics,
            max_record_bytes=int(pconf.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)),
            unknown_topic_grace_s=s.kafka.unknown_topic_grace_s,
            redact=redact_text,
        )
        max_record_bytes = int(pconf.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        parking: DeadLetterSinkLike = DeadLetterSink(
            self._producer,
            s.kafka.parking_topic,
            backoff=Backoff(base_s=0.2, cap_s=30.0, rng=self._rng),
            metrics=self.metrics,
            max_record_bytes=max_record_bytes,
            unknown_topic_grace_s=s.kafka.unknown_topic_grace_s,
            redact=redact_text,
            headers_for=parking_headers,
            rewrite_too_large=False,
        )
        self._delivery = BatchDelivery(
            lanes=self._lanes,
            sink=sink,
            backoff=self._backoff,
            metrics=self.metrics,
            finish=self._finish,
            is_stale=self._is_stale,
            abandon=self._abandon,
            dead_letter_when_blocked=s.delivery.on_account_blocked == "dead_letter",
            counts=self.counts,
            policy=self._policy,
            parking=parking,
            park_after_s=s.delivery.park_after_s,
            parked_max_age_s=s.delivery.parked_max_age_s,
            max_record_bytes=max_record_bytes,
            crowding=self._crowding,
            clock=self._clock,
            wall=self._wall,
            parking_topic=self._parking_topic,
        )
        topics = list(s.kafka.topics)
        if self._reads_parking and self._parking_topic not in topics:
            topics.append(self._parking_topic)
        self._source = KafkaSource(
            self._consumer_factory,
            consumer_config(s, self._group_id),
            topics,
            self,
            metrics=self.metrics,
            call_timeout_s=s.kafka.call_timeout_s,
            callback_allowance_s=s.delivery.revoke_timeout_s,
            clock=self._clock,
        )
        self.health.register(CONSUME_LOOP)
        try:
            await self._source.start()
        except Exception as exc:
            self._supervisor.fail(TaskFailure("start", None, exc))
            return await self._shutdown()
        self.health.set_started()
        self.health.set_waiting_for_assignment(True)
        self.health.broker_contact(self._source.last_contact)
        log.info(
            "engine_started",
            topics=list(s.kafka.topics),
            group_id=self._group_id or s.kafka.group_id,
            accounts=sorted(self._lanes),
        )
        try:
            await self._consume_loop()
        except Exception as exc:
            self._supervisor.fail(TaskFailure("consume", None, exc))
        return await self._shutdown()

    def _client(self, account: AccountSettings) -> RequestSender:
        if self._client_factory is not None:
            return self._client_factory(account)
        assert self._session is not None
        s = self.settings
        return XAdsClient(self._session, s.api.base_url, s.api.version, account_auth(account))

    def _lane(self, account: AccountSettings) -> AccountLane:
        s = self.settings
        return AccountLane(
            account,
            self._client(account),
            metrics=self.metrics,
            health=self.health,
            global_limiter=self._global_limiter,
            gate_state=GateState(
                initial_s=s.delivery.probe_initial_s,
                max_s=max(s.delivery.probe_max_s, s.delivery.probe_initial_s),
                clock=self._clock,
                rng=self._rng.random,
            ),
            clock=self._clock,
            wall=self._wall,
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

    async def _shutdown(self) -> DrainReport:
        """Flush partial batches, wait for in-flight work (bounded), commit, close."""
        self._closing = True
        self.health.set_draining()
        failure = self._supervisor.failure
        if failure is None:
            for batch in self._batcher.drain():
                self._dispatch(batch)
        pending = await self._supervisor.wait(self.settings.delivery.drain_timeout_s)
        left = self._tracker.total_outstanding
        await self._commit()
        await self._supervisor.cancel_all()
        for lane in self._lanes.values():
            lane.gate.close()
        threads_stuck = await self._close()
        failure = self._supervisor.failure
        report = DrainReport(
            clean=not pending and left == 0 and failure is None,
            left_in_flight=left,
            failure=failure,
            threads_stuck=threads_stuck,
        )
        if pending:
            self.metrics.drain_timeouts_total.inc()
        log.info(
            "engine_drained",
            clean=report.clean,
            left_in_flight=left,
            failed=failure.describe() if failure is not None else None,
        )
        return report

    async def _close(self) -> bool:
        """Close every client within its bound; True when one of them overran."""
        bound = self.settings.kafka.call_timeout_s
        stuck = False
        if self._source is not None:
            await self._source.close()
            stuck = self._source.close_timed_out
        if self._producer is not None and hasattr(self._producer, "close"):
            closing = asyncio.ensure_future(self._producer.close(bound))
            done, _ = await asyncio.wait({closing}, timeout=bound + 1.0)
            if closing not in done:
                closing.cancel()
                log.error("dead_letter_producer_close_timed_out", bound_s=bound)
                stuck = True
            elif closing.exception() is not None:
                log.warning(
                    "dead_letter_producer_close_failed",
                    error=type(closing.exception()).__name__,
                )
        if self._session is not None:
            await self._session.close()
        return stuck

    # -- consuming -------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._source is not None
        source, batcher, tracker = self._source, self._batcher, self._tracker
        size = self.settings.kafka.fetch_batch_size
        interval = self.settings.delivery.commit_interval_s
        next_commit = self._clock() + interval
        while not self._stop.is_set():
            if self._clock() >= next_commit:
                # The consume loop is the consumer handle's one user: commits, contact
                # checks and lag queries run here, between fetches, never beside one.
                await self._periodic(interval)
                next_commit = self._clock() + interval
            await self._release_holds()
            if await self._apply_backpressure():
                # Full, not paused yet: no fetch (a pause would drop what librdkafka has
                # prefetched); a finishing batch makes room within its round trip.
                self.health.beat(CONSUME_LOOP)
                await self._wait_for_room(0.05)
                for batch in batcher.due(self._clock()):
                    self._dispatch(batch)
                continue
            deadline = batcher.next_deadline()
            timeout = 0.2 if deadline is None else min(0.2, max(0.0, deadline - self._clock()))
            # Never fetch more than the buffer has room for: one big fetch would otherwise
            # overshoot max_buffered_events before back-pressure gets a chance to pause.
            room = self._backpressure.room(tracker.held)
            messages = await source.fetch(min(size, room), timeout)
            self.health.beat(CONSUME_LOOP)
            if messages:
                self._ingest(messages)
            for batch in batcher.due(self._clock()):
                self._dispatch(batch)
            if self._stop_at is not None and self._reached_end():
                log.info("reached_end_offsets")
                self._stop.set()

    def _ingest(self, messages: Sequence[Any]) -> None:
        """Hot path: transform, then book and batch per fetch, not per event.

        Per message: C calls on the message, the transform and three list appends.
        Offsets are booked as one chunk per run of one partition, and each key's events
        go to the batcher in one call. No awaits, so nothing finishes meanwhile.
        """
        tracker, transform, stop_at = self._tracker, self.transformer.transform, self._stop_at
        runs: dict[BatchKey, tuple[list[bytes], list[Any], list[Chunk]]] = {}
        letters: list[tuple[Any, Chunk, DeadLetter]] = []
        skips: list[Chunk] = []
        sealed: list[tuple[Chunk, int, int, int, str]] = []
        chunk: Chunk | None = None
        topic: str | None = None
        partition = -1
        floor = stop = first = last = size = 0
        parked_run = False
        tp: TP = ("", -1)
        # The run of the last conversion's route, its appends bound: most fetches carry
        # one or a few routes, so the per-message dict lookup is skipped (identity is
        # only a shortcut: an equal route that is another object takes the lookup).
        last_route: object = None
        add_payload: Callable[[bytes], None] = _unbound_append
        add_source: Callable[[Any], None] = _unbound_append
        add_chunk: Callable[[Chunk], None] = _unbound_append
        for msg in messages:
            if msg.error() is not None:
                self._fetch_error(msg)
                continue
            if msg.partition() != partition or msg.topic() != topic:
                if chunk is not None:
                    sealed.append((chunk, first, last, size, topic or ""))
                topic, partition, size = msg.topic(), msg.partition(), 0
                tp = (topic or "", partition)
                parked_run = topic == self._parking_topic
                chunk = tracker.open_chunk(tp)  # None: revoked since the fetch
                taken = tracker.taken_up_to(tp)
                floor = -1 if taken is None else taken
                stop = _NO_END if stop_at is None else stop_at.get(tp, 0)
            if chunk is None:
                continue  # its new owner reads it
            offset = msg.offset()
            if offset <= floor or offset >= stop:
                continue  # taken already (re-fetch after pause/seek), or past a replay's end
            if parked_run and not self._admit_parked(msg, tp):
                continue  # its partition waits for the account (read again later)
            if size == CHUNK_EVENTS:  # bounds commit granularity and redelivery after a crash
                sealed.append((chunk, first, last, size, topic or ""))
                chunk, size = tracker.next_chunk(chunk), 0
            if not size:
                first = offset
            last = floor = offset
            size += 1
            result = transform(msg.value() or b"")
            if type(result) is Conversion:
                route = result.route
                if route is not last_route:
                    key = (route.account_id, route.pixel_id)
                    run = runs.get(key)
                    if run is None:
                        run = runs[key] = ([], [], [])
                    add_payload, add_source, add_chunk = (
                        run[0].append,
                        run[1].append,
                        run[2].append,
                    )
                    last_route = route
                add_payload(result.payload)
                add_source(msg)
                add_chunk(chunk)
            elif type(result) is Skip:
                skips.append(chunk)
            else:
                letters.append((msg, chunk, _letter(result)))
        if chunk is not None:
            sealed.append((chunk, first, last, size, topic or ""))
        taken = 0
        by_topic: Counter[str] = Counter()
        for chunk, first, last, size, topic_name in sealed:
            tracker.seal(chunk, first, last, size)
            by_topic[topic_name] += size
            taken += size
        self._hand_out(runs, skips, letters)
        # Taken messages only: one read again after a pause, seek or hold counts once.
        for topic_name, n in by_topic.items():
            if n:
                self.metrics.events_consumed_total.labels(topic=topic_name).inc(n)
        self.metrics.events_transformed_total.inc(taken - len(skips) - len(letters))
        self.metrics.events_in_flight.set(tracker.held)
        self.counts["consumed"] += taken

    def _hand_out(
        self,
        runs: dict[BatchKey, tuple[list[bytes], list[Any], list[Chunk]]],
        skips: list[Chunk],
        letters: list[tuple[Any, Chunk, DeadLetter]],
    ) -> None:
        """One fetch's events, booked: to batches, to the dead-letter topic, or done."""
        delivery = self._delivery  # None only in unit tests that call _ingest alone
        for key, (payloads, sources, chunks) in runs.items():
            lane = self._lanes.get(key[0])
            if lane is None:
                pairs = zip(sources, chunks, strict=True)
                letters.extend((src, chunk, _UNKNOWN_ACCOUNT) for src, chunk in pairs)
                continue
            why = None if delivery is None else delivery.divert(lane, arriving=True)
            if why is not None:
                assert delivery is not None
                last = lane.last_failure_reason  # set aside before the gate closed: say why
                reason = lane.gate.state.reason or (f"{why}: {last}" if last else why)
                self._supervisor.spawn(
                    delivery.set_aside(
                        lane,
                        sources,
                        chunks,
                        attempts=0,
                        failing_since=None,
                        reason=reason,
                        why=why,
                    ),
                    "park",
                )
                continue
            self._buffered[key[0]] += len(payloads)
            for full in self._batcher.extend(key, payloads, sources, chunks):
                self._dispatch(full)
        self._tracker.finish_all(skips)  # committed, never sent nor dead-lettered
        if letters:
            assert delivery is not None
            self._supervisor.spawn(delivery.dead_letter(letters), "dead_letter")
            for reason, n in Counter(letter.reason for _, _, letter in letters).items():
                self.metrics.events_rejected_total.labels(reason=reason).inc(n)

    def _admit_parked(self, msg: Any, tp: TP) -> bool:
        """Take a parked event now, or hold its partition back (from this offset).

        Taken when its account's gate is open (or the account is unknown here: the
        normal path dead-letters it); when the gate's probe is due, one event is taken
        as the probe's candidate and the partition waits behind it for the outcome.
        Otherwise the partition waits until the account's next probe time.
        """
        assert self._source is not None
        source = self._source
        if tp in source.holds:
            return False
        now_wall = self._wall()
        note = read_note(msg, now_wall)
        lane = self._lanes.get(note.account) if note is not None else None
        if note is None or lane is None:
            return True
        if lane.gate.mode is GateMode.OPEN and lane.last_success_at is None:
            # Parked by an earlier run (or another member) and no request of the account
            # has been accepted here yet: probe it with one event before taking the rest.
            lane.gate.block(f"parked before: {note.reason}", probe_now=True)
            log.warning(
                "account_parked_before",
                account=note.account,
                reason=note.reason,
                action="one parked event probes the account; the rest waits for it",
            )
        if lane.gate.mode is GateMode.OPEN:
            return True
        max_age = self.settings.delivery.parked_max_age_s
        if max_age and now_wall - note.first_failure > max_age:
            return True  # too old to wait for a probe: set aside now (parked_too_long)
        now, gate = self._clock(), lane.gate.state
        offset, account, first = msg.offset(), note.account, note.first_failure
        if gate.mode is GateMode.BLOCKED and gate.probe_due():
            taken = self._candidates.get(account)
            if taken is None or taken[0] != gate.probes or now - taken[1] > CANDIDATE_WAIT_S:
                self._candidates[account] = (gate.probes, now)
                source.hold(tp, offset + 1, now + CANDIDATE_WAIT_S, account, first)
                return True
        until = gate.next_probe_at if gate.next_probe_at is not None else now + 1.0
        if max_age:  # look again when this one turns too old
            until = min(until, now + max(0.0, first + max_age - now_wall))
        source.hold(tp, offset, min(until, now + MAX_HOLD_S), account, first)
        return False

    async def _release_holds(self) -> None:
        """Parking partitions whose wait is over: time, the gate opened, or a probe is due."""
        assert self._source is not None
        source = self._source
        if not source.holds:
            return
        now = self._clock()
        done = [
            tp
            for tp, hold in source.holds.items()
            if hold.applied
            and (
                now >= hold.until
                or (lane := self._lanes.get(hold.account)) is None
                or lane.gate.mode is GateMode.OPEN
                or lane.gate.state.probe_due()  # the next probe's turn (or the last ended)
            )
        ]
        await source.apply_holds()
        if done:
            await source.release(done)

    def _crowding(self, account: str) -> bool:
        """A full buffer, or the account holding more than its share of it."""
        if self._backpressure.full(self._tracker.held):
            return True
        holding = sum(1 for n in self._buffered.values() if n > 0)
        return self._buffered[account] > share(self.settings.delivery.max_buffered_events, holding)

    def _wake_failing(self) -> None:
        """The buffer just filled: failing accounts' retries look at the stuck policy now."""
        if self._policy is Policy.HOLD:
            return
        for lane in self._lanes.values():
            if lane.failing and any(o.healthy for o in self._lanes.values() if o is not lane):
                lane.signal_progress()

    @staticmethod
    def _fetch_error(msg: Any) -> None:
        err = msg.error()
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("kafka_fetch_error", code=err.name(), fatal=err.fatal())

    async def _apply_backpressure(self) -> bool:
        """Pause or resume; True when the buffer is full but not paused yet (no fetch)."""
        assert self._source is not None
        held, paused = self._tracker.held, self._source.paused
        full = self._backpressure.full(held)
        if not full or paused:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = self._clock()
            self._wake_failing()
        full_for = None if self._full_since is None else self._clock() - self._full_since
        want = self._backpressure.should_pause(held, paused, full_for)
        if want != paused:
            await self._source.set_paused(want)
            self._full_since = None
            log.info("backpressure", paused=want, held_events=held)
        self.metrics.events_in_flight.set(held)
        return full and not want

    async def _wait_for_room(self, bound_s: float) -> None:
        """Until a batch finishes (room), a stop request, or ``bound_s``."""
        self._room.clear()
        waiters = {
            asyncio.ensure_future(self._room.wait()),
            asyncio.ensure_future(self._stop.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=bound_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _reached_end(self) -> bool:
        assert self._stop_at is not None
        owned = set(self._tracker.assigned())
        wanted = {tp for tp, end in self._stop_at.items() if end > 0}
        return owned >= wanted and all(
            (self._tracker.watermark(tp) or 0) >= self._stop_at[tp]
            and self._tracker.outstanding(tp) == 0
            for tp in wanted
        )

    # -- rebalancing (SourceListener) ------------------------------------------------

    async def on_assigned(self, tps: list[TP]) -> None:
        for tp in tps:
            self._tracker.assign(tp)
        self._update_assignment_health()

    async def on_revoking(self, tps: list[TP]) -> None:
        revoked = set(tps)
        # Send what is buffered now, then wait (bounded) for these partitions' batches.
        for batch in self._batcher.drain():
            self._dispatch(batch)
        timeout = 0.0 if self._closing else self.settings.delivery.revoke_timeout_s
        deadline = self._clock() + timeout
        # A bounded poll of pure state (no event to wait on across many batches); a stop
        # request ends it early so shutdown keeps its bound.
        while (  # noqa: ASYNC110
            self._clock() < deadline
            and not self._stop.is_set()
            and any(self._tracker.outstanding(tp) for tp in revoked)
        ):
            await asyncio.sleep(_REVOKE_POLL_S)
        await self._commit(only=revoked)
        self._forget(tps)

    def on_lost(self, tps: list[TP]) -> None:
        self._forget(tps)  # another member owns them now: commit nothing

    def on_commit_result(self, tp: TP, offset: int, ok: bool) -> None:
        confirmed = self._tracker.commit_result(tp, offset, ok)
        if ok and confirmed is not None:
            self.metrics.committed_offset.labels(topic=tp[0], partition=str(tp[1])).set(confirmed)
        self.health.broker_contact(self._source.last_contact if self._source else self._clock())

    def on_fatal(self, error: str) -> None:
        self._supervisor.fail(TaskFailure("kafka", None, RuntimeError(error)))

    def _forget(self, tps: Sequence[TP]) -> None:
        for tp in tps:
            self._tracker.revoke(tp)
            self.metrics.remove_partition(*tp)
        self._update_assignment_health()
        self.metrics.events_in_flight.set(self._tracker.held)

    def _update_assignment_health(self) -> None:
        owned = bool(self._tracker.assigned())
        self.health.set_assigned(owned)
        self.health.set_waiting_for_assignment(not owned)

    # -- committing ------------------------------------------------------------------

    async def _periodic(self, interval: float) -> None:
        await self._commit()
        await self._observe_broker(interval)
        self._publish_dropped_identifiers()
        self._publish_accounts()

    def _publish_accounts(self) -> None:
        for account in self._lanes:
            self.metrics.account_buffered_events.labels(account=account).set(
                self._buffered[account]
            )
        holds = self._source.holds.values() if self._source is not None else ()
        now = self._wall()
        oldest = max((now - hold.first_failure for hold in holds), default=0.0)
        self.metrics.parking_oldest_age_seconds.set(max(0.0, oldest))

    async def _commit(self, only: set[TP] | None = None) -> None:
        """Ask for the contiguous watermark of owned partitions (``only`` if given)."""
        if self._source is None:
            return
        marks = {
            tp: off
            for tp, off in self._tracker.committable_all().items()
            if only is None or tp in only
        }
        if marks and await self._source.commit(marks):
            for tp, off in marks.items():
                self._tracker.mark_committed(tp, off)
            log.debug("commit_requested", partitions=len(marks))

    async def _observe_broker(self, interval: float) -> None:
        """Broker contact for readiness, and lag (high watermark - committed offset)."""
        assert self._source is not None
        source = self._source
        if self._clock() - source.last_contact > interval:
            await source.check_contact()
        self.health.broker_contact(source.last_contact)
        owned = self._tracker.assigned()
        highs = await source.high_watermarks(owned)
        for tp, high in highs.items():
            committed = self._tracker.confirmed(tp)
            if committed is not None:
                self.metrics.consumer_lag.labels(topic=tp[0], partition=str(tp[1])).set(
                    max(0, high - committed)
                )

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
        for (name, reason), total in list(t.dropped_fields.items()):
            new = total - self._fields_seen.get((name, reason), 0)
            if new > 0:
                self.metrics.fields_dropped_total.labels(field=name, reason=reason).inc(new)
                self._fields_seen[(name, reason)] = total
        for reason, total in list(t.skipped.items()):
            new = total - self._skipped_seen.get(reason, 0)
            if new > 0:
                self.metrics.events_skipped_total.labels(reason=reason).inc(new)
                self._skipped_seen[reason] = total

    # -- delivering ------------------------------------------------------------------

    def _dispatch(self, batch: Batch) -> None:
        self.metrics.batch_size_events.observe(len(batch))
        self._supervisor.spawn(self._deliver(batch), "deliver", batch.id)

    async def _deliver(self, batch: Batch) -> None:
        assert self._delivery is not None
        try:
            await self._delivery.deliver(batch)
        finally:
            self._buffered[batch.key[0]] -= len(batch)

    def _finish(self, chunks: Sequence[Chunk]) -> None:
        self._tracker.finish_all(chunks)
        self._room.set()
        self.metrics.events_in_flight.set(self._tracker.held)

    def _is_stale(self, chunks: Sequence[Chunk]) -> bool:
        return self._tracker.all_revoked(chunks)

    def _abandon(self, chunks: Sequence[Chunk]) -> None:
        self._tracker.finish_all(chunks)  # a revoked partition's chunks: frees memory only
        self._room.set()
        self.metrics.events_in_flight.set(self._tracker.held)
