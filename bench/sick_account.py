"""A sick account beside a healthy one: the healthy account's rate, alone and beside it (issue 12).

    python -m bench.sick_account [--rate 1000] [--warmup 10] [--measure 20] [--quick]

Two accounts routed from the same partitions (the canonical preset's ``routing_key``,
events interleaved 1:1, all valid). The healthy account is paced by its configured
budget (``--rate`` events/s as requests of ``BATCH_EVENTS``; the sandbox does not limit
it), so its rate is known and steady and the question is only whether the other
account takes it away. The sick account is answered 500 by the sandbox for good
(``status_overrides``). One round is three consumer runs, each on a fresh topic, group
and sandbox:

- ``alone``: the healthy account's events only;
- ``park``: both accounts, ``delivery.stuck_policy = "park"`` (the default);
- ``hold``: both accounts, ``stuck_policy = "hold"`` (the behaviour before issue 12).

Each run waits for the first acceptance, then ``--warmup`` seconds (longer than
``park_after_s``, so the sick account's gate has closed), then counts the healthy
account's accepted events over ``--measure`` seconds. The ``park`` run then reads how far
the source partitions committed while the account was still sick, clears the fault and
times until every event of both accounts was accepted and both the source and the
parking topic are committed to their end (Kafka's view); a missing event fails the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.common import (
    RUN_ROOT,
    committed,
    consumer_account,
    produce_all,
    sandbox_account,
    sandbox_stats,
    wait_for,
)
from bench.e2e import PARTITIONS, Pool, Suite
from devtools.stack import create_topics, end_offsets, http_post, scrape

BATCH_EVENTS = 50
MAX_BUFFERED = 2000
PARK_AFTER_S = 5.0
PROBE_INITIAL_S, PROBE_MAX_S = 1.0, 5.0
PARKING_PARTITIONS = 3
HEALTHY = ("acctok", "pxok", "evok")
SICK = ("acctsick", "pxsick", "evsick")


def _routed(value: bytes, shop: str) -> bytes:
    """A canonical pool event with its routing key set (the pool's JSON starts with
    ``{"order_id"``)."""
    if not value.startswith(b'{"order_id"'):
        raise ValueError("unexpected pool event")
    return b'{"routing_key":"' + shop.encode() + b'",' + value[1:]


def _accepted(sandbox: str, account: str) -> int:
    stats = sandbox_stats(sandbox)["accounts"].get(account, {})
    return int(stats.get("unique_conversion_ids", 0))


def _metric(url: str, name: str) -> float:
    try:
        return scrape(url).get(name, 0.0)
    except OSError:
        return 0.0


def one_run(
    suite: Suite,
    pool: Pool,
    mode: str,
    *,
    rate: float,
    warmup_s: float,
    measure_s: float,
) -> dict[str, float]:
    """One consumer run (``alone``, ``park`` or ``hold``); the healthy account's rate."""
    per_account = int(rate * (warmup_s + measure_s + 8))
    keys, values = pool.tiled(per_account if mode == "alone" else 2 * per_account)
    if mode == "alone":
        shops = ["healthy"] * len(values)
    else:
        shops = ["sick" if i % 2 == 0 else "healthy" for i in range(len(values))]
    values = [_routed(v, shop) for v, shop in zip(values, shops, strict=True)]
    want = {"healthy": shops.count("healthy"), "sick": shops.count("sick")}

    accounts = [sandbox_account(*HEALTHY), sandbox_account(*SICK)]
    faults = {} if mode == "alone" else {"status_overrides": {SICK[0]: 500}}
    topic, run = suite.new_run({"accounts": accounts, "faults": faults})
    parking = f"{topic}.parking"
    create_topics(suite.stack.bootstrap, {parking: PARKING_PARTITIONS})
    produce_all(suite.stack.bootstrap, topic, keys, values)
    requests_per_s = rate / BATCH_EVENTS
    routes = {
        shop: {"account_id": a, "pixel_id": p, "event_id": e}
        for shop, (a, p, e) in (("healthy", HEALTHY), ("sick", SICK))
    }
    proc, url, sampler = suite.consumer(
        topic,
        run,
        accounts=[
            consumer_account(
                HEALTHY[0], HEALTHY[1], requests_per_window=requests_per_s * 10, window_s=10.0
            ),
            consumer_account(SICK[0], SICK[1]),
        ],
        routing={"key_field": "routing_key", "routes": routes},
        kafka={"parking_topic": parking},
        batching={"max_events": BATCH_EVENTS, "linger_ms": 50},
        delivery={
            "stuck_policy": "hold" if mode == "hold" else "park",
            "max_buffered_events": MAX_BUFFERED,
            "park_after_s": PARK_AFTER_S,
            "probe_initial_s": PROBE_INITIAL_S,
            "probe_max_s": PROBE_MAX_S,
            "drain_timeout_s": 2.0,
        },
    )
    sandbox = suite.stack.sandbox_url
    group = f"xconv-{run}"
    try:
        wait_for(lambda: _accepted(sandbox, HEALTHY[0]) > 0, 120, 0.1, "first acceptance")
        time.sleep(warmup_s)
        start, count0 = time.monotonic(), _accepted(sandbox, HEALTHY[0])
        time.sleep(measure_s)
        count1 = _accepted(sandbox, HEALTHY[0])
        seconds = time.monotonic() - start
        if not proc.alive():
            raise RuntimeError(f"consumer exited; see {proc.log_path}")
        if count1 >= want["healthy"]:
            raise RuntimeError("the healthy backlog ran out inside the window")
        out: dict[str, float] = {
            "healthy_events_per_s": (count1 - count0) / seconds,
            "nominal_events_per_s": rate,
        }
        if mode != "park":
            return out
        # Still sick: how far the source partitions committed, and what was parked.
        done = committed(suite.stack.bootstrap, group, topic, PARTITIONS)
        out["source_committed_share"] = sum(max(0, o) for o in done.values()) / len(values)
        out["sick_accepted_while_sick"] = float(_accepted(sandbox, SICK[0]))
        out["parked_events"] = _metric(url, "xconv_events_parked_total")
        out["oldest_parked_age_s"] = _metric(url, "xconv_parking_oldest_age_seconds")
        out["peak_rss_mb"] = sampler.peak_rss / 2**20
        # Recovery: every event accepted, both topics committed to their end.
        http_post(sandbox + "/_sandbox/faults", {"status_overrides": {}})
        cleared = time.monotonic()

        def recovered() -> bool:
            if not proc.alive():
                raise RuntimeError(f"consumer exited; see {proc.log_path}")
            if _accepted(sandbox, SICK[0]) < want["sick"]:
                return False
            if _accepted(sandbox, HEALTHY[0]) < want["healthy"]:
                return False
            for name, count in ((topic, PARTITIONS), (parking, PARKING_PARTITIONS)):
                ends = end_offsets(suite.stack.bootstrap, name)
                done = committed(suite.stack.bootstrap, group, name, count)
                if any(end and done.get(p) != end for p, end in ends.items()):
                    return False
            return True

        wait_for(recovered, 600, 0.5, "every event accepted and committed after the fault")
        out["recovered_s"] = time.monotonic() - cleared
        offsets = suite.stack.broker.committed_offsets(group) if suite.stack.broker else {}
        behind = {k: v for k, v in offsets.items() if v.log_end and v.committed != v.log_end}
        if behind:
            raise RuntimeError(f"kafka-consumer-groups: not committed to the end: {behind}")
        out["lost"] = float(
            max(0, want["sick"] - _accepted(sandbox, SICK[0]))
            + max(0, want["healthy"] - _accepted(sandbox, HEALTHY[0]))
        )
        return out
    finally:
        sampler.stop()
        proc.stop(timeout=30)


def round_figures(
    suite: Suite, pool: Pool, *, rate: float, warmup_s: float, measure_s: float
) -> dict[str, float]:
    """One round: alone, park, hold; the ratios beside / alone."""
    alone = one_run(suite, pool, "alone", rate=rate, warmup_s=warmup_s, measure_s=measure_s)
    park = one_run(suite, pool, "park", rate=rate, warmup_s=warmup_s, measure_s=measure_s)
    hold = one_run(suite, pool, "hold", rate=rate, warmup_s=warmup_s, measure_s=measure_s)
    base = alone["healthy_events_per_s"]
    row = {
        "alone_events_per_s": base,
        "park_events_per_s": park["healthy_events_per_s"],
        "hold_events_per_s": hold["healthy_events_per_s"],
        "park_to_alone": park["healthy_events_per_s"] / base,
        "hold_to_alone": hold["healthy_events_per_s"] / base,
        "nominal_events_per_s": rate,
    }
    row.update({k: v for k, v in park.items() if k not in ("healthy_events_per_s",)})
    return row


def valid_pool(size: int) -> Pool:
    return Pool.make(size, invalid_share=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="healthy events/s budget")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--measure", type=float, default=20.0)
    args = parser.parse_args(argv)
    suite = Suite(RUN_ROOT / "sick-account")
    try:
        row = round_figures(
            suite, valid_pool(20_000), rate=args.rate, warmup_s=args.warmup, measure_s=args.measure
        )
    finally:
        suite.close()
    for key, value in row.items():
        print(f"{key}: {value:,.3f}")
    ok = row["park_to_alone"] >= 0.9 and row["lost"] == 0
    print("verdict:", "met" if ok else "missed")
    return 0 if ok else 1


def summary_args(quick: bool) -> dict[str, Any]:
    """The sizes ``bench.run_all`` uses."""
    if quick:
        return {"rate": 500.0, "warmup_s": 8.0, "measure_s": 10.0}
    return {"rate": 1000.0, "warmup_s": 10.0, "measure_s": 20.0}


if __name__ == "__main__":
    sys.exit(main())
