"""Dead-letter records: the original message plus why it could not be delivered.

An event counts as done only once its dead-letter write is acknowledged by Kafka,
so ``DeadLetterWriter.write`` retries until the broker takes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import confluent_kafka
import orjson
import structlog

log = structlog.get_logger("xconv.dlq")

HEADER_PREFIX = "xconv."
# Headers that describe where the event first came from; a replayed record keeps them.
SOURCE_HEADERS = ("xconv.source.topic", "xconv.source.partition", "xconv.source.offset")


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` a dead-letter record needs."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why one message is dead: a stable reason code and PII-free details."""

    reason: str
    message: str
    field: str | None = None
    attempts: int = 0
    debug_id: str | None = None
    errors: Sequence[Mapping[str, Any]] = ()


def build_headers(
    source: KafkaMessage, letter: DeadLetter, now: datetime
) -> list[tuple[str, bytes]]:
    """Original headers (less old ``xconv.*`` ones) followed by the dead-letter headers."""
    original = source.headers() or []
    kept = [(k, v or b"") for k, v in original if not k.startswith(HEADER_PREFIX)]
    previous = {k: v or b"" for k, v in original if k.startswith(HEADER_PREFIX)}
    if all(h in previous for h in SOURCE_HEADERS):
        src = [(h, previous[h]) for h in SOURCE_HEADERS]
        replays = int(previous.get("xconv.replays", b"0") or b"0") + 1
        src.append(("xconv.replays", str(replays).encode()))
    else:
        src = [
            ("xconv.source.topic", (source.topic() or "").encode()),
            ("xconv.source.partition", str(source.partition()).encode()),
            ("xconv.source.offset", str(source.offset()).encode()),
        ]
    added = [
        ("xconv.reason", letter.reason.encode()),
        ("xconv.message", letter.message.encode()),
        *src,
        ("xconv.time", now.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
        ("xconv.attempts", str(letter.attempts).encode()),
    ]
    if letter.field:
        added.append(("xconv.field", letter.field.encode()))
    if letter.debug_id:
        added.append(("xconv.x.debug_id", letter.debug_id.encode()))
    if letter.errors:
        added.append(("xconv.x.errors", orjson.dumps(list(letter.errors))))
    return kept + added


def decode_headers(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, Any]:
    """The decoded view of a dead-letter record's headers (schemas/dead-letter-record)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    raw = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
        for k, v in pairs
        if k.startswith("xconv.")
    }
    view: dict[str, Any] = {
        "reason": raw.get("xconv.reason"),
        "message": raw.get("xconv.message"),
        "field": raw.get("xconv.field"),
        "source": {
            "topic": raw.get("xconv.source.topic"),
            "partition": int(raw.get("xconv.source.partition", "-1")),
            "offset": int(raw.get("xconv.source.offset", "-1")),
        },
        "time": raw.get("xconv.time"),
        "attempts": int(raw.get("xconv.attempts", "0")),
        "replays": int(raw.get("xconv.replays", "0")),
        "debug_id": raw.get("xconv.x.debug_id"),
        "errors": orjson.loads(raw["xconv.x.errors"]) if "xconv.x.errors" in raw else [],
    }
    return view


class Producer(Protocol):
    """The part of ``confluent_kafka.aio.AIOProducer`` used here."""

    async def produce(
        self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]: ...


class HeaderProducer:
    """An asyncio face on ``confluent_kafka.Producer`` for records with headers.

    ``confluent_kafka.aio.AIOProducer`` batches records and refuses headers, which a
    dead-letter record needs; this adapter keeps the plain producer non-blocking:
    ``produce`` only enqueues, a poll task serves delivery reports from a worker
    thread, and each report resolves the record's future on the event loop.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._producer = confluent_kafka.Producer(dict(config))
        self._loop = asyncio.get_running_loop()
        self._poller = asyncio.create_task(self._poll_loop(), name="xconv-dlq-poll")

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.to_thread(self._producer.poll, 0.1)

    async def produce(
        self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            def settle() -> None:
                if future.done():
                    return
                if err is not None:
                    future.set_exception(confluent_kafka.KafkaException(err))
                else:
                    future.set_result(msg)

            self._loop.call_soon_threadsafe(settle)

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=on_delivery, **kwargs
                )
                return future
            except BufferError:  # local queue full: let deliveries drain first
                await asyncio.sleep(0.05)

    async def flush(self, wait_s: float = 10.0) -> int:
        remaining: int = await asyncio.to_thread(self._producer.flush, wait_s)
        return remaining

    async def close(self) -> None:
        await self.flush()
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller


class DeadLetterWriter:
    """Writes dead-letter records and waits for the broker's acknowledgement."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        retry_cap_s: float = 30.0,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._retry_cap_s = retry_cap_s
        self._wall = wall
        self._rng = rng or random.Random()

    async def write(self, source: KafkaMessage, letter: DeadLetter) -> None:
        """Return only once Kafka acknowledged the record; retry with jittered backoff."""
        headers = build_headers(source, letter, self._wall())
        attempt = 0
        while True:
            try:
                delivery = await self._producer.produce(
                    self._topic, value=source.value(), key=source.key(), headers=headers
                )
                await delivery
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a Kafka error of any kind: the record is not stored yet
                attempt += 1
                delay = self._rng.uniform(0, min(self._retry_cap_s, 0.2 * 2**attempt))
                log.warning(
                    "dead_letter_write_failed",
                    topic=self._topic,
                    reason=letter.reason,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(delay)
