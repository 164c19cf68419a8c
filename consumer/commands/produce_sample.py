"""``xconv produce-sample``: write realistic sample purchase events to a Kafka topic."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from consumer.samples import EXTRA_PRESETS, PRESETS, SampleGenerator

HELP = "Produce seeded sample purchase events (some deliberately invalid) to a Kafka topic."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--preset", choices=[*PRESETS, *EXTRA_PRESETS, "mix"], default="canonical")
    parser.add_argument(
        "--invalid-share",
        type=float,
        default=0.05,
        help="share of deliberately invalid events, 0..1 (default 0.05)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="EVENTS_PER_S", help="0 = as fast as possible"
    )
    parser.add_argument(
        "--key-by", choices=["order", "none"], default="order", help="message key (default order)"
    )


def run(args: argparse.Namespace) -> int:
    if args.count < 0 or args.rate < 0 or not 0.0 <= args.invalid_share <= 1.0:
        print(
            "xconv produce-sample: --count and --rate must be >= 0, --invalid-share in 0..1",
            file=sys.stderr,
        )
        return 2
    presets = list(PRESETS) if args.preset == "mix" else [args.preset]
    generator = SampleGenerator(seed=args.seed, presets=presets, invalid_share=args.invalid_share)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        producer = Producer(
            {
                "bootstrap.servers": args.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
                "client.id": "xconv-produce-sample",
            }
        )
    except KafkaException as exc:
        print(f"xconv produce-sample: bad producer config: {exc}", file=sys.stderr)
        return 2
    per_preset: Counter[str] = Counter()
    invalid = 0
    defects: Counter[str] = Counter()
    start = time.monotonic()
    for index, sample in enumerate(generator.events(args.count)):
        if args.rate > 0:
            delay = start + index / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        key = sample.key if args.key_by == "order" else None
        while True:
            try:
                producer.produce(args.topic, sample.value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
        producer.poll(0)
        per_preset[sample.preset] += 1
        if not sample.valid:
            invalid += 1
            defects[sample.defect or ""] += 1
    remaining = producer.flush(60)
    summary = {
        "produced": args.count - len(errors) - remaining,
        "invalid": invalid,
        "per_preset": dict(sorted(per_preset.items())),
        "defects": dict(sorted(defects.items())),
        "failed": len(errors) + remaining,
        "topic": args.topic,
        "seconds": round(time.monotonic() - start, 3),
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    sys.stdout.flush()
    if errors or remaining:
        print(f"xconv produce-sample: delivery failed: {errors[:1]}", file=sys.stderr)
        return 1
    return 0
