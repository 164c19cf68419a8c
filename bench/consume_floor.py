"""The floor under any Python consumer: CPU per event of a bare consume loop.

Not a test. Produces ``--events`` canonical events to a 12-partition topic on a local
broker, then reads them back with confluent-kafka's plain ``Consumer`` and with
``AIOConsumer`` (2,000 per call, nothing done with them; the engine's client settings),
and prints the process's CPU
per event (librdkafka's threads included), alternating the two, ``--rounds`` times.

    python -m bench.consume_floor --events 200000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Literal

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.aio import AIOConsumer

from bench import e2e
from bench.common import RUN_ROOT, process_cpu_s, produce_all
from consumer.delivery.engine import consumer_config
from devtools.stack import create_topics

PARTITIONS = 12


def _plain(conf: dict[str, object], topic: str, total: int) -> float:
    client = Consumer(conf)
    client.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, first = 0, None
    while seen < total:
        batch = client.consume(2000, 1.0)
        if batch and first is None:
            first = process_cpu_s()
        seen += sum(1 for m in batch if m.error() is None and m.value() is not None)
    used = process_cpu_s() - (first or 0.0)
    client.close()
    return used


async def _aio(conf: dict[str, object], topic: str, total: int) -> float:
    client = AIOConsumer(conf, max_workers=4)
    await client.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, first = 0, None
    while seen < total:
        batch = await client.consume(2000, 1.0)
        if batch and first is None:
            first = process_cpu_s()
        seen += sum(1 for m in batch if m.error() is None and m.value() is not None)
    used = process_cpu_s() - (first or 0.0)
    await client.close()
    return used


def floor_us_per_event(
    suite: e2e.Suite, pool: e2e.Pool, events: int, mode: Literal["plain", "aio"] = "aio"
) -> float:
    """CPU per event of a bare consume loop (``plain`` or ``aio``) over a fresh topic of
    ``events`` pool events; what the engine's no-op figure is read against."""
    topic = f"floor-{mode}-{time.time_ns()}"
    create_topics(suite.stack.bootstrap, {topic: PARTITIONS})
    keys, values = pool.tiled(events)
    produce_all(suite.stack.bootstrap, topic, keys, values)
    # The engine's own client settings (prefetch cap, fetch backoff, ...), nothing else.
    conf: dict[str, object] = consumer_config(suite.settings(topic), group_id=topic)
    if mode == "plain":
        used = _plain(conf, topic, events)
    else:
        used = asyncio.run(_aio(conf, topic, events))
    return used / events * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=RUN_ROOT / "consume-floor")
    args = parser.parse_args(argv)
    suite = e2e.Suite(args.workdir)
    pool = e2e.Pool.make(20_000)
    try:
        for _ in range(args.rounds):
            for mode in ("plain", "aio"):
                cost = floor_us_per_event(suite, pool, args.events, mode)
                print(f"{mode:5s} {cost:.2f} µs of CPU per event", flush=True)
    finally:
        suite.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
