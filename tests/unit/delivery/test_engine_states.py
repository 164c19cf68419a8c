"""The engine's state machines on in-memory edges: back-pressure across rebalances, the
supervisor, commits that never go backwards, shutdown within its bound.

Kafka's own behaviour is tested on the real broker (``tests/integration``); here the
point is the engine's bookkeeping, step by step, in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.delivery.client import Response
from consumer.delivery.engine import DrainReport, Engine
from consumer.observability.health import HealthState
from consumer.observability.metrics import Metrics
from consumer.settings import Settings
from tests.fakes_kafka import (
    TP,
    Entry,
    FakeConsumer,
    FakeProducer,
    ScriptedApi,
    accepted,
    unavailable,
)
from tests.unit.transform.helpers import event, raw

TOPIC = "purchases"
MAX_BUFFERED = 500
FETCH = 100


def settings(**delivery: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"topics": [TOPIC], "fetch_batch_size": FETCH, "call_timeout_s": 1.0},
            "accounts": [
                {
                    "account_id": "18ce552mlaq",
                    "pixel_id": "oka17",
                    "auth": "pixel_token",
                    "pixel_token": "t",
                }
            ],
            "routing": {
                "default": {"account_id": "18ce552mlaq", "pixel_id": "oka17", "event_id": "ol288"}
            },
            "batching": {"linger_ms": 1},
            "delivery": {
                "max_buffered_events": MAX_BUFFERED,
                "commit_interval_s": 0.02,
                "retry_base_s": 0.005,
                "retry_cap_s": 0.02,
                "drain_timeout_s": 0.5,
                "revoke_timeout_s": 0.05,
                "pause_grace_s": 0.0,  # pause as soon as full (the grace has its own test)
                **delivery,
            },
        }
    )


def topic_log(partitions: int, per_partition: int) -> dict[TP, list[Entry]]:
    recent = time.time() - 3600  # the transform refuses events too old for X
    return {
        (TOPIC, p): [
            raw(event(order_id=f"p{p}-{i}", event_time=recent)) for i in range(per_partition)
        ]
        for p in range(partitions)
    }


class Harness:
    def __init__(self, log: dict[TP, list[Entry]], api: ScriptedApi, **delivery: Any) -> None:
        self.log = log
        self.api = api
        self.metrics = Metrics(CollectorRegistry())
        self.health = HealthState()
        self.producer = FakeProducer()
        self.consumer: FakeConsumer | None = None
        self.max_held = 0
        self.engine = Engine(
            settings(**delivery),
            metrics=self.metrics,
            health=self.health,
            consumer_factory=self._consumer,
            producer_factory=lambda conf: self.producer,
            client_factory=lambda account: api,
        )

    async def __aenter__(self) -> Harness:
        self.run = asyncio.create_task(self.engine.run())
        await self.until(lambda: self.consumer is not None, "consumer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.engine.request_stop()
        self.report = await asyncio.wait_for(self.run, 5.0)

    def _consumer(self, conf: dict[str, Any]) -> FakeConsumer:
        self.consumer = FakeConsumer(conf, self.log)
        self.consumer.on_consume = self._observe
        return self.consumer

    def _observe(self) -> None:
        self.max_held = max(self.max_held, self.engine._tracker.held)

    @property
    def fake(self) -> FakeConsumer:
        assert self.consumer is not None
        return self.consumer

    async def until(self, condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.005)

    def paused_matches_assignment(self) -> bool:
        return set(self.fake.assigned) <= self.fake.paused


async def test_backpressure_survives_revoke_and_reassign_and_memory_stays_bounded() -> None:
    state = {"up": False}

    def answer(n: int) -> Response:
        return accepted(n) if state["up"] else unavailable(n)

    async with Harness(topic_log(3, 2000), ScriptedApi(answer)) as h:
        await backpressure_scenario(h, state)
    assert h.report.failure is None
    # Commits only ever move forward, whoever asked (commit loop or revoke handler).
    for tp in h.log:
        offsets = [req[tp] for req in h.fake.commit_requests if tp in req]
        assert offsets == sorted(offsets), (tp, offsets)


async def backpressure_scenario(h: Harness, state: dict[str, bool]) -> None:
    h.fake.rebalance("assign", [(TOPIC, 0), (TOPIC, 1)])
    await h.until(lambda: h.engine._source is not None and h.engine._source.paused, "pause")
    assert h.paused_matches_assignment()
    # A rebalance while paused: p1 goes away, p2 arrives and must join the pause.
    h.fake.rebalance("revoke", [(TOPIC, 1)])
    h.fake.rebalance("assign", [(TOPIC, 2)])
    await h.until(lambda: (TOPIC, 2) in h.fake.assigned, "p2 assigned")
    await h.until(h.paused_matches_assignment, "p2 paused too")
    # v1: its own paused flag stayed set after the revoke and pausing never fired again;
    # memory is bounded all along (fetches never exceed the room left).
    assert h.max_held <= MAX_BUFFERED
    # The API comes back; everything drains, and re-assigned p1 must not stay paused
    # by a stale flag from before its revoke.
    state["up"] = True
    await h.until(lambda: not h.engine._source.paused, "resume")  # type: ignore[union-attr]
    h.fake.rebalance("assign", [(TOPIC, 1)])
    await h.until(
        lambda: all(h.fake.committed.get((TOPIC, p)) == 2000 for p in range(3)),
        "all committed",
        within=20.0,
    )
    assert h.max_held <= MAX_BUFFERED


async def test_one_stuck_event_at_a_partitions_head_pauses_fetching() -> None:
    # The first batch never gets an answer; everything after it is accepted. v1 counted
    # only unfinished events and kept fetching while the finished span grew unbounded.
    first = asyncio.Event()
    calls = {"n": 0}

    async def hang_first(n: int) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            await first.wait()
        return accepted(n)

    async with Harness(topic_log(1, 5000), ScriptedApi(hang_first)) as h:
        h.fake.rebalance("assign", [(TOPIC, 0)])
        await h.until(lambda: h.engine._source is not None and h.engine._source.paused, "pause")
        assert h.engine._tracker.held <= MAX_BUFFERED
        assert h.fake.positions[(TOPIC, 0)] <= MAX_BUFFERED + FETCH
        first.set()
        await h.until(lambda: h.fake.committed.get((TOPIC, 0)) == 5000, "committed", within=20)
    assert h.report.failure is None


async def test_a_crashed_delivery_task_stops_the_engine_loudly() -> None:
    def explode(n: int) -> Response:
        raise OverflowError("cannot convert float infinity to integer")

    async with Harness(topic_log(1, 50), ScriptedApi(explode)) as h:
        h.fake.rebalance("assign", [(TOPIC, 0)])
        await h.until(h.run.done, "the engine to stop by itself")
    report: DrainReport = h.report
    assert report.failure is not None
    assert report.failure.kind == "deliver"
    assert isinstance(report.failure.error, OverflowError)
    assert not report.clean
    live, detail = h.health.live()
    assert not live
    assert "engine_failed" in detail["reasons"]
    assert h.metrics.registry.get_sample_value("xconv_task_failures_total", {"task": "deliver"})
    # Nothing was committed past the events whose task died.
    assert h.fake.committed.get((TOPIC, 0), 0) == 0


async def test_shutdown_with_every_request_hanging_keeps_its_bound() -> None:
    async def hang(n: int) -> Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async with Harness(topic_log(2, 300), ScriptedApi(hang)) as h:
        h.fake.rebalance("assign", [(TOPIC, 0), (TOPIC, 1)])
        await h.until(lambda: len(h.api.requests) > 0, "a request in flight")
        started = time.monotonic()
    elapsed = time.monotonic() - started
    report = h.report
    bound = 0.5 + 4 * 1.0  # drain_timeout_s + 4 x call_timeout_s
    assert elapsed < bound
    assert not report.clean
    assert report.left_in_flight > 0
    assert report.failure is None
    assert h.metrics.registry.get_sample_value("xconv_drain_timeouts_total") == 1
    assert h.fake.closed


@pytest.mark.parametrize("processed", [0, 3])
async def test_partial_200_commits_and_counts_the_shortfall(processed: int) -> None:
    async with Harness(topic_log(1, 10), ScriptedApi(lambda n: accepted(min(n, processed)))) as h:
        h.fake.rebalance("assign", [(TOPIC, 0)])
        await h.until(lambda: h.fake.committed.get((TOPIC, 0)) == 10, "committed")
    shortfall = h.metrics.registry.get_sample_value(
        "xconv_events_unprocessed_total", {"account": "18ce552mlaq"}
    )
    assert shortfall == 10 - processed


async def test_a_full_buffer_stops_fetching_at_once_and_pauses_only_after_the_grace() -> None:
    # pause() drops librdkafka's prefetched messages: in a steady backlog (the API slower
    # than Kafka) pausing at every fill refetched the same data over and over.
    async with Harness(topic_log(2, 2000), ScriptedApi(unavailable), pause_grace_s=0.4) as h:
        h.fake.rebalance("assign", [(TOPIC, 0), (TOPIC, 1)])
        engine, source = h.engine, h.engine._source
        assert source is not None
        await h.until(lambda: engine._tracker.held >= MAX_BUFFERED, "full")
        full_at = time.monotonic()
        await asyncio.sleep(0.2)
        assert not source.paused  # within the grace: no pause...
        assert engine._tracker.held == MAX_BUFFERED  # ...and no fetch past the mark
        await h.until(lambda: source.paused, "pause after the grace", within=2.0)
        assert time.monotonic() - full_at >= 0.35
        assert h.paused_matches_assignment()
        assert h.max_held <= MAX_BUFFERED
