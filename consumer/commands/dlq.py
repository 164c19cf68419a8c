"""``xconv dlq show|replay``: inspect the dead-letter (or parking) topic, send its events again.

``--topic parking`` works on the parking topic instead: ``show`` prints each parked
record's account, reason, attempts and times; ``replay`` delivers the parked events now
(the service itself would at its accounts' next probes), parking again what still fails.

Replay reads the dead-letter topic from a start point (the beginning, or ``--since``)
up to the end offsets seen when it starts, re-transforms each original event with the
current configuration and delivers it like ``xconv run`` does. It is idempotent:
X de-duplicates by ``conversion_id``. Records that fail again are dead-lettered again
(after the snapshot, so one run never loops) and stay visible with ``xconv.replays``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from consumer.commands.common import add_config_argument, load_or_report
from consumer.commands.run import leave, leave_if_stuck
from consumer.delivery.dlq import decode_headers
from consumer.delivery.engine import Engine, consumer_config
from consumer.delivery.parking import decode_park
from consumer.observability.health import HealthState
from consumer.observability.logging import configure_logging
from consumer.observability.metrics import Metrics
from consumer.settings import Settings

HELP = "Inspect (show) or re-send (replay) the dead-letter topic."


TOPICS = ("dead-letter", "parking")


def _add_topic_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic",
        choices=TOPICS,
        default="dead-letter",
        help="kafka.dead_letter_topic (default) or kafka.parking_topic",
    )


def _topic(settings: Settings, which: str) -> str:
    return settings.kafka.parking_topic if which == "parking" else settings.kafka.dead_letter_topic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print each dead-letter record's reason (no event data)")
    add_config_argument(show)
    _add_topic_argument(show)
    show.add_argument("--limit", type=int, default=0, help="stop after N records (0: all)")
    replay = sub.add_parser("replay", help="re-transform and re-send dead-lettered events")
    add_config_argument(replay)
    _add_topic_argument(replay)
    replay.add_argument(
        "--since",
        type=datetime.fromisoformat,
        default=None,
        help="only records written at or after this ISO 8601 time (default: all)",
    )
    replay.add_argument(
        "--group",
        default=None,
        help="consumer group of this replay (default: a fresh one, so it starts at --since)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config, for_delivery=args.dlq_command == "replay")
    if settings is None:
        return 2
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    topic = _topic(settings, args.topic)
    if args.dlq_command == "show":
        return show(settings, args.limit, topic)
    code = asyncio.run(replay(settings, args.since, args.group, topic))
    leave(code)
    return code


def _snapshot(
    settings: Settings, group: str, since: datetime | None, topic: str
) -> dict[tuple[str, int], int]:
    """End offsets of ``topic`` now; with ``since``, pre-commit the start."""
    conf = consumer_config(settings, group)
    client = Consumer(conf)
    try:
        meta = client.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        ends: dict[tuple[str, int], int] = {}
        for p in partitions:
            _, high = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[(topic, p)] = high
        if since is not None and partitions:
            millis = int(since.timestamp() * 1000)
            starts = client.offsets_for_times(
                [TopicPartition(topic, p, millis) for p in partitions], timeout=10
            )
            commits = [
                TopicPartition(
                    t.topic, t.partition, t.offset if t.offset >= 0 else ends[(topic, t.partition)]
                )
                for t in starts
            ]
            client.commit(offsets=commits, asynchronous=False)
        return ends
    finally:
        client.close()


async def replay(
    settings: Settings, since: datetime | None, group: str | None, topic: str | None = None
) -> int:
    dlq_topic = topic or settings.kafka.dead_letter_topic
    group_id = group or f"{settings.kafka.group_id}.dlq-replay.{uuid.uuid4().hex[:8]}"
    ends = await asyncio.to_thread(_snapshot, settings, group_id, since, dlq_topic)
    if not any(ends.values()):
        sys.stderr.write(f"xconv: {dlq_topic} is empty, nothing to replay\n")
        return 0
    replay_settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": [dlq_topic]})}
    )
    engine = Engine(
        replay_settings,
        metrics=Metrics(),
        health=HealthState(stale_after_s=settings.observability.liveness_stale_s),
        group_id=group_id,
        stop_at_end_offsets=ends,
        consume_parking=False,  # the service reads the parking topic in its own group
    )
    started = time.monotonic()
    report = await engine.run()
    counts = engine.counts
    summary = {
        "replayed": counts["consumed"],
        "accepted": counts["accepted"],
        "dead_lettered_again": counts["dead_lettered"],
        "parked": counts["parked"],
        "seconds": round(time.monotonic() - started, 2),
        "group": group_id,
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    code = 0 if report.clean else 3
    if report.threads_stuck:
        leave_if_stuck(code)
    return code


def show(settings: Settings, limit: int, topic: str | None = None) -> int:
    topic = topic or settings.kafka.dead_letter_topic
    parking = topic == settings.kafka.parking_topic
    conf = consumer_config(settings, f"{settings.kafka.group_id}.dlq-show.{uuid.uuid4().hex[:8]}")
    client = Consumer(conf)
    reasons: Counter[str] = Counter()
    try:
        meta = client.list_topics(topic, timeout=10)
        if topic not in meta.topics:
            sys.stderr.write(f"xconv: topic {topic} does not exist\n")
            return 1
        ends: dict[int, int] = {}
        for p in meta.topics[topic].partitions:
            _, ends[p] = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        client.assign([TopicPartition(topic, p, 0) for p in ends])
        remaining = {p for p, high in ends.items() if high > 0}
        seen = 0
        while remaining and (limit == 0 or seen < limit):
            msg = client.poll(1.0)
            if msg is None or msg.error():
                continue
            view: dict[str, Any] = (
                decode_park(msg.headers()) if parking else decode_headers(msg.headers())
            )
            view["parking" if parking else "dlq"] = {
                "partition": msg.partition(),
                "offset": msg.offset(),
            }
            sys.stdout.write(orjson.dumps(view).decode() + "\n")
            reasons[str(view["reason"])] += 1
            seen += 1
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
    finally:
        client.close()
    sys.stderr.write(f"xconv: {sum(reasons.values())} records; by reason: {dict(reasons)}\n")
    return 0
