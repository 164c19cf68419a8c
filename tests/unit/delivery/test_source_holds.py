"""Partition holds in the Kafka source: a held partition stays paused through a
back-pressure resume, is sought back to its offset, and a revoke drops its hold."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.delivery.source import KafkaSource
from consumer.observability.metrics import Metrics
from tests.fakes_kafka import TP, FakeConsumer

PARKING = "purchases.parking"


class Listener:
    async def on_assigned(self, tps: list[TP]) -> None:
        return None

    async def on_revoking(self, tps: list[TP]) -> None:
        return None

    def on_lost(self, tps: list[TP]) -> None:
        return None

    def on_commit_result(self, tp: TP, offset: int, ok: bool) -> None:
        return None

    def on_fatal(self, error: str) -> None:
        raise AssertionError(error)


async def started() -> tuple[KafkaSource, FakeConsumer]:
    made: list[FakeConsumer] = []

    def factory(conf: dict[str, Any]) -> FakeConsumer:
        made.append(FakeConsumer(conf, {(PARKING, 0): [b"a"] * 10, (PARKING, 1): [b"b"] * 10}))
        return made[0]

    source = KafkaSource(
        factory,
        {},
        [PARKING],
        Listener(),
        metrics=Metrics(CollectorRegistry()),
        call_timeout_s=1.0,
        callback_allowance_s=0.1,
        clock=time.monotonic,
    )
    await source.start()
    made[0].rebalance("assign", [(PARKING, 0), (PARKING, 1)])
    await source.fetch(100, 0.0)
    return source, made[0]


async def test_a_hold_pauses_and_seeks_and_survives_a_backpressure_resume() -> None:
    source, fake = await started()
    source.hold((PARKING, 0), 4, time.monotonic() + 60, "acct", 0.0)
    await source.apply_holds()
    assert (PARKING, 0) in fake.paused
    assert fake.seeks == [((PARKING, 0), 4)]
    assert fake.positions[(PARKING, 0)] == 4
    await source.set_paused(True)
    await source.set_paused(False)
    assert fake.paused == {(PARKING, 0)}  # back-pressure resumed only the other one
    await source.release([(PARKING, 0)])
    assert fake.paused == set()
    assert source.holds == {}
    messages = await source.fetch(100, 0.0)
    assert [m.offset() for m in messages if m.partition() == 0] == list(range(4, 10))


async def test_a_release_while_paused_by_backpressure_leaves_the_partition_paused() -> None:
    source, fake = await started()
    source.hold((PARKING, 1), 0, time.monotonic() + 60, "acct", 0.0)
    await source.apply_holds()
    await source.set_paused(True)
    await source.release([(PARKING, 1)])
    assert fake.paused == {(PARKING, 0), (PARKING, 1)}
    await source.set_paused(False)
    assert fake.paused == set()


async def test_a_revoke_drops_the_hold() -> None:
    source, fake = await started()
    source.hold((PARKING, 1), 2, time.monotonic() + 60, "acct", 0.0)
    await source.apply_holds()
    fake.rebalance("revoke", [(PARKING, 1)])
    await source.fetch(100, 0.0)
    assert source.holds == {}
