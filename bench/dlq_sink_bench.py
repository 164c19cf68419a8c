"""Dead-letter sink: one batch write against one acknowledgement at a time (issue 9, item 11).

Starts a local KRaft broker, then writes ``--records`` dead letters to a fresh topic two
ways, ``--rounds`` times each on a warmed-up producer with the engine's producer
settings (acks=all, idempotent, linger.ms=5):

- ``one_by_one``: a ``write`` per record, each awaited before the next (what isolation
  did before: one acknowledgement per bad event);
- ``batch``: one ``write`` of every record (produce all, then await all acks).

Prints the median wall time of each and their ratio. A benchmark, not a test.

    python -m bench.dlq_sink_bench [--records 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from collections.abc import Sequence

from bench.common import RUN_ROOT
from consumer.delivery.dlq import DeadLetter, DeadLetterSink, HeaderProducer
from consumer.delivery.retry import Backoff
from devtools.kafka import KafkaBroker, create_topic


class _Source:
    """A consumed message as the sink sees it."""

    def __init__(self, offset: int) -> None:
        self._offset = offset
        self._value = b'{"order_id":"o-%d","amount":"x"}' % offset

    def topic(self) -> str | None:
        return "purchases"

    def partition(self) -> int | None:
        return 0

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return b"o-%d" % self._offset

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return None


async def measure(bootstrap: str, topic: str, records: int, rounds: int) -> dict[str, float]:
    producer = HeaderProducer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    sink = DeadLetterSink(producer, topic, backoff=Backoff())
    letter = DeadLetter(reason="api_rejected", message="amount is not a number", attempts=1)
    entries = [(_Source(i), letter) for i in range(records)]
    await sink.write(entries[:10])  # warm-up: producer id, metadata, connections
    times: dict[str, list[float]] = {"one_by_one": [], "batch": []}
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            for entry in entries:
                await sink.write([entry])
            times["one_by_one"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await sink.write(entries)
            times["batch"].append(time.perf_counter() - started)
    finally:
        await producer.close()
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = RUN_ROOT / "dlq-sink-broker"
    shutil.rmtree(workdir, ignore_errors=True)
    broker = KafkaBroker(workdir)
    broker.start()
    try:
        topic = "bench.dlq"
        create_topic(broker.bootstrap, topic, 3)
        medians = asyncio.run(measure(broker.bootstrap, topic, args.records, args.rounds))
    finally:
        broker.stop()
    one, batch = medians["one_by_one"], medians["batch"]
    print(f"{args.records} dead letters, median of {args.rounds} rounds:")
    print(f"  one_by_one  {one * 1000:8.1f} ms  ({one / args.records * 1e6:7.0f} us/record)")
    print(f"  batch       {batch * 1000:8.1f} ms  ({batch / args.records * 1e6:7.0f} us/record)")
    print(f"  speed-up    {one / batch:8.1f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
