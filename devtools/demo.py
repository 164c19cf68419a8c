"""``make demo``: the whole pipeline on this machine, end to end, with live progress.

Starts a Kafka broker and the sandbox, produces realistic sample events of every preset
(some invalid), runs ``xconv run``, shows progress, stops the consumer with SIGTERM
once every event is accounted for, and prints a summary table. Exits 0 only when
every produced event was accepted by the sandbox or dead-lettered with a reason, and
the committed offsets reached the end of the topic (and of the parking topic).

Tenant isolation (issue 12): a second ad account, "shop B", gets canonical events
(``routing_key`` "shop-b") produced *before* the others, so they sit at the head of
every partition, and the sandbox answers shop B with 500 from the start. Its events
are parked on the parking topic (``delivery.park_after_s`` 3 s here) while the demo
account's events flow and the source partitions commit; once they are parked and the
rest is done, the demo removes the fault and shop B's parked events are delivered from
the parking topic at its next probe.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import tomli_w
from confluent_kafka import Producer

from consumer.delivery.dlq import decode_headers
from consumer.samples import SampleGenerator
from consumer.sandbox.config import (
    DEMO_ACCESS_TOKEN,
    DEMO_ACCESS_TOKEN_SECRET,
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    demo_account,
)
from devtools.stack import XCONV, Stack, end_offsets, http_get, http_post, read_all, scrape

ROOT = Path(__file__).resolve().parent.parent

# The account made sick for a while (routed by the canonical preset's routing_key).
SHOP_B = {"account_id": "shopb42", "pixel_id": "pxshopb", "event_id": "evshopb"}
SHOP_B_KEY = "shop-b"
SICK_AT_LEAST_S = 8.0  # the fault stays this long at least, then until shop B is parked


def _shop_b_sandbox_account() -> dict[str, object]:
    return {
        "account_id": SHOP_B["account_id"],
        "pixel_id": SHOP_B["pixel_id"],
        "event_ids": [SHOP_B["event_id"]],
        "consumer_key": DEMO_CONSUMER_KEY,
        "consumer_secret": DEMO_CONSUMER_SECRET,
        "access_token": DEMO_ACCESS_TOKEN,
        "access_token_secret": DEMO_ACCESS_TOKEN_SECRET,
        "rate_limit": {"enabled": False},
    }


def _produce_shop_b(bootstrap: str, topic: str, count: int) -> int:
    """``count`` valid canonical events routed to shop B; returns how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    failed: list[str] = []
    for event in SampleGenerator(seed=42, invalid_share=0.0).events(count):
        doc = orjson.loads(event.value)
        doc["routing_key"] = SHOP_B_KEY
        doc["order_id"] = "B-" + str(doc["order_id"])
        while True:
            try:
                producer.produce(
                    topic,
                    orjson.dumps(doc),
                    event.key,
                    on_delivery=lambda err, _msg: failed.append(str(err)) if err else None,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"producing shop B's events failed: {failed[:3]}")
    return count


def _account(metrics: dict[str, float], name: str, account: str) -> float:
    return metrics.get(f'{name}{{account="{account}"}}', 0.0)


def _committed_on(group: dict[tuple[str, int], Any], topic: str) -> tuple[int, int]:
    """(committed, log end) summed over ``topic``'s rows of kafka-consumer-groups."""
    rows = [row for (name, _), row in group.items() if name == topic]
    return sum(r.committed or 0 for r in rows), sum(r.log_end or 0 for r in rows)


def _progress_line(metrics: dict[str, float], elapsed: float, last: tuple[float, float]) -> str:
    accepted = metrics.get("xconv_events_accepted_total", 0.0)
    rate = (accepted - last[1]) / max(1e-6, elapsed - last[0])
    return (
        f"  t={elapsed:5.1f}s  consumed={metrics.get('xconv_events_consumed_total', 0):>6.0f}"
        f"  accepted={accepted:>6.0f}"
        f"  dead-lettered={metrics.get('xconv_events_dead_lettered_total', 0):>4.0f}"
        f"  in-flight={metrics.get('xconv_events_in_flight', 0):>5.0f}  {rate:>7.0f} ev/s"
        f"  parked={metrics.get('xconv_events_parked_total', 0):>5.0f}"
        f"  shop-B-accepted="
        f"{_account(metrics, 'xconv_events_accepted_total', SHOP_B['account_id']):>5.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--shop-b-count", type=int, default=1000)
    parser.add_argument("--invalid-share", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".run" / "demo")
    args = parser.parse_args(argv)

    shutil.rmtree(args.workdir, ignore_errors=True)
    with Stack(args.workdir) as stack:
        print("» starting Kafka (KRaft, single node) ...", flush=True)
        started = time.monotonic()
        stack.start_broker()
        print(f"  broker at {stack.bootstrap} in {time.monotonic() - started:.1f}s")
        url = stack.start_sandbox(
            {
                "accounts": [demo_account().model_dump(), _shop_b_sandbox_account()],
                "faults": {"status_overrides": {SHOP_B["account_id"]: 500}},
            }
        )
        print(f"» X Ads API sandbox at {url}")
        print(f"» shop B (account {SHOP_B['account_id']}) is sick: the sandbox answers it 500")
        shop_b = _produce_shop_b(stack.bootstrap, stack.topic, args.shop_b_count)
        print(f"» produced {shop_b} events for shop B first: the head of every partition")

        print(
            f"» producing {args.count} sample purchase events"
            " (canonical, Segment, GA4 and Shopify shapes) ..."
        )
        produced = subprocess.run(
            [
                *XCONV,
                "produce-sample",
                "--bootstrap",
                stack.bootstrap,
                "--topic",
                stack.topic,
                "--count",
                str(args.count),
                "--preset",
                "mix",
                "--invalid-share",
                str(args.invalid_share),
                "--seed",
                "7",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        summary = orjson.loads(produced.stdout.strip().splitlines()[-1])
        print(f"  {summary}")

        config = stack.consumer_config(
            routing={"routes": {SHOP_B_KEY: dict(SHOP_B)}},
            delivery={"park_after_s": 3.0, "probe_initial_s": 1.0, "probe_max_s": 3.0},
        )
        data = tomllib.loads(config.read_text())
        data["accounts"].append(
            {
                "account_id": SHOP_B["account_id"],
                "pixel_id": SHOP_B["pixel_id"],
                "auth": "oauth1",
                "consumer_key": DEMO_CONSUMER_KEY,
                "consumer_secret": DEMO_CONSUMER_SECRET,
                "access_token": DEMO_ACCESS_TOKEN,
                "access_token_secret": DEMO_ACCESS_TOKEN_SECRET,
            }
        )
        config.write_text(tomli_w.dumps(data))
        consumer, metrics_url = stack.start_consumer(config)
        print(f"» xconv run --config {config.relative_to(ROOT)}  (metrics {metrics_url})")
        ends = end_offsets(stack.bootstrap, stack.topic)
        total = sum(ends.values())
        t0 = time.monotonic()
        last = (0.0, 0.0)
        metrics: dict[str, float] = {}
        sick = True
        parked_while_sick = 0.0
        committed_while_sick = 0.0

        def committed_on(topic: str) -> float:
            prefix = "xconv_committed_offset{"
            label = f'topic="{topic}"'
            return sum(v for k, v in metrics.items() if k.startswith(prefix) and label in k)

        while time.monotonic() - t0 < args.timeout:
            time.sleep(1.0)
            if not consumer.alive():
                print(f"consumer exited early; see {consumer.log_path}")
                return 1
            try:
                metrics = scrape(metrics_url)
            except OSError:
                continue
            elapsed = time.monotonic() - t0
            print(_progress_line(metrics, elapsed, last), flush=True)
            last = (elapsed, metrics.get("xconv_events_accepted_total", 0.0))
            done = metrics.get("xconv_events_accepted_total", 0) + metrics.get(
                "xconv_events_dead_lettered_total", 0
            )
            committed = committed_on(stack.topic)
            parked = metrics.get("xconv_events_parked_total", 0.0)
            if sick:
                # Shop B sick: its events parked, everybody else's done, the source
                # partitions committed to their end all the same.
                if (
                    elapsed >= SICK_AT_LEAST_S
                    and parked >= shop_b
                    and done >= total - shop_b
                    and committed >= total
                ):
                    sick = False
                    parked_while_sick, committed_while_sick = parked, committed
                    print(
                        f"» shop B is still sick: {parked:.0f} events parked on "
                        f"{stack.parking_topic}; the source topic committed "
                        f"{committed:.0f} / {total}. `xconv dlq show --topic parking`:"
                    )
                    show = ["dlq", "show", "--topic", "parking", "--limit", "2"]
                    shown = subprocess.run(
                        [*XCONV, *show, "--config", str(config)],
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False,
                    )
                    for line in shown.stdout.splitlines()[:2]:
                        print(f"    {line}")
                    http_post(f"{url}/_sandbox/faults", {"status_overrides": {}})
                    print("» shop B's API answers again: its parked events come back")
                continue
            parking_end = sum(end_offsets(stack.bootstrap, stack.parking_topic).values())
            if (
                done >= total
                and committed >= total
                and committed_on(stack.parking_topic) >= parking_end
            ):
                break
        print("» stopping the consumer with SIGTERM (drain, commit, close) ...")
        code = consumer.stop(signal.SIGTERM)

        group = stack.broker.committed_offsets("xconv-demo") if stack.broker else {}
        committed_total, _ = _committed_on(group, stack.topic)
        parking_committed, parking_end = _committed_on(group, stack.parking_topic)
        ids = orjson.loads(http_get(f"{url}/_sandbox/conversion-ids"))
        accepted_ids = ids.get("conversion_ids", ids) if isinstance(ids, dict) else ids
        shop_b_ids = orjson.loads(
            http_get(f"{url}/_sandbox/conversion-ids?account_id={SHOP_B['account_id']}")
        )["conversion_ids"]
        dlq = read_all(stack.bootstrap, stack.dlq_topic)
        reasons = Counter(str(decode_headers(m.headers())["reason"]) for m in dlq)
        accounted = len(accepted_ids) + len(dlq)

        rows = [
            ("events produced", total),
            ("  of which invalid by design", summary.get("invalid", "?")),
            ("  of which for shop B (sick for a while)", shop_b),
            ("accepted by the sandbox (unique conversion_id)", len(accepted_ids)),
            ("  of which shop B's, after its recovery", len(shop_b_ids)),
            ("dead-lettered (with reason)", len(dlq)),
            *((f"  reason {r}", n) for r, n in sorted(reasons.items())),
            ("accounted for", f"{accounted} / {total}"),
            ("parked while shop B was sick", f"{parked_while_sick:.0f}"),
            ("source committed while shop B was sick", f"{committed_while_sick:.0f} / {total}"),
            ("committed offsets (kafka-consumer-groups)", f"{committed_total} / {total}"),
            ("  parking topic", f"{parking_committed} / {parking_end}"),
            ("consumer exit code", code),
        ]
        width = max(len(r[0]) for r in rows)
        print("\n" + "-" * (width + 14))
        for label, value in rows:
            print(f"{label:<{width}}  {value:>10}")
        print("-" * (width + 14))
        ok = (
            accounted == total
            and committed_total == total
            and parking_committed == parking_end
            and len(shop_b_ids) == shop_b
            and not sick
            and code == 0
        )
        print("demo: every event accounted for" if ok else "demo: NOT every event accounted for")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
