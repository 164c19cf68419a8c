"""DeadLetterSink against an in-memory producer that batches and fails like librdkafka.

The fake acknowledges a "batch" (every record produced since the loop last ran) in one
loop callback, so a sink that awaited each acknowledgement before producing the next
record would show interleaved produce/ack entries in ``FakeProducer.log``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from consumer.delivery.dlq import (
    SOURCE_HEADERS,
    DeadLetter,
    DeadLetterSink,
    ErrorClass,
    build_headers,
    classify,
    decode_headers,
    record_size,
)
from consumer.delivery.retry import Backoff
from consumer.errors import DeadLetterUnavailable, TransportError
from consumer.observability.metrics import Metrics
from tests.fakes import FakeClock

TOPIC = "purchases.dlq"
NOW = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "dead-letter-record.schema.json"
Headers = list[tuple[str, bytes]]


@dataclass
class FakeMessage:
    """A consumed message as the sink sees it (``KafkaMessage``)."""

    value_: bytes | None = b'{"order_id":"o-1"}'
    key_: bytes | None = b"o-1"
    headers_: list[tuple[str, bytes | None]] | None = None
    topic_: str = "purchases"
    partition_: int = 3
    offset_: int = 42

    def topic(self) -> str | None:
        return self.topic_

    def partition(self) -> int | None:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self.headers_


def _varint_len(n: int) -> int:
    zigzag = n << 1
    size = 1
    while zigzag >= 0x80:
        zigzag >>= 7
        size += 1
    return size


def librdkafka_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What librdkafka 2.x checks against ``message.max.bytes`` (measured: 36 B framing)."""
    hdrs = sum(
        _varint_len(len(k.encode())) + len(k.encode()) + _varint_len(len(v)) + len(v)
        for k, v in headers
    )
    return 36 + len(key or b"") + len(value or b"") + hdrs


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def xconv(self) -> dict[str, str]:
        return {k: v.decode() for k, v in self.headers if k.startswith("xconv.")}


ErrorFor = Callable[[int, Produced], KafkaError | None]


@dataclass
class FakeProducer:
    """Refuses at ``produce`` like librdkafka (size over ``produce_limit``, or ``refuse``),
    fails deliveries like a broker (batch over ``topic_limit``, or ``reject``)."""

    produce_limit: int | None = None
    topic_limit: int | None = None
    refuse: ErrorFor | None = None
    reject: ErrorFor | None = None
    clock: Callable[[], float] | None = None
    log: list[tuple[str, int]] = field(default_factory=list)
    produced: list[Produced] = field(default_factory=list)
    acked: list[Produced] = field(default_factory=list)
    produce_times: list[float] = field(default_factory=list)
    _open: list[tuple[int, Produced, asyncio.Future[Any]]] = field(default_factory=list)

    async def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *args: Any,
        headers: Headers | None = None,
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        n = len(self.produced)
        rec = Produced(topic, key, value, list(headers or []))
        self.produced.append(rec)
        self.log.append(("produce", n))
        if self.clock is not None:
            self.produce_times.append(self.clock())
        if self.produce_limit is not None and (
            librdkafka_size(key, value, rec.headers) > self.produce_limit
        ):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        refused = self.refuse(n, rec) if self.refuse else None
        if refused is not None:
            raise KafkaException(refused)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._open:
            asyncio.get_running_loop().call_soon(self._deliver)
        self._open.append((n, rec, future))
        return future

    def _deliver(self) -> None:
        batch, self._open = self._open, []
        total = sum(61 + librdkafka_size(r.key, r.value, r.headers) for _, r, _ in batch)
        for n, rec, future in batch:
            self.log.append(("ack", n))
            error = self.reject(n, rec) if self.reject else None
            if error is None and self.topic_limit is not None and total > self.topic_limit:
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
            if error is not None:
                future.set_exception(KafkaException(error))
            else:
                self.acked.append(rec)
                future.set_result(rec)


class Sleeps:
    """Injected sleep: records each delay and moves the fake clock, never really sleeps."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


def make_sink(
    producer: FakeProducer,
    *,
    metrics: Metrics | None = None,
    clock: FakeClock | None = None,
    sleeps: Sleeps | None = None,
    **kwargs: Any,
) -> DeadLetterSink:
    return DeadLetterSink(
        producer,
        TOPIC,
        backoff=kwargs.pop("backoff", Backoff(base_s=0.2, cap_s=30.0, rng=lambda: 0.5)),
        metrics=metrics,
        clock=clock or FakeClock(),
        wall=lambda: NOW,
        sleep=sleeps or Sleeps(clock),
        **kwargs,
    )


def letter(reason: str = "schema_violation", message: str = "amount is not a number") -> DeadLetter:
    return DeadLetter(reason=reason, message=message, field="amount")


def count(metrics: Metrics, error: str) -> float:
    value = metrics.registry.get_sample_value("xconv_dead_letter_errors_total", {"error": error})
    return value or 0.0


def entries(n: int, **message: Any) -> list[tuple[FakeMessage, DeadLetter]]:
    return [(FakeMessage(offset_=i, **message), letter()) for i in range(n)]


# --- batching ------------------------------------------------------------------------


async def test_a_batch_is_produced_whole_before_any_acknowledgement_is_awaited() -> None:
    producer = FakeProducer()
    await make_sink(producer).write(entries(200))
    assert producer.log == [("produce", i) for i in range(200)] + [("ack", i) for i in range(200)]
    assert [int(r.xconv["xconv.source.offset"]) for r in producer.acked] == list(range(200))
    assert {r.xconv["xconv.reason"] for r in producer.acked} == {"schema_violation"}
    assert {r.topic for r in producer.acked} == {TOPIC}


async def test_records_keep_the_original_key_value_and_headers() -> None:
    producer = FakeProducer()
    source = FakeMessage(headers_=[("traceparent", b"00-abc-01")])
    await make_sink(producer).write([(source, letter())])
    (rec,) = producer.acked
    assert (rec.key, rec.value) == (source.key_, source.value_)
    assert rec.headers[0] == ("traceparent", b"00-abc-01")
    view = decode_headers(rec.headers)
    assert view["source"] == {"topic": "purchases", "partition": 3, "offset": 42}
    assert "original" not in view  # only too_large records have one
    assert view["time"] == "2026-12-01T20:00:00.000Z"


def test_headers_given_as_a_mapping_or_text_become_bytes() -> None:
    class MappingHeaders(FakeMessage):
        def headers(self) -> dict[str, str | bytes | None]:  # type: ignore[override]
            return {"traceparent": "00-abc-01", "empty": None}

    built = build_headers(MappingHeaders(), letter(), NOW)
    assert built[:2] == [("traceparent", b"00-abc-01"), ("empty", b"")]
    assert all(isinstance(v, bytes) for _, v in built)


async def test_an_empty_batch_produces_nothing() -> None:
    producer = FakeProducer()
    await make_sink(producer).write([])
    assert producer.produced == []


# --- transient errors ----------------------------------------------------------------


async def test_transient_errors_retry_only_the_failed_records_then_succeed() -> None:
    metrics = Metrics()
    sleeps = Sleeps()
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    producer = FakeProducer(reject=lambda n, _: timed_out if n in (1, 3) else None)
    await make_sink(producer, metrics=metrics, sleeps=sleeps).write(entries(5))
    assert len(producer.produced) == 7  # 5, then only the 2 that failed
    assert [int(r.xconv["xconv.source.offset"]) for r in producer.produced[5:]] == [1, 3]
    assert sorted(int(r.xconv["xconv.source.offset"]) for r in producer.acked) == [0, 1, 2, 3, 4]
    assert count(metrics, "retriable") == 2
    assert sleeps.delays == [pytest.approx(0.1)]  # Backoff(0.2) attempt 1, rng 0.5


async def test_a_full_queue_at_produce_is_retried() -> None:
    calls: list[int] = []

    def refuse(n: int, _: Produced) -> KafkaError | None:
        calls.append(n)
        return None

    class QueueFull(FakeProducer):
        async def produce(self, topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            if not calls:
                calls.append(-1)
                raise TransportError("dead-letter producer queue still full")
            return await super().produce(topic, *args, **kwargs)

    producer = QueueFull(refuse=refuse)
    await make_sink(producer).write(entries(1))
    assert len(producer.acked) == 1


async def test_a_queue_that_stays_full_stops_the_round_instead_of_waiting_per_record() -> None:
    full: list[int] = []

    class StaysFull(FakeProducer):
        async def produce(self, topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            if len(self.produced) == 3 and len(full) < 2:  # full twice at the 4th record
                full.append(len(self.produced))
                raise TransportError("dead-letter producer queue still full after 5.0 s")
            return await super().produce(topic, *args, **kwargs)

    metrics = Metrics()
    sleeps = Sleeps()
    producer = StaysFull()
    await make_sink(producer, metrics=metrics, sleeps=sleeps).write(entries(10))
    assert full == [3, 3]  # one refusal per round, not one per remaining record
    assert len(sleeps.delays) == 2
    assert sorted(int(r.xconv["xconv.source.offset"]) for r in producer.acked) == list(range(10))
    assert count(metrics, "retriable") == 7 + 7


async def test_attempt_2000_does_not_overflow_and_every_delay_is_capped() -> None:
    sleeps = Sleeps()
    transport = KafkaError(KafkaError._TRANSPORT)
    producer = FakeProducer(reject=lambda n, _: transport if n < 2000 else None)
    backoff = Backoff(base_s=0.2, cap_s=30.0, rng=lambda: 0.999)
    await make_sink(producer, sleeps=sleeps, backoff=backoff).write(entries(1))
    assert len(producer.produced) == 2001
    assert len(producer.acked) == 1
    assert len(sleeps.delays) == 2000
    assert max(sleeps.delays) == pytest.approx(30.0 * 0.999)
    assert sleeps.delays[0] == pytest.approx(0.2 * 0.999)


async def test_an_unexpected_exception_is_not_retried() -> None:
    class Broken(FakeProducer):
        async def produce(self, topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            raise TypeError("a bug")

    with pytest.raises(TypeError):
        await make_sink(Broken()).write(entries(1))


# --- too large -----------------------------------------------------------------------


async def test_precheck_truncates_a_value_over_max_record_bytes_before_producing() -> None:
    metrics = Metrics()
    value = b"x" * 1_050_000
    producer = FakeProducer(produce_limit=1_000_000)
    source = FakeMessage(value_=value, headers_=[("traceparent", b"00-abc-01")])
    await make_sink(producer, metrics=metrics).write([(source, letter())])
    (rec,) = producer.produced  # never refused: the pre-check rewrote it first
    assert producer.acked == [rec]
    assert librdkafka_size(rec.key, rec.value, rec.headers) <= 1_000_000
    assert rec.value is not None
    assert value.startswith(rec.value)
    assert len(rec.value) > 990_000
    assert rec.key == source.key_
    assert ("traceparent", b"00-abc-01") in rec.headers
    h = rec.xconv
    assert h["xconv.reason"] == "too_large"
    assert "truncated" in h["xconv.message"]
    assert h["xconv.original.reason"] == "schema_violation"
    assert h["xconv.original.message"] == "amount is not a number"
    assert h["xconv.value.size"] == "1050000"
    assert decode_headers(rec.headers)["original"] == {
        "reason": "schema_violation",
        "message": "amount is not a number",
        "value_size": 1_050_000,
    }
    assert [h[k] for k in SOURCE_HEADERS] == ["purchases", "3", "42"]
    assert count(metrics, "too_large") == 1


async def test_broker_refusal_rewrites_the_record_with_its_value_omitted() -> None:
    metrics = Metrics()
    producer = FakeProducer(produce_limit=1_000_000, topic_limit=50_000)
    source = FakeMessage(value_=b"y" * 100_000, headers_=[("traceparent", b"t")])
    await make_sink(producer, metrics=metrics).write([(source, letter())])
    first, second = producer.produced
    assert first.value == source.value_
    assert first.xconv["xconv.reason"] == "schema_violation"
    assert producer.acked == [second]
    assert second.value == b""
    assert second.key == source.key_
    assert ("traceparent", b"t") in second.headers
    assert second.xconv["xconv.reason"] == "too_large"
    assert "omitted" in second.xconv["xconv.message"]
    assert second.xconv["xconv.value.size"] == "100000"
    assert count(metrics, "too_large") == 1


async def test_produce_time_refusal_is_rewritten_too() -> None:
    # max_record_bytes set above the producer's real limit: librdkafka refuses at produce().
    producer = FakeProducer(produce_limit=10_000)
    source = FakeMessage(value_=b"z" * 20_000)
    await make_sink(producer, max_record_bytes=1_000_000).write([(source, letter())])
    assert len(producer.produced) == 2
    (rec,) = producer.acked
    assert (rec.value, rec.xconv["xconv.reason"]) == (b"", "too_large")


async def test_a_batch_too_large_for_the_topic_is_retried_record_by_record_unchanged() -> None:
    producer = FakeProducer(topic_limit=30_000)
    batch = entries(10, value_=b"v" * 5_000)
    await make_sink(producer).write(batch)
    assert len(producer.acked) == 10
    assert all(r.value == b"v" * 5_000 for r in producer.acked)
    assert {r.xconv["xconv.reason"] for r in producer.acked} == {"schema_violation"}
    # The whole batch once, then each record alone: a record is never acked in a crowd.
    assert producer.log[:20] == [("produce", i) for i in range(10)] + [
        ("ack", i) for i in range(10)
    ]
    assert producer.log[20:] == [(kind, n) for n in range(10, 20) for kind in ("produce", "ack")]


async def test_original_headers_are_dropped_when_they_alone_do_not_fit() -> None:
    producer = FakeProducer(produce_limit=1_000_000)
    source = FakeMessage(headers_=[("blob", b"h" * 1_200_000)])
    await make_sink(producer).write([(source, letter())])
    (rec,) = producer.produced
    assert producer.acked == [rec]
    assert all(k.startswith("xconv.") for k, _ in rec.headers)
    assert rec.key == source.key_
    assert rec.value == b""
    assert rec.xconv["xconv.reason"] == "too_large"


async def test_the_key_is_dropped_when_it_does_not_fit() -> None:
    producer = FakeProducer(produce_limit=1_000_000)
    source = FakeMessage(key_=b"k" * 1_100_000, headers_=[("traceparent", b"t")])
    await make_sink(producer).write([(source, letter())])
    (rec,) = producer.acked
    assert rec.key is None
    assert ("traceparent", b"t") in rec.headers  # the original headers fit: kept
    assert rec.xconv["xconv.value.size"] == str(len(source.value_ or b""))


async def test_a_record_that_cannot_be_made_to_fit_is_permanent() -> None:
    metrics = Metrics()
    producer = FakeProducer()
    huge_field = DeadLetter(reason="schema_violation", message="m", field="f" * 1_100_000)
    with pytest.raises(DeadLetterUnavailable, match=TOPIC):
        await make_sink(producer, metrics=metrics).write([(FakeMessage(), huge_field)])
    assert producer.produced == []
    assert count(metrics, "permanent") == 1


async def test_a_topic_refusing_even_the_smallest_rewrite_is_permanent_not_retried() -> None:
    producer = FakeProducer(topic_limit=300)
    with pytest.raises(DeadLetterUnavailable, match="MSG_SIZE_TOO_LARGE"):
        await make_sink(producer).write(entries(1))
    assert 2 <= len(producer.produced) <= 5  # the original, then each smaller rewrite once
    assert producer.acked == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.integers(0, 30_000),
    key=st.integers(0, 3_000),
    header=st.integers(0, 5_000),
    message=st.integers(0, 3_000),
    limit=st.integers(1_500, 40_000),
)
def test_precheck_output_always_fits_librdkafka(
    value: int, key: int, header: int, message: int, limit: int
) -> None:
    """Whatever the sizes, the record produced fits, or the write refuses loudly."""
    producer = FakeProducer(produce_limit=limit)
    source = FakeMessage(value_=b"v" * value, key_=b"k" * key, headers_=[("h", b"h" * header)])
    dead = DeadLetter(reason="schema_violation", message="m" * message)
    sink = make_sink(producer, max_record_bytes=limit)
    try:
        asyncio.run(sink.write([(source, dead)]))
    except DeadLetterUnavailable:
        assert producer.produced == []
        return
    (rec,) = producer.produced
    assert producer.acked == [rec]
    assert librdkafka_size(rec.key, rec.value, rec.headers) <= record_size(
        rec.key, rec.value, rec.headers
    )
    assert record_size(rec.key, rec.value, rec.headers) <= limit
    original = record_size(source.key_, source.value_, build_headers(source, dead, NOW))
    # Rewritten exactly when the original is over the limit, and then never larger.
    assert (rec.xconv["xconv.reason"] == "too_large") == (original > limit)
    if original <= limit:
        assert (rec.key, rec.value) == (source.key_, source.value_)


# --- permanent errors ----------------------------------------------------------------

PERMANENT = [
    KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.TOPIC_EXCEPTION),
    KafkaError(KafkaError._FATAL, fatal=True),
    KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True),
]


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: e.name())
@pytest.mark.parametrize("phase", ["produce", "delivery"])
async def test_permanent_errors_raise_dead_letter_unavailable_at_once(
    error: KafkaError, phase: str
) -> None:
    metrics = Metrics()

    def fail(n: int, rec: Produced) -> KafkaError:
        return error

    producer = FakeProducer(refuse=fail) if phase == "produce" else FakeProducer(reject=fail)
    source = FakeMessage(value_=b'{"email":"alice@example.com"}', key_=b"alice")
    with pytest.raises(DeadLetterUnavailable) as raised:
        await make_sink(producer, metrics=metrics).write([(source, letter())])
    text = str(raised.value)
    assert TOPIC in text
    assert error.name() in text
    assert "alice" not in text
    assert len(producer.produced) == 1
    assert count(metrics, "permanent") == 1
    assert count(metrics, "retriable") == 0


async def test_unknown_topic_is_retried_inside_the_grace_then_raises() -> None:
    clock = FakeClock()
    metrics = Metrics()
    unknown = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    producer = FakeProducer(reject=lambda n, _: unknown, clock=clock)
    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=lambda: 1.0)
    sink = make_sink(
        producer, metrics=metrics, clock=clock, backoff=backoff, unknown_topic_grace_s=60.0
    )
    with pytest.raises(DeadLetterUnavailable, match="UNKNOWN_TOPIC_OR_PART"):
        await sink.write(entries(1))
    first, before_last, last = producer.produce_times[0], *producer.produce_times[-2:]
    assert before_last - first <= 60.0 < last - first
    assert len(producer.produced) > 5
    assert count(metrics, "retriable") == len(producer.produced) - 1
    assert count(metrics, "permanent") == 1


async def test_unknown_topic_that_appears_inside_the_grace_is_written() -> None:
    clock = FakeClock()
    unknown = KafkaError(KafkaError._UNKNOWN_TOPIC)
    producer = FakeProducer(reject=lambda n, _: unknown if n < 3 else None)
    await make_sink(producer, clock=clock, unknown_topic_grace_s=60.0).write(entries(1))
    assert len(producer.acked) == 1


async def test_the_grace_counts_from_each_records_own_first_error() -> None:
    clock = FakeClock()
    unknown = KafkaError(KafkaError._UNKNOWN_TOPIC)
    # The first write sees the topic missing, then recovers; a later write starts afresh.
    producer = FakeProducer(reject=lambda n, _: unknown if n in (0, 1, 3, 4) else None)
    sink = make_sink(producer, clock=clock, unknown_topic_grace_s=5.0)
    await sink.write(entries(1))
    clock.advance(1_000.0)
    await sink.write(entries(1))
    assert len(producer.acked) == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KafkaError(KafkaError._MSG_TIMED_OUT), ErrorClass.RETRIABLE),
        (KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION), ErrorClass.RETRIABLE),
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), ErrorClass.TOO_LARGE),
        (KafkaError(KafkaError.RECORD_LIST_TOO_LARGE), ErrorClass.TOO_LARGE),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), ErrorClass.UNKNOWN_TOPIC),
        (KafkaError(KafkaError._UNKNOWN_TOPIC), ErrorClass.UNKNOWN_TOPIC),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), ErrorClass.PERMANENT),
        (KafkaError(KafkaError._MSG_TIMED_OUT, fatal=True), ErrorClass.PERMANENT),
    ],
    ids=lambda v: v.name() if isinstance(v, KafkaError) else str(v),
)
def test_classify(error: KafkaError, expected: ErrorClass) -> None:
    assert classify(KafkaException(error)) == (expected, error.name())


# --- PII ----------------------------------------------------------------------------


def _redact(text: str) -> str:
    return text.replace("alice@example.com", "[email]")


async def test_message_and_errors_are_redacted_before_they_become_headers() -> None:
    producer = FakeProducer()
    dead = DeadLetter(
        reason="api_rejected",
        message="hashed_email alice@example.com is not a hash",
        errors=[{"code": "INVALID", "message": "bad alice@example.com", "parameter": "p"}],
    )
    await make_sink(producer, redact=_redact).write([(FakeMessage(), dead)])
    (rec,) = producer.acked
    assert rec.xconv["xconv.message"] == "hashed_email [email] is not a hash"
    errors = json.loads(rec.xconv["xconv.x.errors"])
    assert errors == [{"code": "INVALID", "message": "bad [email]", "parameter": "p"}]
    assert not any(b"alice" in v for _, v in rec.headers)


async def test_a_too_large_record_keeps_only_redacted_text() -> None:
    producer = FakeProducer()
    dead = DeadLetter(reason="schema_violation", message="from alice@example.com")
    await make_sink(producer, redact=_redact, max_record_bytes=2_000).write(
        [(FakeMessage(value_=b"v" * 5_000), dead)]
    )
    (rec,) = producer.acked
    assert rec.xconv["xconv.original.message"] == "from [email]"
    assert not any(b"alice" in v for _, v in rec.headers)


# --- the documented record format ----------------------------------------------------


def _schema_view(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {k: v.decode() for k, v in headers}


async def test_too_large_records_match_the_dead_letter_schema() -> None:
    check = Draft202012Validator(json.loads(SCHEMA.read_text()))
    producer = FakeProducer(topic_limit=20_000)
    batch = [
        (FakeMessage(value_=b"v" * 30_000, headers_=[("traceparent", b"t")]), letter()),
        (FakeMessage(value_=b"w" * 100, offset_=7), letter()),
    ]
    await make_sink(producer, max_record_bytes=10_000).write(batch)
    assert len(producer.acked) == 2
    for rec in producer.produced:
        assert not list(check.iter_errors(_schema_view(rec.headers)))
    too_large = [r for r in producer.acked if r.xconv["xconv.reason"] == "too_large"]
    assert len(too_large) == 1


def test_the_architecture_doc_names_every_header_and_error_class() -> None:
    """docs/architecture.md's dead-letter section is checked against the schema and code."""
    doc = (SCHEMA.parents[1] / "docs" / "architecture.md").read_text()
    section = doc.split("## Dead-letter records", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(xconv\.[a-z_.]+?)`", section)) - {"xconv.source.*"}
    documented = set(json.loads(SCHEMA.read_text())["properties"])
    assert named == documented
    for kind in ErrorClass:
        if kind is not ErrorClass.UNKNOWN_TOPIC:  # documented as its error names
            assert f'{{error="{kind.value}"}}' in section
