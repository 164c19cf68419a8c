"""Where the consumer's CPU goes: ``xconv run`` under cProfile on a local stack.

    python -m bench.profile_consumer [--events 200000] [--top 25]

Produces ``--events`` canonical sample events (1% invalid) on a 12-partition topic,
runs the consumer under ``cProfile`` against a sandbox with its rate limit off until
every event is accepted or dead-lettered, stops it with SIGTERM (cProfile writes its
stats on a clean exit) and prints the functions with the most own time, plus the
share of the whole run spent inside the transform. cProfile slows Python code down
(roughly 2-3x), so read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import pstats
import signal
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

from consumer.samples import SampleGenerator
from devtools.kafka import free_port
from devtools.stack import DEMO_ACCOUNT, Stack, scrape

ROOT = Path(__file__).resolve().parent.parent


def _sandbox_config() -> dict[str, object]:
    from consumer.sandbox.config import (
        DEMO_ACCESS_TOKEN,
        DEMO_ACCESS_TOKEN_SECRET,
        DEMO_CONSUMER_KEY,
        DEMO_CONSUMER_SECRET,
    )

    return {
        "accounts": [
            {
                "account_id": DEMO_ACCOUNT["account_id"],
                "pixel_id": DEMO_ACCOUNT["pixel_id"],
                "event_ids": [DEMO_ACCOUNT["event_id"]],
                "consumer_key": DEMO_CONSUMER_KEY,
                "consumer_secret": DEMO_CONSUMER_SECRET,
                "access_token": DEMO_ACCESS_TOKEN,
                "access_token_secret": DEMO_ACCESS_TOKEN_SECRET,
                "rate_limit": {"enabled": False},
            }
        ]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".run" / "profile")
    parser.add_argument(
        "--noop", action="store_true", help="profile bench.noop_engine (the engine alone)"
    )
    args = parser.parse_args(argv)

    profile = args.workdir / "consumer.prof"
    with Stack(args.workdir, partitions=12) as stack:
        stack.start_broker()
        stack.start_sandbox(_sandbox_config())
        producer = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 50})
        pool = list(SampleGenerator(seed=1, invalid_share=0.01).events(5000))
        for n in range(args.events):
            event = pool[n % len(pool)]
            while True:
                try:
                    producer.produce(stack.topic, event.value, event.key)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush()

        config = stack.consumer_config(
            transform={"preset": "canonical"}, observability={"log_level": "warning"}
        )
        port = free_port()
        argv_run = [sys.executable, "-m", "cProfile", "-o", str(profile)]
        entry = "bench.noop_engine" if args.noop else "consumer"
        argv_run += ["-m", entry, "run", "--config", str(config)]
        process = stack.spawn(
            "consumer", argv_run, env={"XCONV_OBSERVABILITY__HTTP_PORT": str(port)}
        )
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                metrics = scrape(url)
            except OSError:
                continue
            done = metrics.get("xconv_events_accepted_total", 0) + metrics.get(
                "xconv_events_dead_lettered_total", 0
            )
            if done >= args.events:
                break
        code = process.stop(signal.SIGTERM, timeout=120)
        if code != 0 or not profile.exists():
            print(f"consumer exited {code}; see {process.log_path}")
            return 1

    stats = pstats.Stats(str(profile))
    total = stats.total_tt  # type: ignore[attr-defined]
    transform = sum(
        row[3]  # cumulative time of the entry point
        for (path, _, name), row in stats.stats.items()  # type: ignore[attr-defined]
        if path.endswith("transform/transformer.py") and name == "transform"
    )
    print(f"profiled {args.events} events; total {total:.1f} s of profiled CPU")
    print(f"inside Transformer.transform: {transform:.1f} s ({transform / total:.0%})")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
