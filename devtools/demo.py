"""``make demo``: the whole pipeline on this machine, end to end, with live progress.

Starts a Kafka broker and the sandbox, produces realistic sample events of every preset
(some invalid), runs ``xconv run``, shows progress, stops the consumer with SIGTERM
once every event is accounted for, and prints a summary table. Exits 0 only when
every produced event was accepted by the sandbox or dead-lettered with a reason, and
the committed offsets reached the end of the topic.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from consumer.delivery.dlq import decode_headers
from devtools.stack import XCONV, Stack, end_offsets, http_get, read_all, scrape

ROOT = Path(__file__).resolve().parent.parent


def _progress_line(metrics: dict[str, float], elapsed: float, last: tuple[float, float]) -> str:
    accepted = metrics.get("xconv_events_accepted_total", 0.0)
    rate = (accepted - last[1]) / max(1e-6, elapsed - last[0])
    return (
        f"  t={elapsed:5.1f}s  consumed={metrics.get('xconv_events_consumed_total', 0):>6.0f}"
        f"  accepted={accepted:>6.0f}"
        f"  dead-lettered={metrics.get('xconv_events_dead_lettered_total', 0):>4.0f}"
        f"  in-flight={metrics.get('xconv_events_in_flight', 0):>5.0f}  {rate:>7.0f} ev/s"
        f"  budget-left={metrics.get('xconv_rate_budget_remaining', 0):>6.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
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
        url = stack.start_sandbox()
        print(f"» X Ads API sandbox at {url}")

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

        config = stack.consumer_config()
        consumer, metrics_url = stack.start_consumer(config)
        print(f"» xconv run --config {config.relative_to(ROOT)}  (metrics {metrics_url})")
        ends = end_offsets(stack.bootstrap, stack.topic)
        total = sum(ends.values())
        t0 = time.monotonic()
        last = (0.0, 0.0)
        metrics: dict[str, float] = {}
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
            committed = sum(
                v for k, v in metrics.items() if k.startswith("xconv_committed_offset{")
            )
            if done >= total and committed >= total:
                break
        print("» stopping the consumer with SIGTERM (drain, commit, close) ...")
        code = consumer.stop(signal.SIGTERM)

        group = stack.broker.committed_offsets("xconv-demo") if stack.broker else {}
        committed_total = sum((o.committed or 0) for o in group.values())
        ids = orjson.loads(http_get(f"{url}/_sandbox/conversion-ids"))
        accepted_ids = ids.get("conversion_ids", ids) if isinstance(ids, dict) else ids
        dlq = read_all(stack.bootstrap, stack.dlq_topic)
        reasons = Counter(str(decode_headers(m.headers())["reason"]) for m in dlq)
        accounted = len(accepted_ids) + len(dlq)

        rows = [
            ("events produced", total),
            ("  of which invalid by design", summary.get("invalid", "?")),
            ("accepted by the sandbox (unique conversion_id)", len(accepted_ids)),
            ("dead-lettered (with reason)", len(dlq)),
            *((f"  reason {r}", n) for r, n in sorted(reasons.items())),
            ("accounted for", f"{accounted} / {total}"),
            ("committed offsets (kafka-consumer-groups)", f"{committed_total} / {total}"),
            ("consumer exit code", code),
        ]
        width = max(len(r[0]) for r in rows)
        print("\n" + "-" * (width + 14))
        for label, value in rows:
            print(f"{label:<{width}}  {value:>10}")
        print("-" * (width + 14))
        ok = accounted == total and committed_total == total and code == 0
        print("demo: every event accounted for" if ok else "demo: NOT every event accounted for")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
