"""The real Kafka broker from devtools.kafka: start, topics, round trips, SCRAM, restarts.

Results are checked with Kafka's own CLI tools where it matters (topic layout, committed
offsets), so a bug in the client under test cannot hide itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from devtools import kafka as devkafka
from devtools.kafka import BrokerHandle, BrokerStartError, GroupOffset, KafkaBroker
from tests.fixtures.kafka import CreateTopic, ProduceMessages, ReadMessages

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def test_broker_answers_api_versions(kafka_broker: BrokerHandle) -> None:
    result = kafka_broker.run_tool("kafka-broker-api-versions")
    assert result.returncode == 0, result.stderr
    assert kafka_broker.bootstrap in result.stdout
    assert "Produce(0)" in result.stdout
    assert "OffsetCommit(8)" in result.stdout


def test_topic_is_created_with_its_partitions(
    kafka_broker: BrokerHandle, create_topic: CreateTopic
) -> None:
    topic = create_topic(partitions=5)
    result = kafka_broker.run_tool("kafka-topics", "--describe", "--topic", topic)
    assert result.returncode == 0, result.stderr
    assert "PartitionCount: 5" in result.stdout
    partitions = sorted(
        int(line.split("Partition:")[1].split()[0])
        for line in result.stdout.splitlines()
        if "Partition:" in line and "Leader:" in line
    )
    assert partitions == [0, 1, 2, 3, 4]
    listed = kafka_broker.run_tool("kafka-topics", "--list")
    assert topic in listed.stdout.split()


def test_create_topic_names_are_unique(create_topic: CreateTopic) -> None:
    first, second = create_topic(partitions=1), create_topic(partitions=1)
    assert first != second
    assert "test_create_topic_names_are_unique" in first


def test_messages_round_trip_with_key_and_headers(
    create_topic: CreateTopic, produce_messages: ProduceMessages, read_messages: ReadMessages
) -> None:
    topic = create_topic(partitions=3)
    values = [f"event-{i}".encode() for i in range(20)]
    acks = produce_messages(topic, values, key=b"user-1", headers={"source": b"test"})
    # One key -> one partition, offsets 0..19 in order.
    assert len({p for p, _ in acks}) == 1
    assert [o for _, o in acks] == list(range(20))
    messages = read_messages(topic, 20)
    assert [m.value() for m in messages] == values
    assert {m.key() for m in messages} == {b"user-1"}
    assert all(m.headers() == [("source", b"test")] for m in messages)


def test_explicit_partition_and_read_timeout(
    create_topic: CreateTopic, produce_messages: ProduceMessages, read_messages: ReadMessages
) -> None:
    topic = create_topic(partitions=4)
    acks = produce_messages(topic, [b"a", b"b"], partition=3)
    assert acks == [(3, 0), (3, 1)]
    with pytest.raises(TimeoutError, match="read 2 of 3"):
        read_messages(topic, 3, timeout=3)


def test_committed_offsets_are_visible_to_kafkas_own_tool(
    kafka_broker: BrokerHandle,
    kafka_bootstrap: str,
    create_topic: CreateTopic,
    produce_messages: ProduceMessages,
) -> None:
    topic = create_topic(partitions=3)
    counts = {0: 2, 1: 3, 2: 5}
    for partition, n in counts.items():
        produce_messages(topic, [b"x"] * n, partition=partition)
    group = f"g-{uuid.uuid4().hex[:10]}"
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < sum(counts.values()) and time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(10, timeout=1.0) if m.error() is None)
        assert seen == 10
        # Leave partition 2 two messages behind so the tool must report a real lag.
        consumer.commit(
            offsets=[
                TopicPartition(topic, 0, 2),
                TopicPartition(topic, 1, 3),
                TopicPartition(topic, 2, 3),
            ],
            asynchronous=False,
        )
    finally:
        consumer.close()

    offsets = kafka_broker.committed_offsets(group)
    assert offsets == {
        (topic, 0): GroupOffset(2, 2),
        (topic, 1): GroupOffset(3, 3),
        (topic, 2): GroupOffset(3, 5),
    }
    assert offsets[(topic, 2)].lag == 2


def test_committed_offsets_of_unknown_group_raise(kafka_broker: BrokerHandle) -> None:
    with pytest.raises(devkafka.KafkaToolError, match="cannot describe consumer group"):
        kafka_broker.committed_offsets(f"missing-{uuid.uuid4().hex[:8]}")


def test_scram_sha_256_produce_and_consume(
    kafka_sasl_config: dict[str, str], create_topic: CreateTopic
) -> None:
    topic = create_topic(partitions=2)
    acks = devkafka.produce_messages(kafka_sasl_config, topic, [b"s1", b"s2"], partition=1)
    assert acks == [(1, 0), (1, 1)]
    messages = devkafka.read_messages(kafka_sasl_config, topic, 2)
    assert [m.value() for m in messages] == [b"s1", b"s2"]


def test_scram_rejects_a_wrong_password(kafka_sasl_config: dict[str, str]) -> None:
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {
        **kafka_sasl_config,
        "sasl.password": "not-the-password",
        "error_cb": errors.append,
    }
    producer = Producer(conf)
    deadline = time.monotonic() + 30
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "a wrong SCRAM password produced no error"
    assert errors[0].code() == KafkaError._AUTHENTICATION


def test_group_describe_parser_reads_columns_by_name() -> None:
    output = (
        "\nConsumer group 'g' has no active members.\n\n"
        "GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID\n"
        "g     t     0         7              9              2   -           -    -\n"
        "g     t     1         -              4              -   -           -    -\n"
    )
    rows = devkafka.parse_group_describe(output)
    assert rows == {("t", 0): GroupOffset(7, 9), ("t", 1): GroupOffset(None, 4)}
    assert rows[("t", 1)].lag is None


@pytest.mark.slow
def test_stop_and_start_keep_data_ports_and_storage(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    try:
        broker.start()
        bootstrap, pid = broker.bootstrap, broker.pid
        assert pid is not None
        topic = devkafka.create_topic(bootstrap, "restart-me", 2)
        devkafka.produce_messages(bootstrap, topic, [b"before-stop"], partition=0)

        broker.stop()
        assert not broker.is_running()
        assert not _alive(pid), "java outlived stop()"

        broker.start()
        assert broker.bootstrap == bootstrap
        devkafka.produce_messages(bootstrap, topic, [b"after-restart"], partition=0)
        broker.kill()  # a crash: no controlled shutdown
        broker.start()
        values = [m.value() for m in devkafka.read_messages(bootstrap, topic, 2)]
        assert values == [b"before-stop", b"after-restart"]
        assert "Kafka Server started" in broker.log_tail(400)
    finally:
        broker.stop()


@pytest.mark.slow
def test_start_fails_loudly_with_the_broker_log_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = KafkaBroker(tmp_path / "kafka", port=taken.getsockname()[1])
        with pytest.raises(BrokerStartError, match="tail of") as info:
            broker.start(timeout=60)
        assert "Address already in use" in str(info.value)
        assert not broker.is_running()


@pytest.mark.slow
def test_cli_start_status_tool_stop(tmp_path: Path) -> None:
    workdir = tmp_path / "cli"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devtools.kafka", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=110,
            check=False,
        )

    started = cli("start", "--workdir", str(workdir))
    try:
        assert started.returncode == 0, started.stderr
        lines = dict(line.split("=", 1) for line in started.stdout.split() if "=" in line)
        assert lines["bootstrap"].startswith("127.0.0.1:")
        status = cli("status", "--workdir", str(workdir))
        assert status.returncode == 0
        state = json.loads(status.stdout)
        assert state["running"] is True
        assert state["bootstrap"] == lines["bootstrap"]
        made = cli("tool", "--workdir", str(workdir), "kafka-topics", "--create", "--topic", "c1")
        assert made.returncode == 0, made.stderr
        listed = cli("tool", "--workdir", str(workdir), "kafka-topics", "--list")
        assert "c1" in listed.stdout.split()
    finally:
        stopped = cli("stop", "--workdir", str(workdir))
    assert stopped.stdout.strip() == "stopped"
    assert cli("status", "--workdir", str(workdir)).returncode == 1
    assert not _alive(int(state["pid"]))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
