"""``xconv produce-sample`` against the real broker: what it says it produced is on the topic."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from consumer.cli import main
from consumer.transform import RouteSettings, RoutingSettings, Transformer, TransformSettings
from consumer.transform.types import Conversion
from tests.fixtures.kafka import CreateTopic, ReadMessages

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def test_produces_count_with_known_invalid_share(
    kafka_bootstrap: str,
    create_topic: CreateTopic,
    read_messages: ReadMessages,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = create_topic(partitions=3)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    code = main(
        [
            "produce-sample",
            "--bootstrap", kafka_bootstrap,
            "--topic", topic,
            "--count", "60",
            "--preset", "mix",
            "--invalid-share", "0.2",
            "--seed", "7",
        ]
    )  # fmt: skip
    assert code == 0
    summary = orjson.loads(out.getvalue())
    assert summary["produced"] == 60
    assert summary["failed"] == 0
    assert sum(summary["per_preset"].values()) == 60
    assert set(summary["per_preset"]) <= {"canonical", "segment", "ga4", "shopify"}
    assert 0 < summary["invalid"] < 60
    messages = read_messages(topic, 60, timeout=60)
    assert len(messages) == 60
    routing = RoutingSettings(
        default=RouteSettings(account_id="18ce552mlaq", pixel_id="oka17", event_id="ol288")
    )
    accepted = 0
    for preset in ("canonical", "segment", "ga4", "shopify"):
        transformer = Transformer(TransformSettings(preset=preset), routing)
        for message in messages:
            value = message.value()
            assert value is not None
            if isinstance(transformer.transform(value), Conversion):
                accepted += 1
    # each valid message is accepted by exactly its own preset's transformer
    assert accepted == 60 - summary["invalid"]
    keys = {message.key() for message in messages}
    assert None not in keys


def test_subprocess_with_rate_and_no_key(
    kafka_bootstrap: str, create_topic: CreateTopic, read_messages: ReadMessages
) -> None:
    topic = create_topic(partitions=1)
    proc = subprocess.run(
        [
            sys.executable, "-m", "consumer", "produce-sample",
            "--bootstrap", kafka_bootstrap,
            "--topic", topic,
            "--count", "20",
            "--preset", "shopify",
            "--invalid-share", "0",
            "--rate", "200",
            "--key-by", "none",
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=90,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads(proc.stdout)
    assert summary == {**summary, "produced": 20, "invalid": 0, "per_preset": {"shopify": 20}}
    messages = read_messages(topic, 20, timeout=60)
    assert [m.key() for m in messages] == [None] * 20


def test_bad_arguments_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "consumer", "produce-sample", "--bootstrap", "127.0.0.1:1",
         "--topic", "t", "--count", "5", "--invalid-share", "1.5"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert b"invalid-share" in proc.stderr
