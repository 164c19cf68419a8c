"""The engine's hot path books one chunk per run of a partition, at most CHUNK_EVENTS long."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from consumer.delivery.engine import CHUNK_EVENTS, Engine
from consumer.observability.health import HealthState
from consumer.observability.metrics import Metrics
from consumer.transform import Conversion, Rejection, Route, Skip, Transformer
from tests.fakes_kafka import FakeMessage, ScriptedApi, accepted
from tests.unit.delivery.test_engine_states import TOPIC, settings
from tests.unit.transform.helpers import event, raw


def engine() -> Engine:
    s = settings()
    e = Engine(
        s,
        metrics=Metrics(CollectorRegistry()),
        health=HealthState(),
        client_factory=lambda account: ScriptedApi(accepted),
    )
    for account in s.accounts:  # run() does this; the hot path only needs the lanes
        e._lanes[account.account_id] = e._lane(account)
    e._batcher.linger_s = 3600.0  # nothing leaves during the test
    return e


def messages(partition: int, offsets: range) -> list[FakeMessage]:
    recent = time.time() - 3600
    return [
        FakeMessage(
            TOPIC, partition, off, raw(event(order_id=f"o{partition}-{off}", event_time=recent))
        )
        for off in offsets
    ]


def test_a_long_run_is_split_into_bounded_chunks_and_the_watermark_moves_per_chunk() -> None:
    e = engine()
    tp = (TOPIC, 0)
    e._tracker.assign(tp)
    e._ingest(messages(0, range(250)))
    (batch,) = e._batcher._open.values()
    chunks = list(dict.fromkeys(batch.batch.chunks))
    assert [c.size for c in chunks] == [CHUNK_EVENTS, CHUNK_EVENTS, 50]
    assert e._tracker.held == 250
    e._tracker.finish(chunks[0], CHUNK_EVENTS)
    assert e._tracker.watermark(tp) == CHUNK_EVENTS
    e._tracker.finish(chunks[2], 50)
    assert e._tracker.watermark(tp) == CHUNK_EVENTS  # the middle chunk still holds it


def test_a_refetch_takes_nothing_twice_and_unowned_partitions_nothing() -> None:
    e = engine()
    e._tracker.assign((TOPIC, 0))
    first = messages(0, range(10))
    e._ingest(first + messages(1, range(5)))  # partition 1 is not owned
    assert e._tracker.held == 10
    e._ingest(first[5:] + messages(0, range(10, 12)))  # a re-fetch after a seek
    assert e._tracker.held == 12
    assert e._batcher.pending_events == 12


def test_interleaved_partitions_get_one_chunk_per_run() -> None:
    e = engine()
    for p in (0, 1):
        e._tracker.assign((TOPIC, p))
    e._ingest(messages(0, range(3)) + messages(1, range(4)) + messages(0, range(3, 5)))
    (batch,) = e._batcher._open.values()
    sizes = [c.size for c in dict.fromkeys(batch.batch.chunks)]
    assert sizes == [3, 4, 2]
    assert e._tracker.outstanding((TOPIC, 0)) == 5
    assert e._tracker.outstanding((TOPIC, 1)) == 4


class _RouteByOffset(Transformer):
    """Hands out a conversion per message whose route is picked by the message's offset."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def transform(self, raw: bytes) -> Conversion | Rejection | Skip:
        offset = int(raw)
        return Conversion(self.routes[offset], f"c{offset}", raw)


def test_alternating_routes_and_equal_route_objects_land_in_their_own_batches() -> None:
    e = engine()
    e._tracker.assign((TOPIC, 0))
    a = Route("18ce552mlaq", "oka17", "ol288")
    a_again = Route("18ce552mlaq", "oka17", "ol288")  # equal, another object
    b = Route("18ce552mlaq", "pix2", "ol288")
    routes = [a, b, a, a_again, b, b, a_again, a, b, a]
    e.transformer = _RouteByOffset(routes)
    e._ingest([FakeMessage(TOPIC, 0, off, str(off).encode()) for off in range(len(routes))])
    opened = {key: held.batch for key, held in e._batcher._open.items()}
    assert set(opened) == {("18ce552mlaq", "oka17"), ("18ce552mlaq", "pix2")}
    for key, batch in opened.items():
        want = [off for off, r in enumerate(routes) if (r.account_id, r.pixel_id) == key]
        assert batch.payloads == [str(off).encode() for off in want]
        assert [m.offset() for m in batch.sources] == want
        assert len(batch.chunks) == len(want)
    assert e._batcher.pending_events == len(routes)
