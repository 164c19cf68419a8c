"""End-to-end scenarios on real components: a local broker, ``xconv sandbox``, ``xconv run``.

Each function runs one scenario once and returns plain numbers; ``bench.run_all`` repeats
them, takes medians and writes BENCHMARKS.md. One broker serves every run of a suite; each
run gets fresh topics, a fresh consumer group and a fresh sandbox, so runs do not see
each other's data.
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import tomli_w
from confluent_kafka import Consumer, TopicPartition

from bench.common import (
    PacedProducer,
    ProcessSampler,
    committed,
    consumer_account,
    default_routing,
    generate,
    produce_all,
    sandbox_account,
    sandbox_ids,
    sandbox_stats,
    thread_cpu_s,
    wait_for,
)
from consumer.settings import Settings
from consumer.transform import Conversion, Transformer
from consumer.transform.config import RouteSettings, RoutingSettings, TransformSettings
from devtools.stack import (
    DEMO_ACCOUNT,
    Process,
    Stack,
    create_topics,
    end_offsets,
    http_get,
    http_post,
    scrape,
)

PARTITIONS = 12
X_EVENTS_PER_S = 100_000 * 500 / 900  # X's documented budget: 100k requests of 500 per 15 min


@dataclass
class Pool:
    """Distinct generated events, tiled to any size with unique order ids (generating a
    realistic event costs far more than consuming it, so big runs reuse a pool)."""

    keys: list[bytes]
    values: list[bytes]
    valid: list[bool]
    _expected: dict[int, tuple[set[str], int]] = field(default_factory=dict, repr=False)

    @classmethod
    def make(cls, size: int, seed: int = 11, invalid_share: float = 0.01) -> Pool:
        data = generate(size, seed=seed, invalid_share=invalid_share)
        return cls(data.keys, data.values, [k not in data.invalid for k in data.keys])

    def tile(self, count: int) -> Iterator[tuple[bytes, bytes]]:
        size = len(self.values)
        for i in range(count):
            copy, j = divmod(i, size)
            value = self.values[j]
            if copy:
                value = value.replace(b'"order_id":"ORD-', b'"order_id":"ORD-%d-' % copy, 1)
            yield self.keys[j], value

    def tiled(self, count: int) -> tuple[list[bytes], list[bytes]]:
        keys: list[bytes] = []
        values: list[bytes] = []
        for key, value in self.tile(count):
            keys.append(key)
            values.append(value)
        return keys, values

    def expected(self, count: int) -> tuple[set[str], int]:
        """Conversion ids the API must accept for the first ``count`` tiled events, and how
        many of them must be dead-lettered (the consumer's transform is the ground truth)."""
        if count not in self._expected:
            transformer = Transformer(TransformSettings(preset="canonical"), default_routing())
            ids: set[str] = set()
            invalid = 0
            for _key, value in self.tile(count):
                result = transformer.transform(value)
                if isinstance(result, Conversion):
                    ids.add(result.conversion_id)
                else:
                    invalid += 1
            self._expected[count] = (ids, invalid)
        return self._expected[count]

    def valid_count(self, count: int) -> int:
        full, rest = divmod(count, len(self.values))
        return full * sum(self.valid) + sum(self.valid[:rest])


class Suite:
    """One broker for all runs; ``run_id`` names topics, groups and work files."""

    def __init__(self, workdir: Path) -> None:
        shutil.rmtree(workdir, ignore_errors=True)  # a previous suite's topics must not remain
        self.stack = Stack(workdir, partitions=PARTITIONS)
        try:
            self.stack.start_broker()
        except BaseException:
            self.stack.close()
            raise
        self._ids = itertools.count(1)
        self.sandbox: Process | None = None

    def close(self) -> None:
        self.stack.close()

    def new_run(self, sandbox_config: dict[str, Any]) -> tuple[str, str]:
        """Fresh topic + dead-letter topic and a fresh sandbox; returns (topic, run id)."""
        run = f"r{next(self._ids)}"
        topic = f"bench-{run}"
        create_topics(self.stack.bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 3})
        if self.sandbox is not None:
            self.sandbox.stop()
            # start_sandbox finds the URL in sandbox.log: the old one must not be there
            self.sandbox.log_path.rename(
                self.sandbox.log_path.with_name(f"sandbox-before-{run}.log")
            )
        self.stack.start_sandbox(sandbox_config)
        self.sandbox = self.stack.processes[-1]
        return topic, run

    def settings(self, topic: str = "unused") -> Settings:
        """The benchmarks' consumer settings for the demo account, in memory (the
        floors build their clients from these, as ``consumer`` does from its file)."""
        return Settings.model_validate(
            {
                "kafka": {"bootstrap_servers": self.stack.bootstrap, "topics": [topic]},
                "api": {"base_url": self.stack.sandbox_url, "version": "12"},
                "accounts": [
                    consumer_account(DEMO_ACCOUNT["account_id"], DEMO_ACCOUNT["pixel_id"])
                ],
                "transform": {"preset": "canonical"},
                "routing": {"default": dict(DEMO_ACCOUNT)},
            }
        )

    def consumer(
        self,
        topic: str,
        run: str,
        accounts: list[dict[str, Any]] | None = None,
        program: list[str] | None = None,
        **overrides: Any,
    ) -> tuple[Process, str, ProcessSampler]:
        """Start ``xconv run`` on ``topic`` with the demo account (or ``accounts``)."""
        account = consumer_account(DEMO_ACCOUNT["account_id"], DEMO_ACCOUNT["pixel_id"])
        account.update(overrides.pop("account", {}))
        config: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.stack.bootstrap,
                "topics": [topic],
                "group_id": f"xconv-{run}",
                "dead_letter_topic": f"{topic}.dlq",
            },
            "api": {"base_url": self.stack.sandbox_url, "version": "12"},
            "accounts": accounts or [account],
            "transform": {"preset": "canonical"},
            "routing": {"default": dict(DEMO_ACCOUNT)},
            "observability": {"http_host": "127.0.0.1", "log_format": "json"},
        }
        for section, values in overrides.items():
            if section == "routing":
                config[section] = dict(values)  # a route table replaces the default route
            else:
                config.setdefault(section, {}).update(values)
        config["observability"]["log_level"] = "warning"
        path = self.stack.workdir / f"config-{run}.toml"
        path.write_text(tomli_w.dumps(config))
        process, metrics_url = self.stack.start_consumer(
            path, name=f"consumer-{run}", program=program
        )
        sampler = ProcessSampler(process.popen.pid, interval=0.1)
        sampler.start()
        return process, metrics_url, sampler


def _metric(url: str, name: str) -> float:
    try:
        return scrape(url).get(name, 0.0)
    except OSError:
        return 0.0


def _wait_metric(url: str, name: str, proc: Process, what: str, timeout: float = 120) -> None:
    """Wait until a metric is non-zero; fail fast if the consumer died."""

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"consumer died; see {proc.log_path}")
        return _metric(url, name) > 0

    wait_for(ready, timeout, 0.02, what)


def _wait_committed(url: str, total: int, timeout: float, proc: Process) -> None:
    def done() -> bool:
        if not proc.alive():
            raise RuntimeError(f"consumer died; see {proc.log_path}")
        return _metric(url, "xconv_committed_offset") >= total

    wait_for(done, timeout, interval=0.05, what=f"committed offsets = {total}")


def raw_ceiling(bootstrap: str, topic: str, total: int) -> float:
    """confluent-kafka's plain Consumer reading the topic and discarding: events/s."""
    client = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{topic}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    client.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = 0
    first = 0.0
    try:
        while seen < total:
            batch = client.consume(2000, 1.0)
            if batch and not first:
                first = time.perf_counter()
            seen += sum(1 for m in batch if m.error() is None)
        return total / (time.perf_counter() - first)
    finally:
        client.close()


# --------------------------------------------------------------------------------------
# 2 + 3: throughput with the rate limit off, CPU per event, RSS, raw ceiling
# --------------------------------------------------------------------------------------


#: What ``throughput`` can run, each as ``PROGRAM run --config FILE`` on the same config:
#: ``xconv run``; ``xconv run`` with the transform replaced by a no-op
#: (bench/noop_engine.py); the naive baseline (bench/naive_baseline.py).
PIPELINES: dict[str, list[str] | None] = {
    "xconv": None,
    "noop": [sys.executable, "-m", "bench.noop_engine"],
    "naive": [sys.executable, "-m", "bench.naive_baseline"],
    "naive-noop": [sys.executable, "-m", "bench.naive_baseline", "--noop-transform"],
}


#: A budget no run reaches (per the default 900 s window): pacing out of the way.
UNPACED_REQUESTS = 100_000_000


def throughput(
    suite: Suite,
    pool: Pool,
    events: int,
    *,
    pipeline: str = "xconv",
    sandbox_validation: bool = True,
    paced: bool = True,
) -> dict[str, float]:
    """Consume ``events`` with the rate limit off; with the ``noop`` pipeline the engine's
    own cost (everything but the transform) is what the consumer's CPU measures. With
    ``sandbox_validation`` off the sandbox only counts conversions: the consumer's own
    ceiling. ``paced``: the account keeps X's real budget (100,000 requests per 15
    minutes, 111 requests/s: at about 300 events per request that, not the CPU, sets the
    rate, and idle time costs CPU too); unpaced, the budget is beyond reach (like the
    naive baseline, which has no pacing) and the consumer runs as fast as it can.

    The clock runs from the first fetch to the last commit; then ``verify`` checks what
    the sandbox accepted and what Kafka holds as committed (it raises on any loss)."""
    topic, run = suite.new_run(
        {
            "accounts": [_demo_sandbox_account({"enabled": False})],
            "validation": sandbox_validation,
        }
    )
    keys, values = pool.tiled(events)
    produce_all(suite.stack.bootstrap, topic, keys, values)
    sandbox_pid = suite.sandbox.popen.pid if suite.sandbox else 0
    sandbox_sampler = ProcessSampler(sandbox_pid, interval=0.5)
    unpaced: dict[str, Any] = {} if paced else {"requests_per_window": UNPACED_REQUESTS}
    proc, url, sampler = suite.consumer(topic, run, program=PIPELINES[pipeline], account=unpaced)
    group = f"xconv-{run}"
    if pipeline.startswith("naive"):  # no metrics endpoint: its log line, then Kafka's commits
        _wait_log(proc, b"first fetch", "first fetch")
    else:
        _wait_metric(url, "xconv_events_consumed_total", proc, "first fetch")
    start, cpu0 = time.perf_counter(), sampler.proc.cpu_times()
    threads0 = thread_cpu_s(proc.popen.pid)
    sandbox_sampler.sample()
    sandbox_cpu0 = sandbox_sampler.cpu_s
    # Every pipeline alike: Kafka's view, never the consumer's /metrics (a scrape every
    # 50 ms costs the measured process real CPU: rendering and sending the page).
    _wait_kafka_committed(suite.stack.bootstrap, group, topic, events, 900, proc)
    seconds = time.perf_counter() - start
    cpu1 = sampler.proc.cpu_times()
    threads1 = thread_cpu_s(proc.popen.pid)
    sandbox_sampler.sample()
    sampler.stop()
    accepted = sandbox_stats(suite.stack.sandbox_url)["accepted_conversions"]
    code = proc.stop()
    verify(suite, pool, events, topic, group, pipeline)
    if code != 0:
        raise RuntimeError(f"{pipeline} exited with {code}; see {proc.log_path}")
    ceiling = raw_ceiling(suite.stack.bootstrap, topic, events)
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    split = {group: threads1[group] - threads0[group] for group in ("loop", "librdkafka")}
    split["other"] = cpu - sum(split.values())
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "cpu_us_per_event": cpu / events * 1e6,
        "consumer_cores": cpu / seconds,
        "sandbox_cores": (sandbox_sampler.cpu_s - sandbox_cpu0) / seconds,
        "peak_rss_mb": sampler.peak_rss / 2**20,
        "raw_ceiling_per_s": ceiling,
        "ratio_to_ceiling": events / seconds / ceiling,
        "accepted_ok": float(accepted >= pool.valid_count(events)),
        # Where the process's CPU went: its loop thread, librdkafka's threads, the rest
        # (the process total less those two, so the three add up to cpu_us_per_event).
        **{f"{group}_cpu_us_per_event": used / events * 1e6 for group, used in split.items()},
    }


def verify(suite: Suite, pool: Pool, events: int, topic: str, group: str, pipeline: str) -> None:
    """Raise unless every offset is committed (Kafka's own view), every valid event's
    conversion id was accepted by the sandbox and every invalid event dead-lettered.

    The no-op pipeline sends one prepared conversion for every event, so for it the
    check is by count: accepted conversions plus dead letters cover every event."""
    bootstrap = suite.stack.bootstrap
    ends = end_offsets(bootstrap, topic)
    done = committed(bootstrap, group, topic, PARTITIONS)
    behind = {p: (done.get(p), end) for p, end in ends.items() if done.get(p) != end}
    problems = [f"committed != end offset on partitions {behind}"] if behind else []
    dead = sum(end_offsets(bootstrap, f"{topic}.dlq").values())
    if pipeline.endswith("noop"):
        accepted = sandbox_stats(suite.stack.sandbox_url)["accepted_conversions"]
        if accepted + dead < events:
            problems.append(f"{accepted} accepted + {dead} dead letters < {events} events")
    else:
        want, invalid = pool.expected(events)
        got = set(sandbox_ids(suite.stack.sandbox_url))
        if want - got:
            problems.append(f"{len(want - got)} of {len(want)} valid events never accepted")
        if got - want:
            problems.append(f"{len(got - want)} unexpected conversion ids accepted")
        if dead < invalid:
            problems.append(f"{dead} dead letters for {invalid} invalid events")
    if problems:
        raise RuntimeError(f"{pipeline} lost events: " + "; ".join(problems))


def _wait_log(proc: Process, needle: bytes, what: str, timeout: float = 120) -> None:
    def seen() -> bool:
        if not proc.alive():
            raise RuntimeError(f"consumer died; see {proc.log_path}")
        return needle in proc.log_path.read_bytes()

    wait_for(seen, timeout, 0.02, what)


def _wait_kafka_committed(
    bootstrap: str, group: str, topic: str, total: int, timeout: float, proc: Process
) -> None:
    """Poll the group's committed offsets (one client, every 50 ms) until they sum to total."""
    client = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def done() -> bool:
        if not proc.alive():
            raise RuntimeError(f"consumer died; see {proc.log_path}")
        return sum(max(tp.offset, 0) for tp in client.committed(parts, timeout=10)) >= total

    try:
        wait_for(done, timeout, interval=0.05, what=f"committed offsets = {total}")
    finally:
        client.close()


def _demo_sandbox_account(rate_limit: dict[str, Any]) -> dict[str, Any]:
    return sandbox_account(
        DEMO_ACCOUNT["account_id"],
        DEMO_ACCOUNT["pixel_id"],
        DEMO_ACCOUNT["event_id"],
        rate_limit=rate_limit,
    )


# --------------------------------------------------------------------------------------
# 4: rate-limit pacing
# --------------------------------------------------------------------------------------


def pacing(
    suite: Suite, pool: Pool, *, headers: bool, requests: int, window_s: float, windows: int
) -> dict[str, float]:
    """A backlog far above the budget; budget use over ``windows`` whole windows."""
    batch = 20
    events = requests * batch * (windows + 2)
    limit = {
        "enabled": True,
        "send_headers": headers,
        "requests_per_window": requests,
        "window_s": window_s,
    }
    topic, run = suite.new_run({"accounts": [_demo_sandbox_account(limit)]})
    keys, values = pool.tiled(events)
    produce_all(suite.stack.bootstrap, topic, keys, values)
    account = {"requests_per_window": requests, "window_s": window_s}
    proc, url, sampler = suite.consumer(
        topic, run, account=account, batching={"max_events": batch, "linger_ms": 50}
    )
    sandbox = suite.stack.sandbox_url

    def requests_seen() -> int:
        return int(sum(sandbox_stats(sandbox)["requests_by_status"].values()))

    wait_for(lambda: requests_seen() > 0, 120, 0.02, "first request")
    first = time.monotonic()
    time.sleep(max(0.0, first + windows * window_s - 0.2 - time.monotonic()))
    stats = sandbox_stats(sandbox)
    sampler.stop()
    limited = _metric(url, "xconv_rate_limited_total")
    proc.stop()
    ok = stats["requests_by_status"].get("200", 0)
    return {
        "budget_used": ok / (requests * windows),
        "accepted_requests": ok,
        "budget": requests * windows,
        "http_429": stats["rate_limited"],
        "client_429": limited,
    }


# --------------------------------------------------------------------------------------
# 5: outage
# --------------------------------------------------------------------------------------


def outage(suite: Suite, pool: Pool, *, events: int, outage_s: float) -> dict[str, float]:
    """503 on every request for ``outage_s`` while a backlog waits; valid events only."""
    topic, run = suite.new_run({"accounts": [_demo_sandbox_account({"enabled": False})]})
    keys, values = pool.tiled(events)
    produce_all(suite.stack.bootstrap, topic, keys, values)
    sandbox = suite.stack.sandbox_url
    http_post(sandbox + "/_sandbox/faults", {"error_503": 1.0})
    proc, url, sampler = suite.consumer(topic, run)
    started = time.monotonic()
    peak_paused = peak_in_flight = 0.0
    committed_during = 0.0
    accepted_during = 0
    while time.monotonic() - started < outage_s:
        metrics = _scrape_quiet(url)
        peak_paused = max(peak_paused, metrics.get("xconv_partitions_paused", 0.0))
        peak_in_flight = max(peak_in_flight, metrics.get("xconv_events_in_flight", 0.0))
        committed_during = max(committed_during, metrics.get("xconv_committed_offset", 0.0))
        accepted_during = max(accepted_during, sandbox_stats(sandbox)["accepted_conversions"])
        time.sleep(0.2)
    rss_during = sampler.peak_rss
    http_post(sandbox + "/_sandbox/faults", {"error_503": 0.0})
    recovered = time.monotonic()
    _wait_committed(url, events, timeout=900, proc=proc)
    drain = time.monotonic() - recovered
    sampler.stop()
    proc.stop()
    return {
        "events": events,
        "outage_s": outage_s,
        "peak_rss_mb_outage": rss_during / 2**20,
        "peak_rss_mb": sampler.peak_rss / 2**20,
        "peak_partitions_paused": peak_paused,
        "peak_in_flight": peak_in_flight,
        "committed_during_outage": committed_during,
        "accepted_during_outage": float(accepted_during),
        "drain_s": drain,
        "drain_events_per_s": events / drain,
    }


def _scrape_quiet(url: str) -> dict[str, float]:
    try:
        return scrape(url)
    except OSError:
        return {}


# --------------------------------------------------------------------------------------
# 6: latency at a fixed rate
# --------------------------------------------------------------------------------------


def latency(suite: Suite, pool: Pool, *, rate: float, seconds: float) -> dict[str, float]:
    """Produce time (recorded per order id when handed to the producer) to the sandbox's
    acceptance time (``received_at`` of its recent-conversions ring); one host clock."""
    events = int(rate * seconds)
    config = {
        "accounts": [_demo_sandbox_account({"enabled": False})],
        "recent_conversions": events + 1000,
    }
    topic, run = suite.new_run(config)
    proc, url, sampler = suite.consumer(topic, run)
    wait_for(
        lambda: proc.alive() and "xconv_events_in_flight" in _scrape_quiet(url), 120, 0.1, "up"
    )
    time.sleep(3.0)  # let the group assignment settle before the clock starts
    produced_at: dict[bytes, float] = {}

    def stamp(value: bytes) -> bytes:
        start = value.index(b'"order_id":"') + 12
        produced_at[value[start : value.index(b'"', start)]] = time.time()
        return value

    producer = PacedProducer(suite.stack.bootstrap, topic, pool.tile(events), rate, stamp=stamp)
    producer.start()
    producer.join()
    total = sum(end_offsets(suite.stack.bootstrap, topic).values())
    _wait_committed(url, total, timeout=300, proc=proc)
    sampler.stop()
    body = orjson.loads(
        http_get(f"{suite.stack.sandbox_url}/_sandbox/conversions?limit={events + 1000}", 60)
    )
    proc.stop()
    delays = sorted(
        item["received_at"] - produced_at[item["conversion"]["conversion_id"].encode()]
        for item in body["conversions"]
        if item["conversion"]["conversion_id"].encode() in produced_at
    )
    return {
        "rate": rate,
        "samples": len(delays),
        "p50_ms": _quantile(delays, 0.50) * 1000,
        "p99_ms": _quantile(delays, 0.99) * 1000,
        "max_ms": delays[-1] * 1000,
    }


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


# --------------------------------------------------------------------------------------
# 7: many accounts, one throttled
# --------------------------------------------------------------------------------------


def many_accounts(
    suite: Suite, *, accounts: int, events_per_account: int, throttle: bool
) -> dict[str, float]:
    """``accounts`` accounts routed by the event's ``shop`` field; account 0 optionally
    throttled hard (10 requests per 10 s). Returns the others' completion time."""
    ids = [(f"acct{i:02d}", f"px{i:02d}", f"ev{i:02d}") for i in range(accounts)]
    routes = {
        f"shop{i}": RouteSettings(account_id=a, pixel_id=p, event_id=e)
        for i, (a, p, e) in enumerate(ids)
    }
    routing = RoutingSettings(key_field="shop", routes=routes)

    def decorate(i: int, body: dict[str, Any]) -> None:
        body["shop"] = f"shop{i % accounts}"

    count = accounts * events_per_account
    data = generate(count, seed=5, invalid_share=0.0, routing=routing, decorate=decorate)
    hard = {"enabled": True, "requests_per_window": 10, "window_s": 10.0}
    sandbox_accounts = [
        sandbox_account(a, p, e, rate_limit=hard if throttle and i == 0 else {"enabled": False})
        for i, (a, p, e) in enumerate(ids)
    ]
    topic, run = suite.new_run({"accounts": sandbox_accounts})
    produce_all(suite.stack.bootstrap, topic, data.keys, data.values)
    expected = [0] * accounts
    for index, key in enumerate(data.keys):
        expected[index % accounts] += key not in data.invalid
    consumer_accounts = [
        consumer_account(
            a, p, **({"requests_per_window": 2, "window_s": 10.0} if throttle and i == 0 else {})
        )
        for i, (a, p, _) in enumerate(ids)
    ]
    config_routing = {
        "key_field": "shop",
        "routes": {k: v.model_dump() for k, v in routes.items()},
    }
    proc, _url, sampler = suite.consumer(
        topic,
        run,
        accounts=consumer_accounts,
        routing=config_routing,
        delivery={"drain_timeout_s": 2.0},
    )
    sandbox = suite.stack.sandbox_url

    def accepted() -> list[int]:
        per = sandbox_stats(sandbox)["accounts"]
        return [int(per.get(a, {}).get("accepted_conversions", 0)) for a, _, _ in ids]

    wait_for(lambda: sum(accepted()) > 0, 120, 0.02, "first acceptance")
    first = time.monotonic()
    wait_for(
        lambda: all(got >= want for got, want in list(zip(accepted(), expected, strict=True))[1:]),
        600,
        0.1,
        "other accounts done",
    )
    others_s = time.monotonic() - first
    throttled_done = accepted()[0]
    sampler.stop()
    proc.stop()
    others = sum(expected[1:])
    return {
        "accounts": accounts,
        "others_events": others,
        "others_s": others_s,
        "others_events_per_s": others / others_s,
        "throttled_accepted": throttled_done,
        "throttled_expected": expected[0],
        "peak_rss_mb": sampler.peak_rss / 2**20,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


Runner = Callable[[], dict[str, float]]
