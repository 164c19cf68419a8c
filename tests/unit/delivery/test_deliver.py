"""Batch delivery and account lanes against an in-memory HTTP client and sink (no I/O).

Each test drives one failure the engine v1 handled badly: a blocked account never
probed again, server hints trusted without bound, odd headers crashing a task, a
partial 200 counted as accepted in silence, dead letters written one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry

from consumer.delivery.batcher import Batch
from consumer.delivery.client import Response
from consumer.delivery.concurrency import InFlightLimiter
from consumer.delivery.deliver import BatchDelivery
from consumer.delivery.dlq import DeadLetter, KafkaMessage
from consumer.delivery.gate import GateMode, GateState
from consumer.delivery.lane import AccountLane
from consumer.delivery.retry import Backoff
from consumer.delivery.watermark import Chunk, OffsetTracker
from consumer.observability.health import HealthState
from consumer.observability.metrics import Metrics
from consumer.settings import AccountSettings
from tests.fakes_kafka import FakeMessage

ACCOUNT = "18ce552mlaq"
TP = ("purchases", 0)


def ok(processed: int, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"data": {"conversions_processed": processed, "debug_id": "dbg-1"}})
    return Response(200, headers or {}, body)


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    return Response(code, headers or {}, body)


@dataclass
class FakeClient:
    """Answers from a script; after it runs out, every request gets ``then``."""

    script: list[Response]
    then: Response | None = None
    calls: list[int] = field(default_factory=list)  # events per request

    async def send(self, pixel_id: str, body: bytes) -> Response:
        self.calls.append(len(orjson.loads(body)["conversions"]))
        await asyncio.sleep(0)
        if self.script:
            return self.script.pop(0)
        if self.then is None:
            raise AssertionError("unexpected request")
        return self.then


@dataclass
class FakeSink:
    writes: list[list[tuple[KafkaMessage, DeadLetter]]] = field(default_factory=list)

    async def write(self, entries: Sequence[tuple[KafkaMessage, DeadLetter]]) -> None:
        self.writes.append(list(entries))


@dataclass
class Rig:
    tracker: OffsetTracker
    lane: AccountLane
    delivery: BatchDelivery
    metrics: Metrics
    sink: FakeSink
    client: FakeClient

    def batch(self, n: int, start: int = 0) -> Batch:
        chunk = self.tracker.add(TP, start, start + n - 1, n)
        return Batch(
            id=f"b{start}",
            key=(ACCOUNT, "oka17"),
            payloads=[
                orjson.dumps({"conversion_id": f"c{off}"}) for off in range(start, start + n)
            ],
            sources=[FakeMessage(*TP, off, b"") for off in range(start, start + n)],
            chunks=[chunk] * n,
            created_at=0.0,
        )

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def rig(client: FakeClient, *, window_s: float = 900.0, probe_s: float = 0.02) -> Rig:
    loop = asyncio.get_running_loop()
    metrics = Metrics(CollectorRegistry())
    settings = AccountSettings(
        account_id=ACCOUNT,
        pixel_id="oka17",
        auth="pixel_token",
        pixel_token="t",
        window_s=window_s,
        requests_per_window=1_000_000,
    )
    lane = AccountLane(
        settings,
        client,
        metrics=metrics,
        health=HealthState(),
        global_limiter=InFlightLimiter(8),
        gate_state=GateState(
            initial_s=probe_s, max_s=probe_s * 4, clock=loop.time, rng=lambda: 0.5
        ),
        clock=loop.time,
        wall=time.time,
    )
    tracker = OffsetTracker()
    tracker.assign(TP)
    sink = FakeSink()

    def finish(chunks: Sequence[Chunk]) -> None:
        tracker.finish_all(chunks)

    def is_stale(chunks: Sequence[Chunk]) -> bool:
        return tracker.all_revoked(chunks)

    delivery = BatchDelivery(
        lanes={ACCOUNT: lane},
        sink=sink,
        backoff=Backoff(base_s=0.001, cap_s=0.01),
        metrics=metrics,
        finish=finish,
        is_stale=is_stale,
        abandon=finish,
    )
    return Rig(tracker, lane, delivery, metrics, sink, client)


async def test_blocked_account_is_probed_until_it_recovers() -> None:
    # 401, then the probe fails twice more (401, an HTML 404 page), then the fix lands.
    html_404 = status(404, {"content-type": "text/html"}, b"<html>Not Found</html>")
    client = FakeClient([status(401), status(401), html_404], then=ok(3))
    r = rig(client)
    batches = [r.batch(3, start=i * 3) for i in range(4)]
    first = asyncio.create_task(r.delivery.deliver(batches[0]))
    while r.lane.gate.mode is GateMode.OPEN:  # noqa: ASYNC110 - polling pure state
        await asyncio.sleep(0.001)
    rest = [asyncio.create_task(r.delivery.deliver(b)) for b in batches[1:]]
    await asyncio.wait_for(asyncio.gather(first, *rest), 5.0)
    assert r.tracker.watermark(TP) == 12
    assert r.tracker.total_outstanding == 0
    assert r.lane.gate.state.mode.value == "open"
    # One request per batch plus the failed probes: nobody else hammered the API.
    assert len(client.calls) == 4 + 3  # four accepted, three refused
    assert r.sample("xconv_account_probes_total", account=ACCOUNT, outcome="blocked") == 2
    assert r.sample("xconv_account_probes_total", account=ACCOUNT, outcome="accepted") == 1
    assert r.sample("xconv_account_blocked", account=ACCOUNT) == 0


async def test_huge_retry_after_is_capped_at_the_window_and_counted() -> None:
    client = FakeClient([status(503, {"retry-after": "1000000000"})], then=ok(2))
    r = rig(client, window_s=0.05)
    b = r.batch(2)
    await asyncio.wait_for(r.delivery.deliver(b), 2.0)  # v1: slept 31 years
    labels = {"account": ACCOUNT, "hint": "retry_after"}
    assert r.sample("xconv_server_hints_capped_total", **labels) == 1
    assert r.tracker.total_outstanding == 0


async def test_reset_far_ahead_with_nothing_remaining_is_capped() -> None:
    far = str(int(time.time()) + 10**8)
    headers = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": far}
    client = FakeClient([ok(1, headers)], then=ok(1))
    r = rig(client, window_s=0.05)
    await asyncio.wait_for(r.delivery.deliver(r.batch(1)), 2.0)
    await asyncio.wait_for(r.delivery.deliver(r.batch(1, start=1)), 2.0)
    labels = {"account": ACCOUNT, "hint": "rate_limit_reset"}
    assert r.sample("xconv_server_hints_capped_total", **labels) >= 1
    assert r.tracker.watermark(TP) == 2


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e999", "lots"])
async def test_odd_header_on_an_answer_never_kills_the_batch(value: str) -> None:
    headers = {"x-rate-limit-remaining": value, "x-rate-limit-reset": value}
    client = FakeClient([ok(2, headers)])
    r = rig(client)
    await asyncio.wait_for(r.delivery.deliver(r.batch(2)), 2.0)
    assert r.tracker.total_outstanding == 0


async def test_partial_200_is_logged_and_counted_not_resent() -> None:
    client = FakeClient([ok(7)])
    r = rig(client)
    b = r.batch(10)
    with structlog.testing.capture_logs() as logs:
        await r.delivery.deliver(b)
    assert client.calls == [10]  # no resend
    assert r.tracker.total_outstanding == 0
    assert r.sample("xconv_events_unprocessed_total", account=ACCOUNT) == 3
    warning = next(e for e in logs if e["event"] == "batch_partially_processed")
    assert warning["log_level"] == "warning"
    assert (warning["batch_id"], warning["debug_id"]) == (b.id, "dbg-1")
    assert (warning["sent"], warning["processed"]) == (10, 7)


async def test_rejected_events_are_dead_lettered_in_one_write() -> None:
    errors = [
        {"code": "INVALID_PARAMETER", "message": "bad", "parameter": f"conversions[{i}].x"}
        for i in (1, 3, 5)
    ]
    client = FakeClient([status(400, body=orjson.dumps({"errors": errors}))], then=ok(5))
    r = rig(client)
    await r.delivery.deliver(r.batch(8))
    assert len(r.sink.writes) == 1
    assert len(r.sink.writes[0]) == 3
    assert {letter.reason for _, letter in r.sink.writes[0]} == {"api_rejected"}
    assert client.calls == [8, 5]
    assert r.tracker.total_outstanding == 0


async def test_413_for_a_single_event_is_dead_lettered_as_too_large() -> None:
    client = FakeClient([status(413)])
    r = rig(client)
    await r.delivery.deliver(r.batch(1))
    assert r.sink.writes[0][0][1].reason == "too_large"
    assert r.tracker.total_outstanding == 0


async def test_batch_of_a_revoked_partition_is_abandoned_not_retried_forever() -> None:
    client = FakeClient([], then=status(503))
    r = rig(client)
    b = r.batch(4)
    task = asyncio.create_task(r.delivery.deliver(b))
    await asyncio.sleep(0.05)
    assert not task.done()
    r.tracker.revoke(TP)
    assert r.tracker.held == 4
    await asyncio.wait_for(task, 2.0)
    assert r.tracker.held == 0
