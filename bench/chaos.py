"""Chaos harness: at-least-once delivery under crashes, a broker restart and a faulty API.

Real components only: a local KRaft broker, ``xconv sandbox`` with injected faults (10 %
HTTP 500/503, 2 % requests that hang until the client gives up, bursts of 429) and three
``xconv run`` processes in one consumer group. Events are produced at a steady pace
while the harness SIGKILLs a random consumer at random intervals (restarting it), and
stops and starts the broker once. Then it checks, and prints:

- zero loss: every valid event's conversion id was accepted by the sandbox at least once;
- every invalid event is in the dead-letter topic with the reason the transform gives;
- Kafka's own ``kafka-consumer-groups`` tool shows committed == log end on every partition;
- duplicates (ids accepted more than once) stay within the bound explained in
  ``duplicate_bound``.

    python -m bench.chaos [--events 200000] [--kills 6] [--seed 1] [--no-broker-restart]

Exit status 0 when every check holds, 1 otherwise (any loss included).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    RUN_ROOT,
    PacedProducer,
    committed,
    generate,
    sandbox_ids,
    sandbox_stats,
    wait_for,
)
from devtools.stack import DEMO_ACCOUNT, Process, Stack, end_offsets, read_all, scrape

GROUP = "xconv-chaos"
PARTITIONS = 12
CONSUMERS = 3
MAX_BUFFERED = 5_000
COMMIT_INTERVAL_S = 1.0
KILL_INTERVAL_S = (3.0, 9.0)
BATCH_EVENTS = 100  # smaller requests than production: more requests meet more faults


@dataclass
class KillRecord:
    at_s: float
    victim: str
    in_flight: float | None  # the victim's xconv_events_in_flight just before the kill


@dataclass
class ChaosResult:
    events: int
    valid: int
    invalid: int
    kills: list[KillRecord] = field(default_factory=list)
    broker_restarts: int = 0
    missing: int = 0  # valid conversion ids never accepted (loss)
    dlq_records: int = 0
    dlq_duplicates: int = 0  # invalid events dead-lettered twice (re-delivered after a crash)
    invalid_missing: int = 0  # invalid events absent from the dead-letter topic
    wrong_reason: int = 0
    unexpected_dlq: int = 0  # valid events dead-lettered (e.g. the API rejected them)
    partitions_behind: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    duplicates: int = 0
    duplicate_bound: int = 0
    peak_accept_rate: float = 0.0
    seconds: float = 0.0
    sandbox: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [
            f"events produced:        {self.events} ({self.valid} valid, {self.invalid} invalid)",
            f"consumer SIGKILLs:      {len(self.kills)} "
            + ", ".join(
                f"{k.victim}@{k.at_s:.0f}s(in flight {_num(k.in_flight)})" for k in self.kills
            ),
            f"broker restarts:        {self.broker_restarts}",
            f"sandbox requests:       {self.sandbox.get('requests_by_status')}",
            f"sandbox faults:         {self.sandbox.get('faults_injected')}",
            f"lost valid events:      {self.missing}",
            f"dead-letter records:    {self.dlq_records} ({self.dlq_duplicates} repeated;"
            f" invalid missing {self.invalid_missing},"
            f" wrong reason {self.wrong_reason}, valid dead-lettered {self.unexpected_dlq})",
            "committed == log end:   "
            + (
                "yes, every partition"
                if not self.partitions_behind
                else str(self.partitions_behind)
            ),
            f"duplicates:             {self.duplicates} (bound {self.duplicate_bound})",
            f"peak acceptance rate:   {self.peak_accept_rate:.0f} events/s",
            f"wall time:              {self.seconds:.1f} s",
            "VERDICT: " + ("PASS" if self.ok else "FAIL: " + "; ".join(self.failures)),
        ]
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


class _RateWatch(threading.Thread):
    """Peak sandbox acceptance rate over 1 s windows (feeds the duplicate bound)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="rate-watch")
        self.url = url
        self.peak = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        last: tuple[float, float] | None = None
        while not self._stop_event.wait(1.0):
            try:
                accepted = float(sandbox_stats(self.url)["accepted_conversions"])
            except OSError:
                continue
            now = time.monotonic()
            if last is not None and now > last[0]:
                self.peak = max(self.peak, (accepted - last[1]) / (now - last[0]))
            last = (now, accepted)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def sandbox_config(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "faults": {
            "error_500": 0.05,
            "error_503": 0.05,
            "hang": 0.02,
            "hang_s": 3600,
            "burst_429": 0.01,
            "burst_429_reset_s": 1,
            "latency_ms": 20,  # requests take a while, so kills catch batches in flight
            "latency_jitter_ms": 200,
        },
    }


def run_chaos(
    events: int = 200_000,
    kills: int = 6,
    seed: int = 1,
    broker_restart: bool = True,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> ChaosResult:
    rng = random.Random(seed)
    workdir = workdir or RUN_ROOT / "chaos"
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"generating {events} events (1% invalid)...")
    data = generate(events, seed=seed, invalid_share=0.01)
    result = ChaosResult(events, len(data.expected_ids), len(data.invalid))
    plan_s = kills * sum(KILL_INTERVAL_S) / 2 + 10
    rate = max(200.0, events / plan_s)
    started = time.monotonic()
    with Stack(workdir, partitions=PARTITIONS) as stack:
        stack.start_broker()
        broker = stack.broker
        assert broker is not None
        url = stack.start_sandbox(sandbox_config(seed))
        config = stack.consumer_config(
            kafka={"group_id": GROUP, "session_timeout_ms": 10_000},
            api={"request_timeout_s": 3.0, "connect_timeout_s": 2.0},
            batching={"max_events": BATCH_EVENTS},
            delivery={
                "max_buffered_events": MAX_BUFFERED,
                "commit_interval_s": COMMIT_INTERVAL_S,
                "retry_base_s": 0.2,
                "retry_cap_s": 5.0,
                "drain_timeout_s": 10.0,
                "revoke_timeout_s": 5.0,
            },
            observability={"log_level": "warning"},
        )
        members: dict[str, tuple[Process, str]] = {}
        starts: dict[str, int] = {}

        def start(name: str) -> None:
            starts[name] = starts.get(name, 0) + 1
            members[name] = stack.start_consumer(config, name=f"{name}-run{starts[name]}")

        for i in range(CONSUMERS):
            start(f"consumer-{i}")
        producer = PacedProducer(
            stack.bootstrap, stack.topic, zip(data.keys, data.values, strict=True), rate
        )
        watch = _RateWatch(url)
        producer.start()
        watch.start()
        log(f"producing at {rate:.0f} events/s over ~{events / rate:.0f}s; {kills} kills planned")
        restart_after = kills // 2 if broker_restart else -1
        if broker_restart and kills == 0:
            time.sleep(plan_s / 2)
        for k in range(kills + (1 if broker_restart and kills == 0 else 0)):
            if k == restart_after:
                log("broker: stop")
                broker.stop()
                time.sleep(rng.uniform(2.0, 5.0))
                broker.start()
                result.broker_restarts += 1
                log("broker: started again")
            if k >= kills:
                break
            time.sleep(rng.uniform(*KILL_INTERVAL_S))
            victim = rng.choice(sorted(members))
            process, metrics_url = members[victim]
            in_flight: float | None
            try:
                in_flight = scrape(metrics_url).get("xconv_events_in_flight")
            except OSError:
                in_flight = None
            process.stop(signal.SIGKILL, timeout=10)
            at = time.monotonic() - started
            result.kills.append(KillRecord(at, victim, in_flight))
            log(f"kill {k + 1}/{kills}: SIGKILL {victim} at {at:.0f}s (in flight {in_flight})")
            time.sleep(rng.uniform(0.5, 3.0))
            start(victim)
        producer.join()
        if producer.error is not None or producer.failed:
            result.failures.append(f"producer: {producer.error or producer.failed} failed")
        ends = end_offsets(stack.bootstrap, stack.topic)
        log(f"produced {producer.produced}; waiting for commits to reach the end offsets")

        def caught_up() -> bool:
            got = committed(stack.bootstrap, GROUP, stack.topic, PARTITIONS)
            return all(got.get(p, -1) >= end for p, end in ends.items() if end > 0)

        try:
            wait_for(caught_up, timeout=max(300.0, events / 500), interval=1.0, what="commits")
        except TimeoutError as exc:
            result.failures.append(str(exc))
        watch.stop()
        result.peak_accept_rate = watch.peak
        result.seconds = time.monotonic() - started
        _check(result, data_ids=data.expected_ids, invalid=data.invalid, stack=stack, url=url)
        for name, (process, _) in members.items():
            if not process.alive():
                result.failures.append(f"{name} exited on its own ({process.log_path})")
    log(result.report())
    return result


def _check(
    result: ChaosResult,
    *,
    data_ids: set[str],
    invalid: dict[bytes, str],
    stack: Stack,
    url: str,
) -> None:
    assert stack.broker is not None
    result.sandbox = sandbox_stats(url)
    accepted = sandbox_ids(url, DEMO_ACCOUNT["account_id"])
    result.missing = len(data_ids - accepted.keys())
    if result.missing:
        sample = sorted(data_ids - accepted.keys())[:5]
        result.failures.append(f"LOSS: {result.missing} valid events never accepted, e.g. {sample}")
    result.duplicates = sum(count - 1 for count in accepted.values() if count > 1)

    dlq = read_all(stack.bootstrap, stack.dlq_topic, timeout=60)
    result.dlq_records = len(dlq)
    seen: dict[bytes, str] = {}
    for message in dlq:
        headers = dict(message.headers() or [])
        reason = headers.get("xconv.reason", b"").decode()
        key = message.key() or b""
        result.dlq_duplicates += key in seen
        seen[key] = reason
        if key not in invalid:
            result.unexpected_dlq += 1
    for key, reason in invalid.items():
        if key not in seen:
            result.invalid_missing += 1
        elif seen[key] != reason:
            result.wrong_reason += 1
    if result.invalid_missing:
        result.failures.append(f"{result.invalid_missing} invalid events not dead-lettered")
    if result.wrong_reason:
        result.failures.append(f"{result.wrong_reason} dead letters with an unexpected reason")
    if result.unexpected_dlq:
        result.failures.append(f"{result.unexpected_dlq} valid events were dead-lettered")

    offsets = stack.broker.committed_offsets(GROUP)
    for (topic, partition), row in offsets.items():
        if topic == stack.topic and (row.committed is None or row.committed != row.log_end):
            result.partitions_behind[partition] = (row.committed, row.log_end)
    if len([t for t, _ in offsets if t == stack.topic]) != PARTITIONS:
        result.failures.append(f"kafka-consumer-groups listed {len(offsets)} partitions")
    if result.partitions_behind:
        result.failures.append(f"committed != log end: {result.partitions_behind}")

    # The bound: a crash re-delivers what its partitions held past the last commit: at
    # most max_buffered_events not yet committable, plus what became committable since
    # the last commit (peak rate x commit interval). A broker restart can cost each
    # member the same (its commits fail until the coordinator is back), so it counts
    # as one crash per consumer.
    crashes = len(result.kills) + result.broker_restarts * CONSUMERS
    per_crash = MAX_BUFFERED + math.ceil(result.peak_accept_rate * COMMIT_INTERVAL_S)
    result.duplicate_bound = crashes * per_crash
    if result.duplicates > result.duplicate_bound:
        result.failures.append(
            f"{result.duplicates} duplicates exceed the bound {result.duplicate_bound}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run_chaos(
        args.events,
        args.kills,
        args.seed,
        broker_restart=not args.no_broker_restart,
        workdir=args.workdir,
        log=lambda line: print(line, flush=True),
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
