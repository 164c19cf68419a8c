"""Shared pieces of the benchmarks and the chaos harness: data sets, paced producing,
process sampling, sandbox configs, machine description.

Ground truth comes from running the same ``Transformer`` the consumer runs on every
produced event, so "which conversion ids must reach the API" and "which events must be
dead-lettered, with which reason" do not depend on the generator's own bookkeeping.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.samples import SampleGenerator
from consumer.sandbox.config import (
    DEMO_ACCESS_TOKEN,
    DEMO_ACCESS_TOKEN_SECRET,
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    DEMO_PIXEL_TOKEN,
)
from consumer.transform import Conversion, Transformer
from consumer.transform.config import RouteSettings, RoutingSettings, TransformSettings
from devtools.kafka import KAFKA_VERSION
from devtools.stack import DEMO_ACCOUNT, http_get, scrape

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ROOT = REPO_ROOT / ".run" / "bench"


@dataclass(slots=True)
class Dataset:
    """Produced messages plus what the service must do with each of them."""

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    expected_ids: set[str] = field(default_factory=set)  # must be accepted by the API
    invalid: dict[bytes, str] = field(default_factory=dict)  # key -> expected reason

    def __len__(self) -> int:
        return len(self.values)


def default_routing() -> RoutingSettings:
    return RoutingSettings(default=RouteSettings(**DEMO_ACCOUNT))


def generate(
    count: int,
    *,
    seed: int,
    invalid_share: float,
    routing: RoutingSettings | None = None,
    decorate: Callable[[int, dict[str, Any]], None] | None = None,
) -> Dataset:
    """``count`` canonical events; ``decorate(i, body)`` may add fields (routing keys)."""
    gen = SampleGenerator(seed=seed, invalid_share=invalid_share)
    transformer = Transformer(TransformSettings(preset="canonical"), routing or default_routing())
    data = Dataset()
    for i, sample in enumerate(gen.events(count)):
        value = sample.value
        if decorate is not None and sample.defect != "malformed_json":
            body = orjson.loads(value)
            decorate(i, body)
            value = orjson.dumps(body)
        data.keys.append(sample.key)
        data.values.append(value)
        result = transformer.transform(value)
        if isinstance(result, Conversion):
            data.expected_ids.add(result.conversion_id)
        else:
            data.invalid[sample.key] = result.reason
    return data


def new_producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "enable.idempotence": True,  # a broker restart must not duplicate messages
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "log_level": 0,  # connection-refused noise while the harness restarts the broker
        }
    )


def produce_all(bootstrap: str, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    producer = new_producer(bootstrap)
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered")


class PacedProducer(threading.Thread):
    """Produces messages at a steady rate in the background (the stream keeps flowing
    while the harness kills consumers and restarts the broker)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        items: Iterable[tuple[bytes, bytes]],
        rate: float,
        stamp: Callable[[bytes], bytes] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="paced-producer")
        self.bootstrap, self.topic, self.items, self.rate = bootstrap, topic, items, rate
        self.stamp = stamp
        self.produced = 0
        self.failed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = new_producer(self.bootstrap)

            def on_delivery(err: Any, _msg: Any) -> None:
                if err is not None:
                    self.failed += 1

            start = time.monotonic()
            for key, raw in self.items:
                due = start + self.produced / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    producer.poll(delay)
                value = raw if self.stamp is None else self.stamp(raw)
                while True:
                    try:
                        producer.produce(self.topic, value, key, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                self.produced += 1
                producer.poll(0)
            left = producer.flush(300)
            self.failed += left
        except BaseException as exc:  # reported by the caller
            self.error = exc


class ProcessSampler(threading.Thread):
    """Samples a process's RSS (peak) and CPU times; optionally a metrics URL too."""

    def __init__(
        self,
        pid: int,
        interval: float = 0.2,
        metrics_url: str | None = None,
        keys: Sequence[str] = (),
    ) -> None:
        super().__init__(daemon=True, name="sampler")
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.metrics_url, self.keys = metrics_url, keys
        self.peak_rss = 0
        self.cpu_s = 0.0
        self.peaks: dict[str, float] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        try:
            with self.proc.oneshot():
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
                times = self.proc.cpu_times()
                self.cpu_s = times.user + times.system
        except psutil.Error:
            return
        if self.metrics_url:
            try:
                metrics = scrape(self.metrics_url)
            except OSError:
                return
            picked = {k: metrics.get(k, 0.0) for k in self.keys}
            self.samples.append((time.monotonic(), picked))
            for k, v in picked.items():
                self.peaks[k] = max(self.peaks.get(k, v), v)

    def stop(self) -> None:
        self.sample()
        self._stop_event.set()
        self.join(5)


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Committed offsets via the client (cheap, for polling; final checks use Kafka's tool)."""
    client = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = client.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        client.close()


def wait_for(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.5, what: str = "condition"
) -> float:
    """Seconds it took; raises TimeoutError naming ``what``."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def sandbox_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = orjson.loads(http_get(url + "/_sandbox/stats"))
    return stats


def sandbox_ids(url: str, account_id: str | None = None) -> dict[str, int]:
    query = f"?account_id={account_id}" if account_id else ""
    body = orjson.loads(http_get(url + "/_sandbox/conversion-ids" + query, timeout=60))
    ids: dict[str, int] = body["conversion_ids"]
    return ids


def sandbox_account(
    account_id: str,
    pixel_id: str,
    event_id: str,
    *,
    rate_limit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A sandbox account with the demo credentials (one key pair may serve many accounts)."""
    return {
        "account_id": account_id,
        "pixel_id": pixel_id,
        "event_ids": [event_id],
        "consumer_key": DEMO_CONSUMER_KEY,
        "consumer_secret": DEMO_CONSUMER_SECRET,
        "access_token": DEMO_ACCESS_TOKEN,
        "access_token_secret": DEMO_ACCESS_TOKEN_SECRET,
        "pixel_token": DEMO_PIXEL_TOKEN,
        "rate_limit": dict(rate_limit or {"enabled": False}),
    }


def process_cpu_s() -> float:
    """This process's user + system CPU seconds, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: How ``thread_cpu_s`` groups a process's threads.
THREAD_GROUPS = ("loop", "librdkafka", "other")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s live threads by group (Linux ``/proc``): ``loop`` is the
    main thread (the asyncio loop), ``librdkafka`` the threads librdkafka starts (named
    ``rdk:*``), ``other`` the rest (the executor threads that build confluent-kafka's
    message objects, and any helper). A thread that ended is missing from ``other``:
    take the process total less the first two for it."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(THREAD_GROUPS, 0.0)
    task_dir = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task_dir):
        try:
            comm = (task_dir / tid / "comm").read_text().strip()
            fields = (task_dir / tid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended between the listing and the read
        group = "loop" if int(tid) == pid else "librdkafka" if comm.startswith("rdk:") else "other"
        out[group] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def consumer_account(account_id: str, pixel_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "pixel_id": pixel_id,
        "auth": "oauth1",
        "consumer_key": DEMO_CONSUMER_KEY,
        "consumer_secret": DEMO_CONSUMER_SECRET,
        "access_token": DEMO_ACCESS_TOKEN,
        "access_token_secret": DEMO_ACCESS_TOKEN_SECRET,
        **extra,
    }


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    java = "?"
    try:
        out = subprocess.run(
            ["java", "-version"], check=False, capture_output=True, text=True, timeout=20
        )
        java = (out.stderr or out.stdout).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "confluent-kafka": _version("confluent-kafka"),
        "librdkafka": _librdkafka(),
        "kafka": KAFKA_VERSION,
        "java": java,
        "aiohttp": _version("aiohttp"),
    }


def _librdkafka() -> str:
    import confluent_kafka

    return str(confluent_kafka.libversion()[0])
