"""Tenant isolation (issue 12): a sick ad account never stalls a healthy one.

Two accounts are routed from the same partitions (the canonical preset's
``routing_key``: "sick" or "healthy", events interleaved 1:1). The sandbox answers the
sick account with a forced status (``status_overrides``: 500 or 401) and the healthy one
normally. With ``delivery.stuck_policy = "park"`` the sick account's events move to the
parking topic once its batch has failed for ``park_after_s`` (at once for 401), the
source partitions commit while it is still sick, and after the fault is cleared every
parked event is delivered from the parking topic.

Every test checks the contract from the outside, as ``tests/integration/test_engine.py``
does: each valid conversion id reaches the sandbox (or the dead-letter topic with a
reason), and the group's committed offsets reach the log end on the source topic and on
the parking topic, read with Kafka's own ``kafka-consumer-groups`` tool at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomli_w
from confluent_kafka import KafkaError, Producer

from consumer.samples import SampleGenerator
from consumer.sandbox.config import demo_account
from devtools.kafka import BrokerHandle
from tests.fixtures.engine import (
    ROOT,
    TP,
    EngineEnv,
    EngineProcess,
    OffsetsProbe,
    Produced,
    TopicTail,
    wait_until,
)
from tests.fixtures.kafka import CreateTopic
from tests.fixtures.liveness import labelled, status_count
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]

SICK = demo_account().account_id  # the sandbox's first account: EngineEnv.config's account
HEALTHY: dict[str, Any] = {
    "account_id": "acctok",
    "pixel_id": "pxok",
    "event_ids": ["evok"],
    "consumer_key": "ckok",
    "consumer_secret": "csok",
    "access_token": "atok",
    "access_token_secret": "atsok",
}
MAX_BUFFERED = 500  # the settings' minimum
FETCH_BATCH = 50
PARK_AFTER_S = 2.0
PROBE_INITIAL_S = 0.5
PROBE_MAX_S = 2.0
PARK_HEADERS = (
    "xconv.park.account",
    "xconv.park.attempts",
    "xconv.park.first_failure",
    "xconv.park.reason",
    "xconv.park.parks",
    "xconv.park.time",
    "xconv.source.topic",
    "xconv.source.partition",
    "xconv.source.offset",
)
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TRACE_HEADER = "x-test-trace"


# --------------------------------------------------------------------------------------
# producing interleaved events of two accounts
# --------------------------------------------------------------------------------------


@dataclass
class Mixed:
    """What a test produced: positions, ids, and which account each position is for."""

    produced: Produced = field(default_factory=Produced)
    owner: dict[TP, str] = field(default_factory=dict)  # position -> "sick" / "healthy"
    trace: dict[TP, bytes] = field(default_factory=dict)  # position -> TRACE_HEADER value

    def positions(self, shop: str) -> set[TP]:
        """Valid positions routed to ``shop``."""
        return {pos for pos in self.produced.valid if self.owner[pos] == shop}

    def ids(self, shop: str) -> set[str]:
        return {self.produced.valid[pos] for pos in self.positions(shop)}

    def by_id(self) -> dict[str, TP]:
        return {cid: pos for pos, cid in self.produced.valid.items()}


def produce_mixed(
    env: EngineEnv, per_account: int, *, seed: int, invalid_share: float = 0.0
) -> Mixed:
    """``per_account`` events for each shop, alternating, keyed so both share partitions.

    Valid events get a unique ``conversion_id``; every event carries a ``TRACE_HEADER``
    header so a test can check that parking keeps the original headers.
    """
    prefix = uuid.uuid4().hex[:8]
    gen = SampleGenerator(seed=seed, invalid_share=invalid_share)
    pending: list[tuple[bytes, bytes | None, str, str | None, str | None, bytes]] = []
    for n, event in enumerate(gen.events(2 * per_account)):
        shop = "sick" if n % 2 == 0 else "healthy"
        value = event.value
        cid: str | None = None
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            doc["routing_key"] = shop
            if event.valid:
                cid = f"{prefix}-{n}"
                doc["conversion_id"] = cid
            value = orjson.dumps(doc)
        trace = f"{prefix}-trace-{n}".encode()
        pending.append((value, event.key, shop, cid, event.expected_reason, trace))

    mixed = Mixed()
    errors: list[str] = []
    producer = Producer({"bootstrap.servers": env.bootstrap, "acks": "all", "linger.ms": 10})

    def report(
        value: bytes, key: bytes | None, shop: str, cid: str | None, reason: str | None, tr: bytes
    ) -> Callable[[KafkaError | None, Any], None]:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
                return
            pos = (int(msg.partition()), int(msg.offset()))
            mixed.produced.values[pos] = value
            mixed.produced.keys[pos] = key
            mixed.owner[pos] = shop
            mixed.trace[pos] = tr
            if reason is not None:
                mixed.produced.invalid[pos] = reason
            elif cid is not None:
                mixed.produced.valid[pos] = cid

        return callback

    for value, key, shop, cid, reason, trace in pending:
        while True:
            try:
                producer.produce(
                    env.topic,
                    value=value,
                    key=key,
                    headers=[(TRACE_HEADER, trace)],
                    on_delivery=report(value, key, shop, cid, reason, trace),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if left or errors or mixed.produced.total != len(pending):
        raise AssertionError(f"produce: {left} unacknowledged, errors {errors[:3]}")
    assert len({p for p, _ in mixed.produced.values}) > 1, "events must share partitions"
    for shop in ("sick", "healthy"):
        parts = {p for p, _ in mixed.positions(shop)}
        assert len(parts) > 1, f"{shop} events on one partition only"
    return mixed


class Trickle:
    """A steady trickle of the healthy account's events (``per_s``) in a thread, as a
    live topic has: the engine sets a sick account's events aside only while another
    account delivers (in an outage of every account it would rewrite the backlog for
    nothing). ``stop`` merges what it produced into ``mixed``."""

    def __init__(self, env: EngineEnv, mixed: Mixed, *, seed: int, per_s: float = 20.0):
        self.env, self.mixed, self.per_s = env, mixed, per_s
        self.prefix = uuid.uuid4().hex[:8]
        events = SampleGenerator(seed=seed).events(int(per_s * 120))
        self._values = iter(list(events))
        self._produced = Mixed()
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(60)
        assert not self._errors, self._errors[:3]
        got = self._produced
        self.mixed.produced.merge(got.produced)
        self.mixed.owner.update(got.owner)
        self.mixed.trace.update(got.trace)

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.env.bootstrap, "acks": "all"})
        got = self._produced
        for n, event in enumerate(self._values):
            if self._stop.is_set():
                break
            doc = orjson.loads(event.value)
            cid = f"{self.prefix}-t{n}"
            doc["routing_key"], doc["conversion_id"] = "healthy", cid
            value, trace = orjson.dumps(doc), f"{self.prefix}-trace-{n}".encode()

            def report(
                err: KafkaError | None,
                msg: Any,
                value: bytes = value,
                cid: str = cid,
                key: bytes = event.key,
                trace: bytes = trace,
            ) -> None:
                if err is not None:
                    self._errors.append(str(err))
                    return
                pos = (int(msg.partition()), int(msg.offset()))
                got.produced.values[pos], got.produced.keys[pos] = value, key
                got.produced.valid[pos] = cid
                got.owner[pos], got.trace[pos] = "healthy", trace

            producer.produce(
                self.env.topic,
                value=value,
                key=event.key,
                headers=[(TRACE_HEADER, trace)],
                on_delivery=report,
            )
            producer.poll(0)
            self._stop.wait(1.0 / self.per_s)
        if producer.flush(30):
            self._errors.append("trickle: unacknowledged messages")


# --------------------------------------------------------------------------------------
# configs and sandboxes
# --------------------------------------------------------------------------------------


def sandbox_config(status: int | None) -> dict[str, Any]:
    """The demo account (sick when ``status`` is given) and the healthy one, no limits."""
    healthy = {**HEALTHY, "rate_limit": {"enabled": False}}
    sick = demo_account().model_dump()
    sick["rate_limit"] = {**sick["rate_limit"], "enabled": False}
    config: dict[str, Any] = {"accounts": [sick, healthy]}
    if status is not None:
        config["faults"] = {"status_overrides": {SICK: status}}
    return config


def two_account_config(
    env: EngineEnv,
    sandbox: SandboxHandle,
    parking: str,
    *,
    policy: str = "park",
    healthy_requests_per_s: int | None = None,
    name: str = "engine",
    kafka: Mapping[str, Any] | None = None,
    delivery: Mapping[str, Any] | None = None,
    batching: Mapping[str, Any] | None = None,
) -> Path:
    """Shop "sick" -> the demo account, shop "healthy" -> HEALTHY; one parking topic.

    ``healthy_requests_per_s`` paces the healthy account (client side, a 1 s window).
    """
    path = env.config(
        sandbox,
        name=name,
        kafka={"fetch_batch_size": FETCH_BATCH, "parking_topic": parking, **(kafka or {})},
        batching={"max_events": 10, "linger_ms": 20, **(batching or {})},
        delivery={
            "max_buffered_events": MAX_BUFFERED,
            "resume_ratio": 0.5,
            "stuck_policy": policy,
            "park_after_s": PARK_AFTER_S,
            "probe_initial_s": PROBE_INITIAL_S,
            "probe_max_s": PROBE_MAX_S,
            **(delivery or {}),
        },
    )
    data = tomllib.loads(path.read_text())
    healthy: dict[str, Any] = {
        "account_id": HEALTHY["account_id"],
        "pixel_id": HEALTHY["pixel_id"],
        "auth": "oauth1",
        "consumer_key": HEALTHY["consumer_key"],
        "consumer_secret": HEALTHY["consumer_secret"],
        "access_token": HEALTHY["access_token"],
        "access_token_secret": HEALTHY["access_token_secret"],
    }
    if healthy_requests_per_s is not None:
        healthy["requests_per_window"] = healthy_requests_per_s
        healthy["window_s"] = 1.0
    data["accounts"].append(healthy)
    data["routing"] = {
        "routes": {
            "sick": {
                "account_id": sandbox.account_id,
                "pixel_id": sandbox.pixel_id,
                "event_id": sandbox.event_id,
            },
            "healthy": {
                "account_id": HEALTHY["account_id"],
                "pixel_id": HEALTHY["pixel_id"],
                "event_id": HEALTHY["event_ids"][0],
            },
        }
    }
    path.write_text(tomli_w.dumps(data))
    return path


# --------------------------------------------------------------------------------------
# reading the parking topic
# --------------------------------------------------------------------------------------


@dataclass
class ParkedRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    def values_of(self, name: str) -> list[str]:
        return [(v or b"").decode() for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        found = self.values_of(name)
        return found[-1] if found else None

    @property
    def source(self) -> tuple[str, TP]:
        topic = self.header("xconv.source.topic") or ""
        partition = int(self.header("xconv.source.partition") or -1)
        return topic, (partition, int(self.header("xconv.source.offset") or -1))


class ParkingTail(TopicTail[ParkedRecord]):
    """Follows the parking topic from the start, each record with its raw headers."""

    group_prefix = "xconv-test-parking"

    def _record(self, msg: Any) -> ParkedRecord:
        raw_headers = msg.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers: list[tuple[str, bytes | None]] = [
            (str(name), raw.encode() if isinstance(raw, str) else raw) for name, raw in pairs
        ]
        return ParkedRecord(
            msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value(), headers
        )

    def by_source(self, topic: str) -> dict[TP, list[ParkedRecord]]:
        out: dict[TP, list[ParkedRecord]] = {}
        for record in self.records:
            source_topic, pos = record.source
            if source_topic == topic:
                out.setdefault(pos, []).append(record)
        return out


def parking_tail(env: EngineEnv, parking: str) -> ParkingTail:
    tail = ParkingTail(env.bootstrap, parking)
    env.closers.append(tail.close)
    return tail


def parking_topic(env: EngineEnv, create_topic: CreateTopic) -> str:
    """A 3-partition parking topic next to the test's topic and dead-letter topic."""
    return create_topic(3, name=f"{env.topic}.parking")


def check_parked_record(record: ParkedRecord, mixed: Mixed, source_topic: str) -> list[str]:
    """Problems with one parking record of the sick account (empty when it is right)."""
    problems: list[str] = []
    where = f"parking p{record.partition}@{record.offset}"
    for name in PARK_HEADERS:
        count = len(record.values_of(name))
        if count != 1:
            problems.append(f"{where}: header {name} present {count} times")
    if problems:
        return problems
    topic, pos = record.source
    if topic != source_topic or pos not in mixed.produced.values:
        return [f"{where}: source {topic} {pos} is no produced position"]
    if mixed.owner[pos] != "sick":
        problems.append(f"{where}: parked an event of the healthy account ({pos})")
    if record.value != mixed.produced.values[pos]:
        problems.append(f"{where}: value differs from the original at {pos}")
    if record.key != mixed.produced.keys[pos]:
        problems.append(f"{where}: key differs from the original at {pos}")
    if record.values_of(TRACE_HEADER) != [mixed.trace[pos].decode()]:
        problems.append(f"{where}: original header {TRACE_HEADER} not kept as it was")
    if record.header("xconv.park.account") != SICK:
        problems.append(f"{where}: account {record.header('xconv.park.account')}")
    if not record.header("xconv.park.reason"):
        problems.append(f"{where}: no reason")
    attempts = record.header("xconv.park.attempts") or ""
    parks = record.header("xconv.park.parks") or ""
    if not attempts.isdigit():
        problems.append(f"{where}: attempts {attempts!r}")
    if not parks.isdigit() or int(parks) < 1:
        problems.append(f"{where}: parks {parks!r}")
    first = record.header("xconv.park.first_failure") or ""
    parked_at = record.header("xconv.park.time") or ""
    if not ISO_MS_Z.match(first):
        problems.append(f"{where}: first_failure {first!r} is not ISO 8601 UTC with ms and Z")
    elif parked_at:
        try:
            if datetime.fromisoformat(parked_at) < datetime.fromisoformat(first):
                problems.append(f"{where}: parked at {parked_at} before first failure {first}")
        except ValueError:
            problems.append(f"{where}: park time {parked_at!r} is not ISO 8601")
    return problems


# --------------------------------------------------------------------------------------
# offsets
# --------------------------------------------------------------------------------------


def probes(env: EngineEnv, parking: str) -> tuple[OffsetsProbe, OffsetsProbe]:
    parking_probe = OffsetsProbe(env.bootstrap, env.group, parking)
    env.closers.append(parking_probe.close)
    return env.probe(), parking_probe


def behind(probe: OffsetsProbe) -> dict[int, tuple[int | None, int]]:
    """Partitions (with data) whose committed offset is not the log end: (committed, end)."""
    ends = probe.ends()
    committed = probe.committed()
    return {
        p: (committed.get(p), end) for p, end in ends.items() if end and committed.get(p) != end
    }


def both_at_end(source: OffsetsProbe, parking: OffsetsProbe) -> Callable[[], bool]:
    def check() -> bool:
        return not behind(source) and not behind(parking)

    return check


def tool_offsets_at_end(broker: BrokerHandle, env: EngineEnv, parking: str) -> None:
    """Kafka's own ``kafka-consumer-groups --describe``: committed == log end on every
    partition of the source topic and on every parking partition that holds records."""
    rows = broker.committed_offsets(env.group)
    source_ends = OffsetsProbe(env.bootstrap, env.group, env.topic)
    parking_ends = OffsetsProbe(env.bootstrap, env.group, parking)
    try:
        for topic, ends in ((env.topic, source_ends.ends()), (parking, parking_ends.ends())):
            for partition, end in ends.items():
                row = rows.get((topic, partition))
                if end == 0:
                    assert row is None or row.committed in (None, 0), (topic, partition, row)
                    continue
                assert row is not None, (topic, partition, "no committed offset", rows)
                assert row.committed == end, (topic, partition, row)
                assert row.log_end == end, (topic, partition, row)
    finally:
        source_ends.close()
        parking_ends.close()


# --------------------------------------------------------------------------------------
# commit invariant with a parking topic
# --------------------------------------------------------------------------------------


class ParkingCommitSampler:
    """Samples the group's committed offsets of both topics in a thread and checks them.

    A source position below the committed offset must be accepted (its conversion id),
    dead-lettered or in the parking topic; a parking record below the parking topic's
    committed offset must be accepted, dead-lettered, or parked again (another parking
    record of the same source). Accepted ids, dead letters and parking records are read
    after the committed offsets: all only grow, so anything missing was missing then.
    """

    def __init__(self, env: EngineEnv, sandbox: SandboxHandle, mixed: Mixed, parking: str):
        self.env, self.sandbox, self.mixed = env, sandbox, mixed
        self.source_probe, self.parking_probe = probes(env, parking)
        self.tail = env.dead_letters()
        self.parked = parking_tail(env, parking)
        self.samples = 0
        self.problems: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ParkingCommitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def sample(self) -> None:
        source = self.source_probe.committed()
        parking = self.parking_probe.committed()
        ids = self.sandbox.conversion_ids()
        self.tail.catch_up()
        dead = set(self.tail.by_source())
        self.parked.catch_up()
        parked = self.parked.by_source(self.env.topic)
        produced = self.mixed.produced

        def done(pos: TP) -> bool:
            cid = produced.valid.get(pos)
            return pos in dead or (cid is not None and cid in ids)

        for pos in produced.values:
            partition, offset = pos
            if offset < source.get(partition, 0) and not done(pos) and pos not in parked:
                self.problems.append(f"source p{partition}@{offset} committed but not done")
        for pos, records in parked.items():
            for record in records:
                if record.offset >= parking.get(record.partition, 0):
                    continue
                if not done(pos) and len(records) < 2:
                    self.problems.append(
                        f"parking p{record.partition}@{record.offset} (source {pos}) "
                        "committed but neither delivered, dead-lettered nor parked again"
                    )
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except BaseException as exc:
                self.errors.append(exc)
                return
            self._stop.wait(0.3)


class BufferSampler:
    """Maximum of per-account ``xconv_account_buffered_events`` and of the whole buffer."""

    def __init__(self, engine: EngineProcess) -> None:
        self.engine = engine
        self.per_account: dict[str, float] = {}
        self.in_flight = 0.0
        self.oldest_age = 0.0
        self.samples = 0
        self.timeline: list[tuple[float, float, float]] = []  # (t, sick, healthy) buffered
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BufferSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def sick_peak_beside_healthy(self) -> float:
        """The sick account's most buffered events while the healthy one held some too
        (its quota is then half the buffer; alone it may hold all of it)."""
        return max((s for _, s, h in self.timeline if h > 0), default=0.0)

    def peaks(self, since: float) -> str:
        """Where the sick account's buffered count peaked, relative to ``since``."""
        over = [(round(t - since, 1), s, h) for t, s, h in self.timeline if s > 0 and h > 0]
        top = sorted(over, key=lambda row: -row[1])[:5]
        return f"(t since the fault, sick, healthy) at the sick account's peaks: {top}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                metrics = self.engine.metrics() if self.engine.alive() else None
                if metrics is not None:
                    values = [
                        labelled(metrics, "xconv_account_buffered_events", account=account)
                        for account in (SICK, HEALTHY["account_id"])
                    ]
                    for account, value in zip((SICK, HEALTHY["account_id"]), values, strict=True):
                        self.per_account[account] = max(self.per_account.get(account, 0), value)
                    self.timeline.append((time.monotonic(), values[0], values[1]))
                    self.in_flight = max(self.in_flight, metrics.get("xconv_events_in_flight", 0))
                    self.oldest_age = max(
                        self.oldest_age, metrics.get("xconv_parking_oldest_age_seconds", 0)
                    )
                    self.samples += 1
            except BaseException as exc:
                self.errors.append(exc)
                return
            self._stop.wait(0.2)


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def accepted(sandbox: SandboxHandle, account: str) -> int:
    stats = sandbox.stats()["accounts"].get(account, {})
    return int(stats.get("accepted_conversions", 0))


def describe(sandbox: SandboxHandle, engine: EngineProcess | None = None) -> Callable[[], str]:
    def text() -> str:
        out = f"sandbox stats: {sandbox.stats()}"
        if engine is not None:
            metrics = engine.metrics() or {}
            wanted = (
                "xconv_events_parked_total",
                "xconv_parking_oldest_age_seconds",
                "xconv_events_in_flight",
                "xconv_partitions_paused",
                "xconv_events_accepted_total",
                "xconv_events_dead_lettered_total",
            )
            out += f"\nmetrics: { {k: v for k, v in metrics.items() if k.startswith(wanted)} }"
            out += f"\nengine log tail:\n{engine.log_tail(30)}"
        return out

    return text


def delivered(sandbox: SandboxHandle, ids: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        got = sandbox.conversion_ids()
        return all(cid in got for cid in ids)

    return check


def all_sick_parked(
    tail: ParkingTail,
    mixed: Mixed,
    topic: str,
    sandbox: SandboxHandle,
    accepted_before: set[str] | None = None,
) -> Callable[[], bool]:
    """Every valid sick position not accepted before the fault is in the parking topic;
    the sick account accepts nothing meanwhile."""
    before = accepted_before or set()
    want = {pos for pos in mixed.positions("sick") if mixed.produced.valid[pos] not in before}

    def check() -> bool:
        tail.catch_up()
        got = accepted(sandbox, SICK)
        assert got == len(before), f"the sick account accepted {got - len(before)} events"
        return want <= set(tail.by_source(topic))

    return check


def dlq_show(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "dlq", "show", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def log_events(engine: EngineProcess) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in engine.logs().splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def logged(engine: EngineProcess, event: str) -> list[dict[str, Any]]:
    return [doc for doc in log_events(engine) if doc.get("event") == event]


# --------------------------------------------------------------------------------------
# 1. a sick account (500 / 401 forever) beside a healthy one on the same partitions
# --------------------------------------------------------------------------------------

HEALTHY_REQUESTS = 10  # per 1 s window: the healthy account's budget
BATCH = 10
HEALTHY_RATE = HEALTHY_REQUESTS * BATCH  # events/s, nominal
UNIMPEDED_WINDOW_S = 6.0
SICK_WINDOW_S = 8.0


def healthy_rate(sandbox: SandboxHandle, seconds: float, limit: int) -> float:
    """Accepted events/s of the healthy account over ``seconds``; fails once it accepted
    ``limit`` (its backlog must stay deep: a buffer running dry is not its rate)."""
    start, count0 = time.monotonic(), accepted(sandbox, HEALTHY["account_id"])
    count1 = count0
    while time.monotonic() - start < seconds:
        time.sleep(0.5)
        count1 = accepted(sandbox, HEALTHY["account_id"])
    assert count1 < limit, "the healthy backlog ran low: the rate window is not steady"
    return (count1 - count0) / (time.monotonic() - start)


@pytest.mark.parametrize(
    ("status", "failure"), [(500, "http_500"), (401, "401 UNAUTHORIZED")], ids=["500", "401"]
)
@pytest.mark.timeout(180)
def test_sick_account_is_parked_and_the_healthy_one_keeps_its_rate(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
    kafka_broker: BrokerHandle,
    status: int,
    failure: str,
) -> None:
    """The healthy account keeps ≥ 90 % of its unimpeded rate beside a sick one.

    The unimpeded rate is measured in the same run, before the other account falls
    sick: the healthy account is paced by its configured budget (10 requests of up to
    10 events per second, client side; the sandbox does not limit it) with a backlog
    far deeper than the buffer, so its rate is budget-bound and steady (checked: within
    20 % of the nominal 100 events/s; alone on this machine it measured 95-96, the
    rest being batches the linger closed before they were full). The other account
    has no budget, but sharing the partitions it moves at the healthy one's pace.
    Phase 1 measures the healthy rate for 6 s with both accounts answering 200; then
    the sandbox answers the other account ``status`` forever; once its first events
    are parked phase 2 measures the healthy rate for 8 s. On main before issue 12 the
    sick account's held batches filled ``max_buffered_events`` (500) within seconds,
    every partition paused and the healthy rate fell to 0.

    Then the source partitions must commit to their log end while the sick account is
    still sick, the parking records must carry the original bytes, key, headers and
    the ``xconv.park.*`` headers, and after the fault is cleared every sick event must
    be accepted and both topics committed to their end.
    """
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(None))
    per_account = 2500
    mixed = produce_mixed(env, per_account, seed=1201 + status, invalid_share=0.01)
    assert len(mixed.produced.invalid) > 5
    config = two_account_config(
        env,
        sandbox,
        parking,
        healthy_requests_per_s=HEALTHY_REQUESTS,
        batching={"max_events": BATCH},
    )
    healthy_total = len(mixed.ids("healthy"))
    with ParkingCommitSampler(env, sandbox, mixed, parking) as sampler:
        engine = env.start(config)
        engine.wait_ready()
        with BufferSampler(engine) as buffers:
            wait_until(
                lambda: accepted(sandbox, HEALTHY["account_id"]) > 0,
                60,
                "the first healthy acceptance",
                on_timeout=describe(sandbox, engine),
            )
            time.sleep(2.0)  # past the budget's initial burst
            unimpeded = healthy_rate(sandbox, UNIMPEDED_WINDOW_S, healthy_total - 1500)
            assert 0.8 * HEALTHY_RATE <= unimpeded <= 1.2 * HEALTHY_RATE, (
                "premise: the healthy account is budget-bound",
                unimpeded,
            )

            # The other account falls sick.
            sandbox.set_faults(status_overrides={SICK: status})
            fault_at = time.monotonic()
            wait_until(
                lambda: labelled(engine.metrics(), "xconv_events_parked_total", account=SICK) > 0,
                60,
                "the sick account's first parked events",
                on_timeout=describe(sandbox, engine),
            )
            accepted_before = set(sandbox.conversion_ids(SICK))
            assert accepted_before, "premise: the sick account was delivering before"
            time.sleep(1.0)
            rate = healthy_rate(sandbox, SICK_WINDOW_S, healthy_total - 300)
            assert rate >= 0.9 * unimpeded, (rate, unimpeded, describe(sandbox, engine)())
            assert rate <= 1.2 * HEALTHY_RATE, (rate, unimpeded)
            assert accepted(sandbox, SICK) == len(accepted_before)

            # Source partitions commit to the log end while the sick account is still sick.
            source_probe, parking_probe = probes(env, parking)
            wait_until(
                lambda: not behind(source_probe),
                120,
                "source offsets at the log end while the account is sick",
                on_timeout=describe(sandbox, engine),
            )
            assert sandbox.faults()["status_overrides"] == {SICK: status}
            assert accepted(sandbox, SICK) == len(accepted_before)
            assert delivered(sandbox, mixed.ids("healthy"))()
            tail = parking_tail(env, parking)
            wait_until(
                all_sick_parked(tail, mixed, env.topic, sandbox, accepted_before),
                30,
                "every event parked",
            )
            parked = tail.by_source(env.topic)
            by_id = mixed.by_id()
            before = {by_id[cid] for cid in accepted_before}
            assert set(parked) == mixed.positions("sick") - before, "only sick events parked"
            records = [r for rs in parked.values() for r in rs]
            problems = [p for r in records for p in check_parked_record(r, mixed, env.topic)]
            assert problems == [], problems[:10]
            reasons = Counter(r.header("xconv.park.reason") or "" for r in records)
            assert all(failure in reason for reason in reasons), (
                f"xconv.park.reason should name the last failure ({failure}...)",
                reasons,
            )
            metrics = engine.metrics()
            assert metrics is not None
            assert labelled(metrics, "xconv_events_parked_total", account=SICK) >= len(parked)
            assert labelled(metrics, "xconv_events_parked_total", account="acctok") == 0
            if status == 401:
                assert metrics.get("xconv_account_blocked", 0) == 1
            wait_until(
                lambda: engine.metric("xconv_parking_oldest_age_seconds") > 0,
                30,
                "the age of the oldest parked record held back",
            )
            assert logged(engine, "batch_parked"), "no batch_parked log event"
            if status == 500:
                assert logged(engine, "account_sick"), "no account_sick log event"

            # Recovery: every sick event delivered from the parking topic.
            sandbox.set_faults(status_overrides={})
            wait_until(
                delivered(sandbox, mixed.ids("sick")),
                90,
                "every parked event delivered after the fault cleared",
                on_timeout=describe(sandbox, engine),
            )
            wait_until(
                both_at_end(source_probe, parking_probe),
                60,
                "committed offsets at the end of both topics",
                on_timeout=lambda: f"source {behind(source_probe)} parking {behind(parking_probe)}",
            )
            wait_until(
                lambda: engine.metric("xconv_parking_oldest_age_seconds") == 0,
                30,
                "no parked record held back",
            )
    assert not sampler.errors, sampler.errors
    assert sampler.samples > 5
    assert sampler.problems == [], sampler.problems[:20]
    assert not buffers.errors, buffers.errors
    # Memory: the whole buffer, plus one fetch; while both accounts held events the sick
    # one never held more than its quota (500 / 2), plus one fetch. An account alone
    # (the healthy one once the sick one holds none, or the other way round during the
    # recovery) may hold the whole buffer.
    assert buffers.in_flight <= MAX_BUFFERED + FETCH_BATCH, buffers.in_flight
    for peak in buffers.per_account.values():
        assert peak <= MAX_BUFFERED + FETCH_BATCH, buffers.per_account
    sick_peak = buffers.sick_peak_beside_healthy()
    assert sick_peak <= MAX_BUFFERED / 2 + FETCH_BATCH, (sick_peak, buffers.peaks(fault_at))
    assert buffers.per_account.get(HEALTHY["account_id"], 0) > 0, buffers.per_account
    assert buffers.oldest_age > 0
    assert engine.terminate() == 0, engine.log_tail()

    tool_offsets_at_end(kafka_broker, env, parking)
    assert set(mixed.produced.valid.values()) <= set(sandbox.conversion_ids())
    dead = env.dead_letters()
    dead.catch_up()
    assert set(dead.by_source()) == set(mixed.produced.invalid)  # nothing else dead-lettered
    for pos, reason in mixed.produced.invalid.items():
        assert dead.by_source()[pos][0].headers["reason"] == reason


# --------------------------------------------------------------------------------------
# 2. SIGKILL while events are parked: restart, recover, nothing lost; dlq show
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_sigkill_while_parked_then_recovery_loses_nothing(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
    kafka_broker: BrokerHandle,
) -> None:
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(500))
    mixed = produce_mixed(env, 300, seed=1221)
    config = two_account_config(env, sandbox, parking)
    engine = env.start(config, name="first")
    engine.wait_ready()
    source_probe, parking_probe = probes(env, parking)
    tail = parking_tail(env, parking)
    wait_until(
        all_sick_parked(tail, mixed, env.topic, sandbox),
        60,
        "every sick event parked",
        on_timeout=describe(sandbox, engine),
    )
    wait_until(lambda: not behind(source_probe), 60, "source committed", on_timeout=engine.log_tail)
    assert delivered(sandbox, mixed.ids("healthy"))()
    engine.kill()  # SIGKILL with parked events

    # `xconv dlq show --topic parking`: one line per parked record, no event data.
    tail.catch_up()
    shown = dlq_show(config, "--topic", "parking")
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.strip()]
    assert len(lines) == len(tail.records), (len(lines), len(tail.records), shown.stderr)
    for line in lines:
        view = orjson.loads(line)  # one JSON object per record
        assert isinstance(view, dict)
        assert SICK in line, line
        assert "http_500" in line, line
    for pos in mixed.positions("sick"):
        doc = orjson.loads(mixed.produced.values[pos])
        user = doc.get("user") or {}
        for secret in filter(None, (user.get("email"), user.get("phone"), doc.get("order_id"))):
            assert secret not in shown.stdout, secret
            assert secret not in shown.stderr, secret
    # The default topic is still the dead-letter topic, which is empty here.
    default = dlq_show(config)
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == ""

    # Restart while still sick, the healthy account's events still flowing: the parked
    # records wait in the parking topic (held back), nothing lost.
    trickle = Trickle(env, mixed, seed=1222)
    with trickle:
        restarted = env.start(config, name="second")
        restarted.wait_ready()
        wait_until(
            lambda: restarted.metric("xconv_parking_oldest_age_seconds") > 0,
            60,
            "the restarted engine holds the parked records back",
            on_timeout=describe(sandbox, restarted),
        )
        assert accepted(sandbox, SICK) == 0
        sandbox.set_faults(status_overrides={})
        wait_until(
            delivered(sandbox, mixed.ids("sick")),
            90,
            "parked events delivered after the restart",
            on_timeout=describe(sandbox, restarted),
        )
    wait_until(delivered(sandbox, mixed.ids("healthy")), 60, "the trickle delivered")
    wait_until(
        both_at_end(source_probe, parking_probe),
        60,
        "committed offsets at the end of both topics",
        on_timeout=lambda: f"source {behind(source_probe)} parking {behind(parking_probe)}",
    )
    assert restarted.terminate() == 0, restarted.log_tail()
    tool_offsets_at_end(kafka_broker, env, parking)
    assert set(mixed.produced.valid.values()) <= set(sandbox.conversion_ids())
    dead = env.dead_letters()
    assert dead.catch_up() == []


# --------------------------------------------------------------------------------------
# 3. the parking backlog survives a restart; SIGKILL after re-delivery
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_parking_backlog_survives_restart_and_sigkill_after_redelivery(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
    kafka_broker: BrokerHandle,
) -> None:
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(401))
    mixed = produce_mixed(env, 300, seed=1231)
    config = two_account_config(env, sandbox, parking)
    engine = env.start(config, name="first")
    engine.wait_ready()
    source_probe, parking_probe = probes(env, parking)
    tail = parking_tail(env, parking)
    wait_until(
        all_sick_parked(tail, mixed, env.topic, sandbox),
        60,
        "every sick event parked",
        on_timeout=describe(sandbox, engine),
    )
    wait_until(lambda: not behind(source_probe), 60, "source committed", on_timeout=engine.log_tail)
    assert engine.terminate() == 0, engine.log_tail()  # SIGTERM while still sick
    tail.catch_up()
    assert set(tail.by_source(env.topic)) == mixed.positions("sick")

    # Restart, still sick, the healthy account's events flowing: the backlog is still
    # there and still held back; failed probes park records again, never lose them.
    with Trickle(env, mixed, seed=1232) as trickle:
        second = env.start(config, name="second")
        second.wait_ready()
        wait_until(
            lambda: second.metric("xconv_parking_oldest_age_seconds") > 0,
            60,
            "the parked backlog held back after the restart",
            on_timeout=describe(sandbox, second),
        )
        time.sleep(2 * PROBE_MAX_S)  # a few probes fail
        assert accepted(sandbox, SICK) == 0
        tail.catch_up()
        assert set(tail.by_source(env.topic)) == mixed.positions("sick")
        trickle.stop()
        wait_until(delivered(sandbox, mixed.ids("healthy")), 30, "the trickle delivered")
        wait_until(lambda: not behind(source_probe), 30, "source committed")
        assert second.terminate() == 0, second.log_tail()

    # A third run delivers them, the account fixed; its commit interval is long, so
    # SIGKILL right after the re-delivery lands before the parking offsets commit.
    sandbox.set_faults(status_overrides={})
    third_config = two_account_config(
        env, sandbox, parking, name="third", delivery={"commit_interval_s": 60.0}
    )
    third = env.start(third_config, name="third")
    third.wait_ready()
    wait_until(
        delivered(sandbox, set(mixed.produced.valid.values())),
        90,
        "parked events delivered after the fix",
        on_timeout=describe(sandbox, third),
    )
    third.kill()
    assert behind(parking_probe), "premise: parking offsets not committed before the kill"

    # The next run reads the parked records again; X de-duplicates; both topics commit.
    fourth = env.start(config, name="fourth")
    fourth.wait_ready()
    wait_until(
        both_at_end(source_probe, parking_probe),
        90,
        "committed offsets at the end of both topics",
        on_timeout=lambda: f"source {behind(source_probe)} parking {behind(parking_probe)}",
    )
    assert fourth.terminate() == 0, fourth.log_tail()
    tool_offsets_at_end(kafka_broker, env, parking)
    assert set(mixed.produced.valid.values()) <= set(sandbox.conversion_ids())
    dead = env.dead_letters()
    assert dead.catch_up() == []  # a 401 under park is never dead-lettered


@pytest.mark.timeout(150)
def test_restart_without_other_traffic_holds_parked_records_back(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
) -> None:
    """A restart while the account is still sick and no other account has events: the
    parked records wait in the parking topic (their partition held back until the next
    probe), they are not pulled into memory and retried in place; SIGTERM then drains
    at once (nothing waits at a closed gate) and exits 0."""
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(500))
    mixed = produce_mixed(env, 200, seed=1271)
    config = two_account_config(env, sandbox, parking)
    first = env.start(config, name="first")
    first.wait_ready()
    source_probe, _ = probes(env, parking)
    tail = parking_tail(env, parking)
    wait_until(
        all_sick_parked(tail, mixed, env.topic, sandbox),
        60,
        "every sick event parked",
        on_timeout=describe(sandbox, first),
    )
    wait_until(lambda: not behind(source_probe), 60, "source committed", on_timeout=first.log_tail)
    assert first.terminate() == 0, first.log_tail()

    second = env.start(config, name="second")
    second.wait_ready()
    wait_until(
        lambda: second.metric("xconv_parking_oldest_age_seconds") > 0,
        30,
        "the parked records held back in the parking topic",
        on_timeout=describe(sandbox, second),
    )
    time.sleep(PARK_AFTER_S + 1.0)  # what the open gate let through after the start settles
    errors_before = status_count(sandbox, 500, SICK)
    watched_from = time.monotonic()
    time.sleep(3 * PROBE_MAX_S)
    watched = time.monotonic() - watched_from
    answered = status_count(sandbox, 500, SICK) - errors_before
    # Only probes now: one at a time, at least PROBE_INITIAL_S x 0.5 (jitter) apart.
    most = int(watched / (PROBE_INITIAL_S * 0.5)) + 2
    assert answered <= most, (answered, most, describe(sandbox, second)())
    assert second.metric("xconv_events_in_flight") <= FETCH_BATCH, describe(sandbox, second)()
    exit_at = time.monotonic()
    assert second.terminate() == 0, second.log_tail()
    assert time.monotonic() - exit_at < 15, "SIGTERM waited for a batch at a closed gate"
    tail.catch_up()
    assert set(tail.by_source(env.topic)) == mixed.positions("sick")
    assert accepted(sandbox, SICK) == 0


# --------------------------------------------------------------------------------------
# 4. the other policies: hold (today's behaviour) and dead_letter; parked_max_age_s
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_policy_hold_parks_nothing_and_holds_offsets(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
    kafka_broker: BrokerHandle,
) -> None:
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(500))
    mixed = produce_mixed(env, 200, seed=1241)
    engine = env.start(two_account_config(env, sandbox, parking, policy="hold"))
    engine.wait_ready()
    source_probe, parking_probe = probes(env, parking)
    # Failing for three times park_after_s: under "park" it would have parked by now.
    wait_until(
        lambda: sandbox.stats()["accounts"].get(SICK, {}).get("requests_by_status", {}).get("500"),
        60,
        "the sick account's first 500",
    )
    time.sleep(3 * PARK_AFTER_S)
    assert sum(parking_probe.ends().values()) == 0, "hold wrote to the parking topic"
    assert engine.metric("xconv_events_parked_total") == 0
    sick_partitions = {p for p, _ in mixed.positions("sick")}
    held = behind(source_probe)
    assert sick_partitions <= set(held), ("offsets of the sick events' partitions held", held)

    sandbox.set_faults(status_overrides={})
    wait_until(
        delivered(sandbox, set(mixed.produced.valid.values())),
        90,
        "delivery after the fault cleared",
        on_timeout=describe(sandbox, engine),
    )
    wait_until(lambda: not behind(source_probe), 60, "source committed at the end")
    assert sum(parking_probe.ends().values()) == 0
    assert engine.terminate() == 0, engine.log_tail()
    tool_offsets_at_end(kafka_broker, env, parking)
    assert env.dead_letters().catch_up() == []


@pytest.mark.timeout(150)
def test_policy_dead_letter_dead_letters_as_undeliverable(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
    kafka_broker: BrokerHandle,
) -> None:
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(500))
    mixed = produce_mixed(env, 200, seed=1251)
    engine = env.start(two_account_config(env, sandbox, parking, policy="dead_letter"))
    engine.wait_ready()
    source_probe, parking_probe = probes(env, parking)
    dead = env.dead_letters()
    want = mixed.positions("sick")

    def dead_lettered() -> bool:
        dead.catch_up()
        return want <= set(dead.by_source())

    wait_until(dead_lettered, 60, "sick events dead-lettered", on_timeout=engine.log_tail)
    wait_until(delivered(sandbox, mixed.ids("healthy")), 60, "healthy events delivered")
    wait_until(lambda: not behind(source_probe), 60, "source committed at the end")
    assert sandbox.faults()["status_overrides"] == {SICK: 500}  # still sick: nothing retried
    assert accepted(sandbox, SICK) == 0
    by_source = dead.by_source()
    assert set(by_source) == want
    for pos, records in by_source.items():
        record = records[0]
        assert record.headers["reason"] == "undeliverable", record.headers
        assert record.value == mixed.produced.values[pos]
        assert record.key == mixed.produced.keys[pos]
        assert record.headers["source"]["topic"] == env.topic
    assert sum(parking_probe.ends().values()) == 0, "dead_letter wrote to the parking topic"
    assert engine.terminate() == 0, engine.log_tail()
    tool_offsets_at_end(kafka_broker, env, parking)


@pytest.mark.timeout(150)
def test_parked_too_long_is_dead_lettered(
    engine_env: EngineEnv,
    start_sandbox: StartSandbox,
    create_topic: CreateTopic,
    kafka_broker: BrokerHandle,
) -> None:
    """``parked_max_age_s``: a parked event older than that since its first failure is
    dead-lettered with reason ``parked_too_long`` instead of being retried."""
    env = engine_env
    parking = parking_topic(env, create_topic)
    sandbox = start_sandbox(sandbox_config(500))
    mixed = produce_mixed(env, 100, seed=1261)
    config = two_account_config(env, sandbox, parking, delivery={"parked_max_age_s": 4.0})
    engine = env.start(config)
    engine.wait_ready()
    source_probe, parking_probe = probes(env, parking)
    dead = env.dead_letters()
    want = mixed.positions("sick")

    def dead_lettered() -> bool:
        dead.catch_up()
        return want <= set(dead.by_source())

    wait_until(
        dead_lettered, 45, "parked events dead-lettered", on_timeout=describe(sandbox, engine)
    )
    assert engine.metric("xconv_events_parked_total") > 0  # they were parked first
    for pos, records in dead.by_source().items():
        assert records[0].headers["reason"] == "parked_too_long", records[0].headers
        assert records[0].value == mixed.produced.values[pos]
    assert delivered(sandbox, mixed.ids("healthy"))()
    assert accepted(sandbox, SICK) == 0
    wait_until(
        both_at_end(source_probe, parking_probe),
        60,
        "committed offsets at the end of both topics",
        on_timeout=lambda: f"source {behind(source_probe)} parking {behind(parking_probe)}",
    )
    assert engine.terminate() == 0, engine.log_tail()
    tool_offsets_at_end(kafka_broker, env, parking)
