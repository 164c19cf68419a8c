"""The engine's per-message hot path alone: ``Engine._ingest`` on real Kafka messages.

Not a test. Produces ``--events`` canonical events to a 12-partition topic, reads them
once into memory with a plain ``Consumer`` (2,000 per call, as the engine fetches), then
feeds those same message lists to ``Engine._ingest`` of a fresh engine per round, with
a no-op transform and batches dropped instead of sent, and prints the thread CPU per
message (the engine's share of the loop thread, without the broker and HTTP around it):

    python -m bench.ingest_micro --events 200000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from bench import e2e
from bench.common import RUN_ROOT, produce_all
from consumer.delivery.engine import Engine
from consumer.observability.health import HealthState
from consumer.observability.metrics import Metrics
from consumer.settings import Settings
from consumer.transform import Conversion, Rejection, Skip, Transformer
from devtools.stack import create_topics

PARTITIONS = 12


class _Noop(Transformer):
    _prepared: Conversion | None = None

    def transform(self, raw: bytes) -> Conversion | Rejection | Skip:
        if self._prepared is not None:
            return self._prepared
        result = super().transform(raw)
        if isinstance(result, Conversion):
            self._prepared = result
        return result


def _fetch_all(bootstrap: str, topic: str, total: int) -> list[list[Any]]:
    client = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    client.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    fetches: list[list[Any]] = []
    seen = 0
    while seen < total:
        batch = client.consume(2000, 1.0)
        if batch:
            fetches.append(batch)
            seen += len(batch)
    client.close()
    return fetches


class _Delivery:
    """Stands in for batch delivery: nothing is diverted, dead letters are dropped."""

    def divert(self, lane: Any, *, arriving: bool = False) -> None:
        return None

    async def dead_letter(self, letters: Any) -> None:
        return None


async def _round(settings: Settings, topic: str, fetches: list[list[Any]]) -> float:
    engine = Engine(
        settings,
        metrics=Metrics(CollectorRegistry()),
        health=HealthState(),
        transformer=_Noop(settings.transform, settings.routing),
        client_factory=lambda account: None,  # type: ignore[arg-type,return-value]
    )
    sent: list[Any] = []
    engine._dispatch = sent.append  # type: ignore[method-assign,assignment]
    engine._delivery = _Delivery()  # type: ignore[assignment]
    engine._lanes = {a.account_id: engine._lane(a) for a in settings.accounts}
    for p in range(PARTITIONS):
        engine._tracker.assign((topic, p))
    start = time.thread_time()
    for batch in fetches:
        engine._ingest(batch)
        await asyncio.sleep(0)  # the dead-letter tasks end
        for b in engine._batcher.drain():  # what the consume loop's due() hands out
            sent.append(b)
        for b in sent:  # finished at once: the tracker stays small, as when sending
            engine._tracker.finish_all(b.chunks)
        sent.clear()
    return time.thread_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=RUN_ROOT / "ingest-micro")
    args = parser.parse_args(argv)
    suite = e2e.Suite(args.workdir)
    pool = e2e.Pool.make(20_000)
    try:
        topic = f"ingest-{time.time_ns()}"
        create_topics(suite.stack.bootstrap, {topic: PARTITIONS})
        keys, values = pool.tiled(args.events)
        produce_all(suite.stack.bootstrap, topic, keys, values)
        fetches = _fetch_all(suite.stack.bootstrap, topic, args.events)
        total = sum(len(f) for f in fetches)
        settings = Settings.model_validate(
            {
                "kafka": {"topics": [topic]},
                "accounts": [
                    {
                        "account_id": "18ce552mlaq",
                        "pixel_id": "oka17",
                        "auth": "pixel_token",
                        "pixel_token": "t",
                    }
                ],
                "routing": {
                    "default": {
                        "account_id": "18ce552mlaq",
                        "pixel_id": "oka17",
                        "event_id": "ol288",
                    }
                },
                "transform": {"preset": "auto"},
            }
        )
        figures = []
        for _ in range(args.rounds):
            used = asyncio.run(_round(settings, topic, fetches))
            figures.append(used / total * 1e6)
            print(f"_ingest: {figures[-1]:.3f} µs of thread CPU per message", flush=True)
        print(
            f"median {statistics.median(figures):.3f} µs over {args.rounds} rounds,"
            f" {total} messages"
        )
    finally:
        suite.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
