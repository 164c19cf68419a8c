"""Dead-letter records: the original message plus why it could not be delivered.

An event counts as done only once its dead-letter record is acknowledged by Kafka, so
``DeadLetterSink.write`` returns only when every record of a batch is acknowledged.
Nothing may be stuck either: a record too large for the producer or the topic is
rewritten smaller (reason ``too_large``, value truncated or omitted, sizes and source in
headers) instead of being retried, and a topic that refuses records for good raises
``DeadLetterUnavailable`` so the engine stops loudly instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import confluent_kafka
import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException

from consumer.delivery.retry import Backoff
from consumer.errors import DeadLetterUnavailable, RetryableError
from consumer.observability.redact import redact_headers

if TYPE_CHECKING:
    from consumer.observability.metrics import Metrics

log = structlog.get_logger("xconv.dlq")

HEADER_PREFIX = "xconv."
# Headers that describe where the event first came from; a replayed record keeps them.
SOURCE_HEADERS = ("xconv.source.topic", "xconv.source.partition", "xconv.source.offset")


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` a dead-letter record needs."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(
        self,
    ) -> Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why one message is dead: a stable reason code and PII-free details."""

    reason: str
    message: str
    field: str | None = None
    attempts: int = 0
    debug_id: str | None = None
    errors: Sequence[Mapping[str, Any]] = ()
    # Headers added as they are (a parking record's ``xconv.park.*``).
    extra: tuple[tuple[str, bytes], ...] = ()


def build_headers(
    source: KafkaMessage, letter: DeadLetter, now: datetime
) -> list[tuple[str, bytes]]:
    """Original headers (less old ``xconv.*`` ones) followed by the dead-letter headers."""
    raw = source.headers() or []
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    original = [(k, v.encode() if isinstance(v, str) else v or b"") for k, v in pairs]
    kept = [(k, v) for k, v in original if not k.startswith(HEADER_PREFIX)]
    previous = {k: v for k, v in original if k.startswith(HEADER_PREFIX)}
    if all(h in previous for h in SOURCE_HEADERS):
        src = [(h, previous[h]) for h in SOURCE_HEADERS]
        replays = int(previous.get("xconv.replays", b"0") or b"0") + 1
        src.append(("xconv.replays", str(replays).encode()))
    else:
        src = [
            ("xconv.source.topic", (source.topic() or "").encode()),
            ("xconv.source.partition", str(source.partition()).encode()),
            ("xconv.source.offset", str(source.offset()).encode()),
        ]
    added = [
        ("xconv.reason", letter.reason.encode()),
        ("xconv.message", letter.message.encode()),
        *src,
        ("xconv.time", now.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
        ("xconv.attempts", str(letter.attempts).encode()),
    ]
    if letter.field:
        added.append(("xconv.field", letter.field.encode()))
    if letter.debug_id:
        added.append(("xconv.x.debug_id", letter.debug_id.encode()))
    if letter.errors:
        added.append(("xconv.x.errors", orjson.dumps(list(letter.errors))))
    return redact_headers(kept + added)


def decode_headers(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, Any]:
    """The decoded view of a dead-letter record's headers (schemas/dead-letter-record)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    raw = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
        for k, v in pairs
        if k.startswith("xconv.")
    }
    view: dict[str, Any] = {
        "reason": raw.get("xconv.reason"),
        "message": raw.get("xconv.message"),
        "field": raw.get("xconv.field"),
        "source": {
            "topic": raw.get("xconv.source.topic"),
            "partition": int(raw.get("xconv.source.partition", "-1")),
            "offset": int(raw.get("xconv.source.offset", "-1")),
        },
        "time": raw.get("xconv.time"),
        "attempts": int(raw.get("xconv.attempts", "0")),
        "replays": int(raw.get("xconv.replays", "0")),
        "debug_id": raw.get("xconv.x.debug_id"),
        "errors": orjson.loads(raw["xconv.x.errors"]) if "xconv.x.errors" in raw else [],
    }
    if "xconv.value.size" in raw:  # a too_large record: what it was before it was cut
        view["original"] = {
            "reason": raw.get("xconv.original.reason"),
            "message": raw.get("xconv.original.message"),
            "value_size": int(raw["xconv.value.size"]),
        }
    return view


# librdkafka counts 36 bytes of v2 record framing against ``message.max.bytes`` and two
# varints (at most 5 bytes each) per header; round up so the pre-check never passes a
# record librdkafka would refuse.
RECORD_OVERHEAD = 64
HEADER_OVERHEAD = 10
# A minimal ``too_large`` record keeps at most this much of the original message.
ORIGINAL_MESSAGE_MAX = 1000

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_PERMANENT = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,  # an invalid topic name: no retry can fix it
        KafkaError._FATAL,
    }
)
_UNKNOWN_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})

Headers = list[tuple[str, bytes]]


class ErrorClass(StrEnum):
    """What a failed dead-letter write calls for (values are the metric's ``error`` label)."""

    RETRIABLE = "retriable"
    TOO_LARGE = "too_large"
    PERMANENT = "permanent"
    UNKNOWN_TOPIC = "unknown_topic"  # retriable inside the grace period, then permanent


def classify(exc: BaseException) -> tuple[ErrorClass, str]:
    """The class of a produce or delivery error, and its PII-free name for logs.

    Raises ``exc`` itself when it is neither a Kafka error nor a ``RetryableError``:
    that is a bug, and retrying it would hide it.
    """
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err: KafkaError = exc.args[0]
        code = err.code()
        if err.fatal() or code in _PERMANENT:
            return ErrorClass.PERMANENT, err.name()
        if code in _TOO_LARGE:
            return ErrorClass.TOO_LARGE, err.name()
        if code in _UNKNOWN_TOPIC:
            return ErrorClass.UNKNOWN_TOPIC, err.name()
        return ErrorClass.RETRIABLE, err.name()
    if isinstance(exc, RetryableError):
        return ErrorClass.RETRIABLE, type(exc).__name__
    raise exc


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes a record counts against ``message.max.bytes``, rounded up (see the overheads)."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, data in headers:
        size += len(name.encode()) + len(data) + HEADER_OVERHEAD
    return size


def redact_letter(letter: DeadLetter, redact: Callable[[str], str]) -> DeadLetter:
    """``letter`` with its free text (message, X's error strings) passed through ``redact``."""

    def scrub(node: Any) -> Any:
        if isinstance(node, str):
            return redact(node)
        if isinstance(node, Mapping):
            return {k: scrub(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [scrub(v) for v in node]
        return node

    return replace(letter, message=redact(letter.message), errors=scrub(list(letter.errors)))


@dataclass(frozen=True, slots=True)
class Record:
    """One record as it is produced to the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)


def too_large_records(
    source: KafkaMessage, letter: DeadLetter, now: datetime, *, limit: int, truncate: bool
) -> Iterator[Record]:
    """Ever smaller rewrites of a record too large to be dead-lettered, each within ``limit``.

    In order: the value truncated to fit (only when ``truncate``, i.e. the original is
    over ``limit``); the value omitted; the original headers dropped too; the key
    dropped instead; both dropped and only the essential headers kept (the original
    message cut to ``ORIGINAL_MESSAGE_MAX``, no X errors). Each says ``too_large`` and
    keeps the original reason and message, the original value's size and the source.
    """
    value = source.value() or b""
    key = source.key()
    original_size = record_size(key, value, build_headers(source, letter, now))

    def headers(how: str, *, minimal: bool, keep_original: bool) -> Headers:
        rewritten = DeadLetter(
            reason="too_large",
            message=f"dead-letter record of {original_size} bytes is too large: value {how}",
            field=letter.field,
            attempts=letter.attempts,
            debug_id=letter.debug_id,
            errors=() if minimal else letter.errors,
        )
        built = build_headers(source, rewritten, now)
        if not keep_original:
            built = [(k, v) for k, v in built if k.startswith(HEADER_PREFIX)]
        original_message = letter.message[:ORIGINAL_MESSAGE_MAX] if minimal else letter.message
        return [
            *built,
            ("xconv.original.reason", letter.reason.encode()),
            ("xconv.original.message", original_message.encode()),
            ("xconv.value.size", str(len(value)).encode()),
        ]

    if truncate:
        full = headers("truncated", minimal=False, keep_original=True)
        room = limit - record_size(key, b"", full)
        if 0 < room < len(value):
            yield Record(key, value[:room], full)
    omitted = headers("omitted", minimal=False, keep_original=True)
    candidates = [
        Record(key, b"", omitted),
        Record(key, b"", headers("omitted", minimal=False, keep_original=False)),
        Record(None, b"", omitted),
        Record(None, b"", headers("omitted", minimal=True, keep_original=False)),
    ]
    for candidate in candidates:
        if candidate.size <= limit:
            yield candidate


class Producer(Protocol):
    """The part of ``confluent_kafka.aio.AIOProducer`` used here."""

    async def produce(
        self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]: ...


class HeaderProducer:
    """An asyncio face on ``confluent_kafka.Producer`` for records with headers.

    ``confluent_kafka.aio.AIOProducer`` batches records and refuses headers, which a
    dead-letter record needs; this adapter keeps the plain producer non-blocking:
    ``produce`` only enqueues, a poll task serves delivery reports from a worker
    thread, and each report resolves the record's future on the event loop.
    librdkafka's ``error_cb`` reaches ``on_error`` on the event loop (fatal errors must
    stop the engine); non-fatal ones are counted in ``kafka_errors_total``.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        on_error: Callable[[KafkaError], None] | None = None,
        metrics: Metrics | None = None,
        queue_full_wait_s: float = 5.0,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_error = on_error
        self._metrics = metrics
        self._queue_full_wait_s = queue_full_wait_s
        self._producer = confluent_kafka.Producer({**config, "error_cb": self._error_cb})
        self._poller = asyncio.create_task(self._poll_loop(), name="xconv-dlq-poll")

    def _error_cb(self, err: KafkaError) -> None:
        # Called by librdkafka inside poll(), on the poll task's worker thread.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._report_error, err)

    def _report_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("kafka_error", client="dead_letter", error=err.name(), fatal=True)
        else:
            log.warning("kafka_error", client="dead_letter", error=err.name(), fatal=False)
            if self._metrics is not None:
                self._metrics.kafka_errors_total.labels(
                    client="dead_letter", error=err.name()
                ).inc()
        if self._on_error is not None:
            self._on_error(err)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.to_thread(self._producer.poll, 0.1)

    async def produce(
        self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """Enqueue one record; the future settles on its delivery report.

        A full local queue is waited on for at most ``queue_full_wait_s``, then a
        ``RetryableError`` is raised (the caller backs off) rather than looping forever.
        """
        future: asyncio.Future[Any] = self._loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            def settle() -> None:
                if future.done():
                    return
                if err is not None:
                    future.set_exception(KafkaException(err))
                else:
                    future.set_result(msg)

            self._loop.call_soon_threadsafe(settle)

        deadline = self._loop.time() + self._queue_full_wait_s
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=on_delivery, **kwargs
                )
                return future
            except BufferError:  # local queue full: let deliveries drain first
                if self._loop.time() >= deadline:
                    raise RetryableError(
                        f"dead-letter producer queue still full after {self._queue_full_wait_s} s"
                    ) from None
                await asyncio.sleep(0.05)

    async def flush(self, wait_s: float = 10.0) -> int:
        remaining: int = await asyncio.to_thread(self._producer.flush, wait_s)
        return remaining

    async def close(self, wait_s: float = 10.0) -> None:
        await self.flush(wait_s)
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller


@dataclass(slots=True)
class _Pending:
    """A record not yet acknowledged, and what its failures so far decided."""

    source: KafkaMessage
    letter: DeadLetter
    now: datetime
    record: Record
    shrinking: Iterator[Record] | None = None
    solo: bool = False  # produce alone: a too-large answer may have been the batch's
    unknown_since: float | None = None


@dataclass(slots=True)
class _Outcome:
    pending: _Pending
    error: BaseException | None
    crowded: bool  # produced with others, so a broker "too large" may be the batch's


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class DeadLetterSink:
    """Writes batches of dead-letter records and returns once Kafka acknowledged them all.

    Transient errors are retried (only the failed records) with the project's
    ``Backoff``; a too-large record is rewritten smaller; a permanent refusal raises
    ``DeadLetterUnavailable``. ``max_record_bytes`` is the producer's
    ``message.max.bytes``: records over it are rewritten before they are produced.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        backoff: Backoff,
        metrics: Metrics | None = None,
        max_record_bytes: int = 1_000_000,
        unknown_topic_grace_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        redact: Callable[[str], str] = lambda s: s,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        headers_for: Callable[[KafkaMessage, DeadLetter, datetime], Headers] = build_headers,
        rewrite_too_large: bool = True,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._backoff = backoff
        self._metrics = metrics
        self._max_record_bytes = max_record_bytes
        self._grace_s = unknown_topic_grace_s
        self._clock = clock
        self._wall = wall
        self._redact = redact
        self._sleep = sleep
        self._headers_for = headers_for
        self._rewrite_too_large = rewrite_too_large

    async def write(self, entries: Sequence[tuple[KafkaMessage, DeadLetter]]) -> None:
        """Produce every record at once, then await all acknowledgements.

        Returns only when Kafka acknowledged every record; raises
        ``DeadLetterUnavailable`` when the topic refuses them for good.
        """
        if not entries:
            return
        now = self._wall()
        pending = [self._prepare(source, letter, now) for source, letter in entries]
        attempt = 0
        while pending:
            together = [p for p in pending if not p.solo]
            outcomes = await self._produce(together, crowded=len(together) > 1)
            for p in pending:
                if p.solo:  # rare: one at a time, so the broker judges the record alone
                    outcomes += await self._produce([p], crowded=False)
            pending, retrying = self._settle(outcomes, attempt + 1)
            if retrying:
                attempt += 1
                await self._sleep(self._backoff.delay_for(None, attempt))

    def _prepare(self, source: KafkaMessage, letter: DeadLetter, now: datetime) -> _Pending:
        letter = redact_letter(letter, self._redact)
        record = Record(source.key(), source.value(), self._headers_for(source, letter, now))
        pending = _Pending(source, letter, now, record)
        if record.size > self._max_record_bytes:
            self._count(ErrorClass.TOO_LARGE)
            self._shrink(pending, "over_max_record_bytes", truncate=True)
        return pending

    def _shrink(self, p: _Pending, cause: str, *, truncate: bool) -> None:
        """Move ``p`` to its next smaller rewrite; none left is a permanent refusal."""
        if not self._rewrite_too_large:  # a parking record must keep its event whole
            self._unavailable(cause, f"a record of {p.record.size} bytes cannot be cut")
        if p.shrinking is None:
            p.shrinking = too_large_records(
                p.source, p.letter, p.now, limit=self._max_record_bytes, truncate=truncate
            )
        before = p.record.size
        smaller = next(p.shrinking, None)
        if smaller is None:
            self._unavailable(cause, f"a record of {before} bytes cannot be made to fit")
        else:
            p.record = smaller
            log.warning(
                "dead_letter_too_large",
                topic=self._topic,
                reason=p.letter.reason,
                cause=cause,
                size=before,
                rewritten_size=smaller.size,
                value_kept=len(smaller.value or b""),
            )

    async def _produce(self, batch: Sequence[_Pending], *, crowded: bool) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        waiting: list[tuple[_Pending, asyncio.Future[Any]]] = []
        try:
            for i, p in enumerate(batch):
                try:
                    future = await self._producer.produce(
                        self._topic,
                        value=p.record.value,
                        key=p.record.key,
                        headers=p.record.headers,
                    )
                except RetryableError as exc:
                    # The local queue stayed full: the rest would only wait as long again
                    # each, so they all back off with this record.
                    outcomes.extend(_Outcome(q, exc, crowded=False) for q in batch[i:])
                    break
                except KafkaException as exc:
                    outcomes.append(_Outcome(p, exc, crowded=False))  # refused before batching
                else:
                    waiting.append((p, future))
        except BaseException:
            for _, future in waiting:  # a bug or a cancel: never leave errors unretrieved
                future.add_done_callback(_retrieve)
            raise
        acks = await asyncio.gather(*(f for _, f in waiting), return_exceptions=True)
        for (p, _), ack in zip(waiting, acks, strict=True):
            error = ack if isinstance(ack, BaseException) else None
            outcomes.append(_Outcome(p, error, crowded=crowded))
        return outcomes

    def _settle(self, outcomes: Sequence[_Outcome], attempt: int) -> tuple[list[_Pending], bool]:
        """Classify failures: what to produce again, and whether to back off first."""
        again: list[_Pending] = []
        retriable: Counter[tuple[str, str]] = Counter()
        for outcome in outcomes:
            if outcome.error is None:
                continue
            p = outcome.pending
            kind, name = classify(outcome.error)
            if kind is ErrorClass.UNKNOWN_TOPIC:
                now = self._clock()
                if p.unknown_since is None:
                    p.unknown_since = now
                if now - p.unknown_since > self._grace_s:
                    kind = ErrorClass.PERMANENT
                else:
                    kind = ErrorClass.RETRIABLE
            if kind is ErrorClass.PERMANENT:
                self._unavailable(name, "the topic refuses records")
            elif kind is ErrorClass.TOO_LARGE:
                self._count(ErrorClass.TOO_LARGE)
                if outcome.crowded and not p.solo:
                    p.solo = True  # the batch may have been too large, not the record
                    log.warning(
                        "dead_letter_too_large",
                        topic=self._topic,
                        reason=p.letter.reason,
                        cause=name,
                        size=p.record.size,
                        retry="alone",
                    )
                else:
                    p.solo = True
                    self._shrink(p, name, truncate=False)
                again.append(p)
            else:
                self._count(ErrorClass.RETRIABLE)
                retriable[(name, p.letter.reason)] += 1
                again.append(p)
        for (name, reason), records in sorted(retriable.items()):
            log.warning(
                "dead_letter_write_failed",
                topic=self._topic,
                error=name,
                reason=reason,
                records=records,
                attempt=attempt,
            )
        return again, bool(retriable)

    def _count(self, kind: ErrorClass) -> None:
        if self._metrics is not None:
            self._metrics.dead_letter_errors_total.labels(error=kind.value).inc()

    def _unavailable(self, error: str, why: str) -> None:
        self._count(ErrorClass.PERMANENT)
        log.error("dead_letter_unavailable", topic=self._topic, error=error, detail=why)
        raise DeadLetterUnavailable(f"dead-letter topic {self._topic!r}: {error}: {why}")
