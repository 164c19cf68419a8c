"""Tenant isolation on in-memory edges (issue 12): a sick account's events are parked,
the healthy account's flow and offsets do not wait, parked events come back.

The fake producer appends parking records to the fake log, so the engine reads them
back from the parking topic exactly as from Kafka. The real broker and sandbox run the
same scenarios in ``tests/integration/test_tenant_isolation.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.delivery.client import Response
from consumer.delivery.engine import Engine
from consumer.delivery.parking import H_ACCOUNT, H_PARKS, next_note, park_letter, parking_headers
from consumer.observability.health import HealthState
from consumer.observability.metrics import Metrics
from consumer.settings import AccountSettings, Settings
from tests.fakes_kafka import TP, Entry, FakeConsumer, FakeMessage, FakeProducer, accepted
from tests.unit.transform.helpers import event, raw

TOPIC = "purchases"
PARKING = "purchases.parking"
DLQ = "purchases.dlq"
A, B = "18ce552mlaq", "18ce552mlbq"
PER_PARTITION = 300


def settings(**delivery: Any) -> Settings:
    def account(aid: str) -> dict[str, Any]:
        return {
            "account_id": aid,
            "pixel_id": f"px{aid[-2:]}",
            "auth": "pixel_token",
            "pixel_token": "t",
        }

    def route(aid: str) -> dict[str, str]:
        return {"account_id": aid, "pixel_id": f"px{aid[-2:]}", "event_id": "ol288"}

    return Settings.model_validate(
        {
            "kafka": {"topics": [TOPIC], "fetch_batch_size": 100, "call_timeout_s": 1.0},
            "accounts": [account(A), account(B)],
            "routing": {"key_field": "shop", "routes": {"a": route(A), "b": route(B)}},
            "batching": {"linger_ms": 1, "max_events": 50},
            "delivery": {
                "max_buffered_events": 500,
                "commit_interval_s": 0.02,
                "retry_base_s": 0.005,
                "retry_cap_s": 0.02,
                "drain_timeout_s": 0.5,
                "revoke_timeout_s": 0.05,
                "pause_grace_s": 0.0,
                "park_after_s": 0.2,
                "probe_initial_s": 0.1,
                "probe_max_s": 0.2,
                **delivery,
            },
        }
    )


def source_log(partitions: int = 2) -> dict[TP, list[Entry]]:
    recent = time.time() - 3600
    return {
        (TOPIC, p): [
            raw(event(order_id=f"p{p}-{i}", event_time=recent, shop="ab"[i % 2]))
            for i in range(PER_PARTITION)
        ]
        for p in range(partitions)
    }


@dataclass
class Api:
    """One account's endpoint: ``status`` decides every answer; accepted ids are kept."""

    status: int = 200
    accepted_ids: set[str] = field(default_factory=set)
    requests: int = 0

    async def send(self, pixel_id: str, body: bytes) -> Response:
        self.requests += 1
        await asyncio.sleep(0)
        conversions = orjson.loads(body)["conversions"]
        if self.status != 200:
            return Response(self.status, {}, b'{"errors":[{"code":"X","message":"down"}]}')
        self.accepted_ids.update(c["conversion_id"] for c in conversions)
        return accepted(len(conversions))


class Harness:
    def __init__(self, apis: dict[str, Api], **delivery: Any) -> None:
        self.log = source_log()
        self.log[(PARKING, 0)] = []
        self.apis = apis
        self.producer = FakeProducer(self.log, topics=(PARKING,))
        self.consumer: FakeConsumer | None = None
        self.metrics = Metrics(CollectorRegistry())
        self.engine = Engine(
            settings(**delivery),
            metrics=self.metrics,
            health=HealthState(),
            consumer_factory=self._consumer,
            producer_factory=lambda conf: self.producer,
            client_factory=self._client,
        )

    def _client(self, account: AccountSettings) -> Api:
        return self.apis[account.account_id]

    def _consumer(self, conf: dict[str, Any]) -> FakeConsumer:
        self.consumer = FakeConsumer(conf, self.log)
        return self.consumer

    @property
    def fake(self) -> FakeConsumer:
        assert self.consumer is not None
        return self.consumer

    async def __aenter__(self) -> Harness:
        self.run = asyncio.create_task(self.engine.run())
        await until(lambda: self.consumer is not None, "consumer")
        self.fake.rebalance("assign", [(TOPIC, 0), (TOPIC, 1), (PARKING, 0)])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.engine.request_stop()
        self.report = await asyncio.wait_for(self.run, 5.0)

    def parked(self) -> list[dict[str, bytes]]:
        return [dict(kw["headers"]) for topic, _, kw in self.producer.records if topic == PARKING]

    def dead_letters(self) -> list[dict[str, bytes]]:
        return [dict(kw["headers"]) for topic, _, kw in self.producer.records if topic == DLQ]

    def source_committed(self) -> bool:
        return all(self.fake.committed.get((TOPIC, p)) == PER_PARTITION for p in (0, 1))

    def parking_committed(self) -> bool:
        return self.fake.committed.get((PARKING, 0), 0) == len(self.log[(PARKING, 0)])


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


EVENTS_PER_ACCOUNT = PER_PARTITION  # two partitions, every other event each


@pytest.mark.parametrize("sick_status", [500, 401])
async def test_a_sick_account_is_parked_while_the_healthy_one_flows_and_then_recovers(
    sick_status: int,
) -> None:
    apis = {A: Api(), B: Api(status=sick_status)}
    async with Harness(apis) as h:
        # The healthy account gets everything, and the source partitions commit to their
        # end, while the sick account is still sick: its events wait on the parking topic.
        await until(lambda: len(apis[A].accepted_ids) == EVENTS_PER_ACCOUNT, "A accepted")
        await until(h.source_committed, "source partitions committed while B is sick")
        assert apis[B].accepted_ids == set()
        parked = h.parked()
        assert parked
        assert {p[H_ACCOUNT] for p in parked} == {B.encode()}
        assert h.engine.counts["parked"] >= EVENTS_PER_ACCOUNT
        # Parked events are not re-sent in a loop: the parking partition is held back
        # until the account's next probe time, one probe at a time.
        requests_while_sick = apis[B].requests
        assert requests_while_sick < 60

        apis[B].status = 200
        await until(lambda: len(apis[B].accepted_ids) == EVENTS_PER_ACCOUNT, "B recovered")
        await until(h.parking_committed, "parking partition committed to its end")
        assert h.source_committed()
    assert h.report.failure is None
    assert h.dead_letters() == []


async def test_hold_keeps_the_old_behaviour_nothing_is_parked() -> None:
    apis = {A: Api(), B: Api(status=503)}
    async with Harness(apis, stuck_policy="hold") as h:
        await until(lambda: len(apis[A].accepted_ids) > 0, "A accepted some")
        await asyncio.sleep(0.5)
        assert h.parked() == []
        # B's first event holds each partition's offsets.
        assert not any(h.fake.committed.get((TOPIC, p), 0) >= 2 for p in (0, 1))
        apis[B].status = 200
        await until(h.source_committed, "everything committed after B recovers")


async def test_dead_letter_policy_dead_letters_the_sick_accounts_events() -> None:
    apis = {A: Api(), B: Api(status=503)}
    async with Harness(apis, stuck_policy="dead_letter") as h:
        await until(h.source_committed, "source committed")
        letters = h.dead_letters()
        assert letters
        assert {d["xconv.reason"] for d in letters} == {b"undeliverable"}
        assert len(letters) + len(apis[B].accepted_ids) >= EVENTS_PER_ACCOUNT
        assert h.parked() == []
        assert len(apis[A].accepted_ids) == EVENTS_PER_ACCOUNT


async def test_nothing_is_parked_when_no_account_is_healthy() -> None:
    """An outage of every account: parking would rewrite the backlog for nothing."""
    apis = {A: Api(status=503), B: Api(status=503)}
    async with Harness(apis) as h:
        await asyncio.sleep(0.8)
        assert h.parked() == []
        assert not any(h.fake.committed.get((TOPIC, p), 0) > 0 for p in (0, 1))
        for api in apis.values():
            api.status = 200
        await until(h.source_committed, "committed after the outage")
    assert h.parked() == []


async def test_a_parked_event_parked_again_counts_its_parks_and_keeps_its_origin() -> None:
    apis = {A: Api(), B: Api(status=500)}
    async with Harness(apis, probe_initial_s=0.05, probe_max_s=0.05) as h:
        await until(
            lambda: any(p.get(H_PARKS) == b"2" for p in h.parked()), "an event parked twice"
        )
        again = next(p for p in h.parked() if p.get(H_PARKS) == b"2")
        assert again["xconv.source.topic"] == TOPIC.encode()
        assert int(again["xconv.park.attempts"]) >= 1
        apis[B].status = 200
        await until(lambda: len(apis[B].accepted_ids) == EVENTS_PER_ACCOUNT, "B recovered")


async def test_parked_too_long_is_dead_lettered() -> None:
    apis = {A: Api(), B: Api(status=500)}
    async with Harness(apis, parked_max_age_s=0.3, probe_initial_s=0.05, probe_max_s=0.05) as h:
        await until(
            lambda: any(d["xconv.reason"] == b"parked_too_long" for d in h.dead_letters()),
            "a parked event dead-lettered as too old",
        )
        await until(h.source_committed, "source committed")


def parked_before(count: int) -> list[Entry]:
    """Records an earlier run parked for account B (500s), as the parking topic holds them."""
    now = time.time()
    out: list[Entry] = []
    for i in range(count):
        value = raw(event(order_id=f"parked-{i}", event_time=now - 3600, shop="b"))
        source = FakeMessage(TOPIC, 0, i, value)
        note = next_note(
            source, account=B, attempts=3, failing_since=now - 120, reason="http_500", now=now
        )
        headers = parking_headers(source, park_letter(note), datetime.now(UTC))
        out.append((value, list(headers)))
    return out


async def test_after_a_restart_one_parked_event_probes_and_the_rest_waits() -> None:
    """Parked by an earlier run, no other traffic: not pulled in and retried in place.

    One event probes the account; while it fails, it goes back to the parking topic and
    the partition waits for the next probe; once the account answers, everything flows.
    """
    apis = {A: Api(), B: Api(status=500)}
    h = Harness(apis, probe_initial_s=0.2, probe_max_s=0.2)
    for p in (0, 1):
        h.log[(TOPIC, p)] = []
    h.log[(PARKING, 0)] = parked_before(100)
    async with h:
        await until(lambda: apis[B].requests >= 2, "two probes")
        await asyncio.sleep(0.6)
        # Probes only: one at a time, at least 0.1 s apart (0.2 s x jitter 0.5..1.5).
        assert apis[B].requests <= 10
        assert h.engine._tracker.held <= 100
        again = [p for p in h.parked() if p.get(H_PARKS) == b"2"]
        assert again  # the failed probe went back to the parking topic
        assert h.engine._source is not None
        assert (PARKING, 0) in h.engine._source.holds
        apis[B].status = 200
        await until(lambda: len(apis[B].accepted_ids) == 100, "every parked event accepted")
        await until(h.parking_committed, "parking partition committed to its end")
    assert h.report.clean


async def test_after_a_restart_parked_events_of_a_recovered_account_flow_at_once() -> None:
    apis = {A: Api(), B: Api()}
    h = Harness(apis)
    for p in (0, 1):
        h.log[(TOPIC, p)] = []
    h.log[(PARKING, 0)] = parked_before(300)
    async with h:
        await until(lambda: len(apis[B].accepted_ids) == 300, "every parked event accepted")
        await until(h.parking_committed, "parking partition committed to its end")
    assert apis[B].requests <= 300 // 50 + 2  # the probe, then full batches
    assert h.parked() == []
