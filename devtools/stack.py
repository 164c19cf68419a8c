"""A local stack for the demo, benchmarks and the chaos harness.

Real components only: a KRaft broker from ``devtools.kafka``, ``xconv sandbox`` and
``xconv run`` as separate processes talking over loopback. Every process started here
is stopped by ``Stack.close()`` (also on errors, through the context manager).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson
import tomli_w
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from devtools.kafka import KafkaBroker, free_port

XCONV = [sys.executable, "-m", "consumer"]
DEMO_ACCOUNT = {"account_id": "18ce552mlaq", "pixel_id": "oka17", "event_id": "ol288"}
_LISTEN_RE = re.compile(r"(http://[0-9.]+:\d+)")


def http_get(url: str, timeout: float = 5.0) -> bytes:
    """A tiny GET for loopback admin endpoints (no extra dependency in dev tools)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


def http_post(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> bytes:
    import urllib.request

    request = urllib.request.Request(
        url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
    )
    for future in futures.values():
        future.result(timeout=30)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    client = Consumer({"bootstrap.servers": bootstrap, "group.id": "xconv-devtools-probe"})
    try:
        meta = client.list_topics(topic, timeout=10)
        out: dict[int, int] = {}
        for p in meta.topics[topic].partitions:
            _, out[p] = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        return out
    finally:
        client.close()


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` up to its current end offsets."""
    ends = end_offsets(bootstrap, topic)
    client = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "xconv-devtools-reader",
            "enable.auto.commit": False,
        }
    )
    out: list[Any] = []
    try:
        client.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in client.consume(1000, 0.5):
                if msg.error():
                    continue
                out.append(msg)
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= ends[partition]:
                    remaining.discard(partition)
    finally:
        client.close()
    return out


def scrape(url: str) -> dict[str, float]:
    """GET a ``/metrics`` page and parse it (see ``parse_metrics``)."""
    return parse_metrics(http_get(url).decode())


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{label="v",...}': value}, plus per-name sums under 'name'."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


@dataclass
class Process:
    """A child process with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Stack:
    """Broker + sandbox (+ consumers) under ``workdir``."""

    workdir: Path
    partitions: int = 6
    topic: str = "purchases"
    dlq_topic: str = "purchases.dlq"
    parking_topic: str = "purchases.parking"
    broker: KafkaBroker | None = None
    sandbox_url: str = ""
    processes: list[Process] = field(default_factory=list)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    def start_broker(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = KafkaBroker(self.workdir / "kafka").start()
        create_topics(
            self.bootstrap, {self.topic: self.partitions, self.dlq_topic: 3, self.parking_topic: 3}
        )

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Process:
        log_path = self.workdir / f"{name}.log"
        log_fh: IO[bytes] = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        log_fh.close()
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_sandbox(self, config: Mapping[str, Any] | None = None) -> str:
        argv = [*XCONV, "sandbox", "--host", "127.0.0.1", "--port", "0"]
        if config is not None:
            path = self.workdir / "sandbox.json"
            path.write_bytes(orjson.dumps(config))
            argv += ["--config", str(path)]
        process = self.spawn("sandbox", argv)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = _LISTEN_RE.search(process.log_path.read_text(errors="replace"))
            if match:
                self.sandbox_url = match.group(1)
                return self.sandbox_url
            if not process.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"sandbox did not start; see {process.log_path}")

    def consumer_config(self, **overrides: Any) -> Path:
        """Write a consumer config for the demo account (OAuth 1.0a demo credentials)."""
        from consumer.sandbox.config import (
            DEMO_ACCESS_TOKEN,
            DEMO_ACCESS_TOKEN_SECRET,
            DEMO_CONSUMER_KEY,
            DEMO_CONSUMER_SECRET,
        )

        account = {
            "account_id": DEMO_ACCOUNT["account_id"],
            "pixel_id": DEMO_ACCOUNT["pixel_id"],
            "auth": "oauth1",
            "consumer_key": DEMO_CONSUMER_KEY,
            "consumer_secret": DEMO_CONSUMER_SECRET,
            "access_token": DEMO_ACCESS_TOKEN,
            "access_token_secret": DEMO_ACCESS_TOKEN_SECRET,
        }
        account.update(overrides.pop("account", {}))
        config: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "topics": [self.topic],
                "group_id": "xconv-demo",
                "dead_letter_topic": self.dlq_topic,
                "parking_topic": self.parking_topic,
            },
            "api": {"base_url": self.sandbox_url, "version": "12"},
            "accounts": [account],
            "transform": {"preset": "auto"},
            "routing": {"default": dict(DEMO_ACCOUNT)},
            "observability": {"http_host": "127.0.0.1", "http_port": 0, "log_format": "json"},
        }
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        path = self.workdir / "config.toml"
        path.write_text(tomli_w.dumps(config))
        return path

    def start_consumer(
        self, config: Path, name: str = "consumer", program: list[str] | None = None
    ) -> tuple[Process, str]:
        """Start ``xconv run`` (or ``program`` with the same arguments); returns the
        process and its metrics URL."""
        port = free_port()
        process = self.spawn(
            name,
            [*(program or XCONV), "run", "--config", str(config)],
            env={"XCONV_OBSERVABILITY__HTTP_PORT": str(port)},
        )
        return process, f"http://127.0.0.1:{port}/metrics"

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop(signal.SIGTERM, timeout=20)
        if self.broker is not None:
            self.broker.stop()
