"""In-memory Kafka and HTTP edges for the engine's unit tests (no broker, no sockets).

Integration tests use the real broker; these fakes exist so the engine's state
machines (back-pressure across rebalances, the supervisor, shutdown bounds) can be
driven step by step in milliseconds. ``FakeConsumer`` behaves like librdkafka where it
matters here: rebalance callbacks run inside ``consume``, pausing is per partition, and
a partition's pause flag survives a revoke (so an engine that does not reconcile the
flag on re-assignment stalls, as v1 could).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from consumer.delivery.client import Response

TP = tuple[str, int]


Headers = list[tuple[str, bytes | None]]
# A log entry: the value, or the value with headers (a parking record).
Entry = bytes | tuple[bytes, Headers]


class FakeMessage:
    def __init__(
        self, topic: str, partition: int, offset: int, value: bytes, headers: Headers | None = None
    ) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value
        self._h = headers

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes | None:
        return None

    def headers(self) -> Headers | None:
        return self._h

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    """One group member's consumer over ``log`` (partition -> message values)."""

    conf: dict[str, Any]
    log: dict[TP, list[Entry]]
    committed: dict[TP, int] = field(default_factory=dict)
    assigned: list[TP] = field(default_factory=list)
    paused: set[TP] = field(default_factory=set)
    positions: dict[TP, int] = field(default_factory=dict)
    commit_requests: list[dict[TP, int]] = field(default_factory=list)
    pending: list[tuple[str, list[TP]]] = field(default_factory=list)
    on_consume: Callable[[], None] | None = None
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    closed: bool = False
    _callbacks: dict[str, Any] = field(default_factory=dict)

    # -- what a test does ------------------------------------------------------------

    def rebalance(self, kind: str, tps: list[TP]) -> None:
        """Run ``kind`` ("assign", "revoke" or "lost") inside the next consume call."""
        self.pending.append((kind, tps))

    # -- the consumer API ------------------------------------------------------------

    async def subscribe(self, topics: list[str], **kwargs: Any) -> None:
        self._callbacks = kwargs

    async def _callback(self, name: str, tps: list[TP]) -> None:
        cb: Callable[[Any, list[TopicPartition]], Awaitable[None]] = self._callbacks[name]
        await cb(self, [TopicPartition(t, p) for t, p in tps])

    async def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:  # noqa: ASYNC109
        if self.on_consume is not None:
            self.on_consume()
        while self.pending:
            kind, tps = self.pending.pop(0)
            if kind == "assign":
                await self._callback("on_assign", tps)
                for tp in tps:
                    self.assigned.append(tp)
                    self.positions[tp] = self.committed.get(tp, 0)
            else:
                await self._callback("on_revoke" if kind == "revoke" else "on_lost", tps)
                self.assigned = [tp for tp in self.assigned if tp not in tps]
                # like librdkafka, a user pause flag is not cleared by a revoke
        out: list[Any] = []
        for tp in self.assigned:
            if tp in self.paused:
                continue
            values = self.log.get(tp, [])
            while self.positions[tp] < len(values) and len(out) < num_messages:
                off = self.positions[tp]
                entry = values[off]
                if isinstance(entry, tuple):
                    out.append(FakeMessage(tp[0], tp[1], off, entry[0], entry[1]))
                else:
                    out.append(FakeMessage(tp[0], tp[1], off, entry))
                self.positions[tp] = off + 1
        if not out:
            await asyncio.sleep(min(max(timeout, 0.0), 0.005))
        return out

    async def commit(self, *args: Any, **kwargs: Any) -> None:
        offsets: list[TopicPartition] = kwargs["offsets"]
        request = {(o.topic, o.partition): o.offset for o in offsets}
        self.commit_requests.append(request)
        self.committed.update(request)
        on_commit = self.conf["on_commit"]
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(on_commit(None, offsets))
        )

    async def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((p.topic, p.partition) for p in partitions)

    async def seek(self, partition: TopicPartition) -> None:
        self.seeks.append(((partition.topic, partition.partition), partition.offset))
        self.positions[(partition.topic, partition.partition)] = partition.offset

    async def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((p.topic, p.partition) for p in partitions)

    async def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.assigned]

    async def list_topics(self, *args: Any, **kwargs: Any) -> object:
        return object()

    async def get_watermark_offsets(self, tp: TopicPartition, **kwargs: Any) -> tuple[int, int]:
        return 0, len(self.log.get((tp.topic, tp.partition), []))

    async def close(self) -> None:
        if self.assigned:
            await self._callback("on_revoke", list(self.assigned))
            self.assigned = []
        self.closed = True


class FakeProducer:
    """Acknowledges every record at once; keeps them for assertions.

    With ``logs``, a record to one of those topics is also appended to partition 0 of
    that topic in the given log (so a consumer over the same log reads it back).
    """

    def __init__(
        self, logs: dict[TP, list[Entry]] | None = None, topics: tuple[str, ...] = ()
    ) -> None:
        self.records: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self._logs = logs
        self._topics = topics

    async def produce(
        self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        self.records.append((topic, value, kwargs))
        if self._logs is not None and topic in self._topics:
            self._logs.setdefault((topic, 0), []).append((value, list(kwargs.get("headers", []))))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def close(self, wait_s: float = 10.0) -> None:
        return None


@dataclass
class ScriptedApi:
    """An X endpoint in memory: ``answer`` decides each request's response."""

    answer: Callable[[int], Response | Awaitable[Response]]
    requests: list[int] = field(default_factory=list)  # events per request

    async def send(self, pixel_id: str, body: bytes) -> Response:
        n = len(orjson.loads(body)["conversions"])
        self.requests.append(n)
        result = self.answer(n)
        if isinstance(result, Response):
            await asyncio.sleep(0)
            return result
        return await result


def accepted(n: int) -> Response:
    return Response(200, {}, orjson.dumps({"data": {"conversions_processed": n}}))


def unavailable(_: int) -> Response:
    return Response(503, {}, b"")
