"""DeadLetterSink and HeaderProducer on the real broker: sizes, batches, missing topics.

Kafka's own limits are the point here (librdkafka's ``message.max.bytes``, the topic's
``max.message.bytes``, metadata for a topic that does not exist), so nothing is faked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from consumer.delivery.dlq import (
    SOURCE_HEADERS,
    DeadLetter,
    DeadLetterSink,
    HeaderProducer,
    decode_headers,
)
from consumer.delivery.retry import Backoff
from consumer.errors import DeadLetterUnavailable, RetryableError
from consumer.observability.metrics import Metrics
from consumer.samples import SampleGenerator
from devtools.kafka import BrokerHandle, free_port
from tests.fixtures.engine import EngineEnv, wait_until
from tests.fixtures.kafka import CreateTopic, ProduceMessages, ReadMessages
from tests.fixtures.sandbox import SandboxHandle

BIG = 1_050_000  # over librdkafka's default message.max.bytes and the broker's 1 MiB + 12


def producer_conf(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """The engine's dead-letter producer settings (acks=all, idempotent), plus ``extra``."""
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        **extra,
    }


def errors(metrics: Metrics, error: str) -> float:
    value = metrics.registry.get_sample_value("xconv_dead_letter_errors_total", {"error": error})
    return value or 0.0


def letter() -> DeadLetter:
    return DeadLetter(reason="schema_violation", message="amount is not a number", field="amount")


def sink(producer: HeaderProducer, topic: str, metrics: Metrics, **kwargs: Any) -> DeadLetterSink:
    return DeadLetterSink(
        producer, topic, backoff=Backoff(base_s=0.05, cap_s=1.0), metrics=metrics, **kwargs
    )


def produce_big(bootstrap: str, topic: str, value: bytes) -> tuple[int, int]:
    """A source record over 1 MB (the topic and this producer allow 2 MB); its position."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    where: list[tuple[int, int]] = []

    def delivered(err: KafkaError | None, msg: Any) -> None:
        assert err is None, err
        where.append((msg.partition(), msg.offset()))

    producer.produce(
        topic,
        value=value,
        key=b"order-1",
        headers=[("traceparent", b"00-ab-01")],
        on_delivery=delivered,
    )
    assert producer.flush(30) == 0
    (position,) = where
    return position


@pytest.mark.kafka
async def test_a_1_05_mb_value_arrives_as_a_too_large_record_on_a_default_topic(
    kafka_bootstrap: str, create_topic: CreateTopic, read_messages: ReadMessages
) -> None:
    source_topic = create_topic(1, config={"max.message.bytes": "2000000"})
    dlq = create_topic(1)  # default settings: the broker takes up to 1 MiB + 12 bytes
    value = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)
    await asyncio.to_thread(produce_big, kafka_bootstrap, source_topic, value)
    (source,) = await asyncio.to_thread(read_messages, source_topic, 1)
    assert len(source.value() or b"") == BIG

    metrics = Metrics()
    producer = HeaderProducer(producer_conf(kafka_bootstrap), metrics=metrics)
    try:
        await asyncio.wait_for(sink(producer, dlq, metrics).write([(source, letter())]), 60)
    finally:
        await producer.close()

    (record,) = await asyncio.to_thread(read_messages, dlq, 1)
    kept = record.value() or b""
    assert 0 < len(kept) <= 1_000_000
    assert value.startswith(kept)
    assert record.key() == b"order-1"
    headers = dict(record.headers() or [])
    assert headers["traceparent"] == b"00-ab-01"
    assert headers["xconv.value.size"] == str(BIG).encode()
    assert headers["xconv.original.reason"] == b"schema_violation"
    assert [headers[h] for h in SOURCE_HEADERS] == [
        source_topic.encode(),
        str(source.partition()).encode(),
        str(source.offset()).encode(),
    ]
    view = decode_headers(record.headers())
    assert view["reason"] == "too_large"
    assert view["source"]["topic"] == source_topic
    assert errors(metrics, "too_large") == 1
    assert errors(metrics, "retriable") == 0


@pytest.mark.kafka
async def test_a_record_the_topic_refuses_as_too_large_is_rewritten_without_its_value(
    kafka_bootstrap: str,
    create_topic: CreateTopic,
    produce_messages: ProduceMessages,
    read_messages: ReadMessages,
) -> None:
    source_topic = create_topic(1)
    dlq = create_topic(1, config={"max.message.bytes": "100000"})
    await asyncio.to_thread(produce_messages, source_topic, [b"v" * 200_000], key=b"k")
    (source,) = await asyncio.to_thread(read_messages, source_topic, 1)

    metrics = Metrics()
    producer = HeaderProducer(producer_conf(kafka_bootstrap), metrics=metrics)
    try:
        # The pre-check passes it (under 1,000,000 bytes): the broker's own limit answers.
        await asyncio.wait_for(sink(producer, dlq, metrics).write([(source, letter())]), 60)
    finally:
        await producer.close()

    (record,) = await asyncio.to_thread(read_messages, dlq, 1)
    view = decode_headers(record.headers())
    assert view["reason"] == "too_large"
    assert record.value() in (None, b"")
    assert record.key() == b"k"
    assert dict(record.headers() or [])["xconv.value.size"] == b"200000"
    assert errors(metrics, "too_large") >= 1
    assert errors(metrics, "permanent") == 0


@pytest.mark.kafka
async def test_a_batch_of_200_records_is_acknowledged(
    kafka_bootstrap: str,
    create_topic: CreateTopic,
    produce_messages: ProduceMessages,
    read_messages: ReadMessages,
) -> None:
    source_topic = create_topic(3)
    dlq = create_topic(3)
    values = [f'{{"order_id":"o-{i}"}}'.encode() for i in range(200)]
    await asyncio.to_thread(produce_messages, source_topic, values)
    sources = await asyncio.to_thread(read_messages, source_topic, 200)

    metrics = Metrics()
    producer = HeaderProducer(producer_conf(kafka_bootstrap), metrics=metrics)
    try:
        started = time.monotonic()
        await asyncio.wait_for(
            sink(producer, dlq, metrics).write([(m, letter()) for m in sources]), 60
        )
        elapsed = time.monotonic() - started
    finally:
        await producer.close()

    records = await asyncio.to_thread(read_messages, dlq, 200)
    seen = {
        (v["source"]["partition"], v["source"]["offset"])
        for v in (decode_headers(r.headers()) for r in records)
    }
    assert seen == {(m.partition(), m.offset()) for m in sources}
    assert sorted(r.value() or b"" for r in records) == sorted(values)
    assert errors(metrics, "retriable") == 0
    print(f"200 dead letters acknowledged in {elapsed * 1000:.1f} ms")


@pytest.mark.kafka
async def test_a_topic_that_does_not_exist_raises_after_the_grace_period(
    kafka_bootstrap: str,
) -> None:
    missing = f"t-missing-dlq-{uuid.uuid4().hex[:10]}"
    metrics = Metrics()
    conf = producer_conf(
        kafka_bootstrap,
        **{"allow.auto.create.topics": False, "topic.metadata.propagation.max.ms": 1000},
    )
    producer = HeaderProducer(conf, metrics=metrics)
    source = _Source(value=b'{"email":"alice@example.com"}')
    started = time.monotonic()
    try:
        with pytest.raises(DeadLetterUnavailable) as raised:
            await asyncio.wait_for(
                sink(producer, missing, metrics, unknown_topic_grace_s=2.0).write(
                    [(source, letter())]
                ),
                60,
            )
    finally:
        await producer.close(wait_s=1.0)
    elapsed = time.monotonic() - started
    assert missing in str(raised.value)
    assert "UNKNOWN_TOPIC" in str(raised.value)
    assert "alice" not in str(raised.value)
    assert elapsed > 2.0  # retried through the grace period first
    assert errors(metrics, "retriable") >= 1
    assert errors(metrics, "permanent") == 1


class _Source:
    """A source message that never was in Kafka: only the sink's view of one."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def topic(self) -> str | None:
        return "purchases"

    def partition(self) -> int | None:
        return 0

    def offset(self) -> int | None:
        return 7

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return None


async def test_header_producer_reports_librdkafka_errors_and_bounds_a_full_queue() -> None:
    """No broker on purpose: librdkafka's error_cb and local queue need none."""
    metrics = Metrics()
    seen: list[KafkaError] = []
    reported = asyncio.Event()

    def on_error(err: KafkaError) -> None:
        seen.append(err)
        reported.set()

    producer = HeaderProducer(
        {
            "bootstrap.servers": f"127.0.0.1:{free_port()}",  # nothing listens there
            "queue.buffering.max.messages": 1,
            "message.timeout.ms": 1000,
            "reconnect.backoff.ms": 50,
            "log_level": 0,
        },
        on_error=on_error,
        metrics=metrics,
        queue_full_wait_s=0.3,
    )
    try:
        first = await producer.produce("t", value=b"1")
        started = time.monotonic()
        with pytest.raises(RetryableError, match="queue still full"):
            await producer.produce("t", value=b"2")
        assert 0.3 <= time.monotonic() - started < 5.0
        await asyncio.wait_for(reported.wait(), 20)
        assert not any(e.fatal() for e in seen)
        name = seen[0].name()
        counted = metrics.registry.get_sample_value(
            "xconv_kafka_errors_total", {"client": "dead_letter", "error": name}
        )
        assert counted is not None
        assert counted >= 1
        with pytest.raises(KafkaException, match=r"MSG_TIMED_OUT|TRANSPORT|ALL_BROKERS_DOWN"):
            await asyncio.wait_for(first, 20)
    finally:
        await producer.close(wait_s=2.0)


@pytest.mark.kafka
@pytest.mark.sandbox
@pytest.mark.timeout(240)
def test_the_engine_dead_letters_a_1_05_mb_event_and_commits_past_it(
    kafka_broker: BrokerHandle, create_topic: CreateTopic, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Issue 9 item 5 end to end: the partition's offset moves past the oversized event."""
    topic = create_topic(3, config={"max.message.bytes": "2000000"})
    dlq = create_topic(3, name=f"{topic}.dlq")  # default settings
    env = EngineEnv(kafka_broker, topic, dlq, f"xconv-test-{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        gen = SampleGenerator(seed=23)
        produced = env.produce(gen.events(60))
        big = produce_big(env.bootstrap, topic, b"x" * BIG)  # invalid JSON, 1.05 MB
        produced.merge(env.produce(gen.events(60)))
        ends = dict(produced.ends)
        ends[big[0]] = max(ends.get(big[0], 0), big[1] + 1)
        engine = env.start(env.config(sandbox))
        tail = env.dead_letters()
        probe = env.probe()

        def done() -> bool:
            ids = sandbox.conversion_ids()
            tail.catch_up()
            dead = tail.by_source()
            return (
                all(cid in ids for cid in produced.valid.values())
                and set(produced.invalid) <= set(dead)
                and big in dead
                and all(probe.committed().get(p, 0) == end for p, end in ends.items())
            )

        wait_until(done, 150, "delivery, dead letters and commits past the 1.05 MB event")
        assert engine.terminate() == 0, engine.log_tail()
        (record,) = tail.by_source()[big]
        assert record.headers["reason"] == "too_large"
        assert record.value is not None
        assert 0 < len(record.value) <= 1_000_000
        assert record.key == b"order-1"
    finally:
        env.close()
