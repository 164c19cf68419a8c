"""Engine v2 and a record too big to dead-letter as it is (issue 9, item 5).

The source topic accepts records up to 2 MB; the dead-letter topic and the engine's
producer keep Kafka's defaults (about 1 MB). A 1.05 MB invalid event must still be
dead-lettered, with reason ``too_large``, its value omitted or truncated, its source
position and original size in headers, and the partition must commit past it. On the
engine before issue 9 the producer's ``MSG_SIZE_TOO_LARGE`` was retried forever and
the partition never committed past the record.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from consumer.samples import SampleGenerator
from devtools.kafka import BrokerHandle
from tests.fixtures.engine import EngineEnv, wait_until
from tests.fixtures.kafka import CreateTopic
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

BIG = 1_101_004  # 1.05 MiB: over the producer's default message.max.bytes (1,000,000)
SOURCE_MAX_BYTES = 2 * 1024 * 1024


def header_dict(raw: Any) -> dict[str, bytes]:
    """librdkafka's header list as a dict of bytes (the last value of a repeated name)."""
    out: dict[str, bytes] = {}
    for name, value in raw or []:
        out[str(name)] = value if isinstance(value, bytes) else str(value or "").encode()
    return out


def read_raw(bootstrap: str, topic: str) -> list[tuple[bytes | None, dict[str, bytes]]]:
    """Every record of ``topic`` up to its end offsets now: (value, headers as a dict)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"xconv-test-raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        done = {p: 0 for p in partitions}
        out: list[tuple[bytes | None, dict[str, bytes]]] = []
        while any(done[p] < ends[p] for p in partitions):
            batch = consumer.consume(100, 5.0)
            if not batch:
                raise AssertionError(f"could not read {topic} up to {ends}")
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"reading {topic}: {err}")
                done[msg.partition() or 0] = (msg.offset() or 0) + 1
                out.append((msg.value(), header_dict(msg.headers())))
        return out
    finally:
        consumer.close()


@pytest.mark.timeout(240)
def test_record_too_large_for_the_dead_letter_producer_is_dead_lettered_as_too_large(
    kafka_broker: BrokerHandle,
    create_topic: CreateTopic,
    sandbox: SandboxHandle,
    tmp_path: Path,
) -> None:
    topic = create_topic(3, config={"max.message.bytes": str(SOURCE_MAX_BYTES)})
    dlq = create_topic(3, name=f"{topic}.dlq")  # Kafka's defaults
    env = EngineEnv(kafka_broker, topic, dlq, f"xconv-test-{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        gen = SampleGenerator(seed=951)
        produced = env.produce(gen.events(50), id_prefix="before", partition=0)
        # Not JSON (an unterminated string): the transform rejects it, so it must be
        # dead-lettered; it is far too big to go out as it is.
        prefix = b'{"event_type": "purchase", "note": "'
        value = prefix + b"x" * (BIG - len(prefix))
        assert len(value) == BIG
        producer = Producer(
            {"bootstrap.servers": env.bootstrap, "message.max.bytes": SOURCE_MAX_BYTES + 1024}
        )
        positions: list[tuple[int, int]] = []

        def acked(err: KafkaError | None, msg: object) -> None:
            assert err is None, err
            positions.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

        producer.produce(topic, value=value, key=b"big", partition=0, on_delivery=acked)
        assert producer.flush(30) == 0
        big_at = positions[0]
        produced.values[big_at] = value
        produced.invalid[big_at] = "too_large"
        produced.merge(env.produce(gen.events(50), id_prefix="after", partition=0))

        engine = env.start(env.config(sandbox))
        wanted = set(produced.valid.values())
        wait_until(
            lambda: wanted <= set(sandbox.conversion_ids()),
            90,
            "the valid events around the big one",
            on_timeout=progress(sandbox, engine),
        )

        def dead_lettered() -> list[tuple[bytes | None, dict[str, bytes]]]:
            return [
                (v, h)
                for v, h in read_raw(env.bootstrap, dlq)
                if h.get("xconv.source.offset") == str(big_at[1]).encode()
            ]

        records = wait_until(
            dead_lettered, 90, "the big record's dead letter", on_timeout=engine.log_tail
        )
        assert len(records) == 1, [h for _, h in records]
        dead_value, headers = records[0]
        assert headers["xconv.reason"] == b"too_large", headers
        assert headers["xconv.source.topic"] == topic.encode()
        assert headers["xconv.source.partition"] == str(big_at[0]).encode()
        assert headers["xconv.value.size"] == str(BIG).encode()
        assert dead_value is None or len(dead_value) < 1_000_000
        if dead_value:
            assert value.startswith(dead_value)  # truncated, never altered
        # The partition commits past the big record: to its end.
        wait_until(committed_at_end(env.probe(), produced), 60, "commits past the big record")
        assert engine.terminate() == 0, engine.log_tail()
    finally:
        env.close()
