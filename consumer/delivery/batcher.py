"""Micro-batches of conversions per (account_id, pixel_id).

A request goes to one pixel (the path carries it) and is signed for one account, while
``event_id`` and ``conversion_id`` travel inside each conversion object: events of
different event tags can share a request. So the batch key is ``(account_id, pixel_id)``.

A batch closes when it holds ``max_events`` events, when the next one would push the
request body past ``max_bytes``, or when its oldest item has waited ``linger_s``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from consumer.delivery.watermark import Chunk

BatchKey = tuple[str, str]
"""``(account_id, pixel_id)``."""

MAX_EVENTS_PER_REQUEST = 500
_PREFIX = b'{"conversions":['
_SUFFIX = b"]}"
_EMPTY_BODY_LEN = len(_PREFIX) + len(_SUFFIX)

_id_prefix = os.urandom(3).hex()
_id_counter = itertools.count(1)


def new_batch_id() -> str:
    """A short id, unique within the process and unlikely to clash across replicas."""
    return f"{_id_prefix}-{next(_id_counter):x}"


@dataclass(slots=True, eq=False)
class Batch:
    """Conversions for one request; ``attempts`` counts HTTP attempts made for it.

    Parallel lists, one entry per event: its conversion bytes, its Kafka message (for a
    dead-letter record) and the chunk it was taken in (for the commit). No per-event
    object is created on the hot path.
    """

    id: str
    key: BatchKey
    payloads: list[bytes]
    sources: list[Any]
    chunks: list[Chunk]
    created_at: float
    attempts: int = 0
    body_len: int = _EMPTY_BODY_LEN
    # Since when (monotonic) it has failed with retryable errors, and the last cause.
    failing_since: float | None = None
    last_reason: str = ""

    def __len__(self) -> int:
        return len(self.payloads)

    def body(self) -> bytes:
        """The request body, built by joining the payloads (no re-serialisation).

        One join of the whole body: ``prefix + join + suffix`` would copy ~300 KB twice
        more and costs ~10x as much (160 vs 15 µs for 500 events).
        """
        if not self.payloads:
            return _PREFIX + _SUFFIX
        parts = self.payloads.copy()
        parts[0] = _PREFIX + parts[0]
        parts[-1] = parts[-1] + _SUFFIX
        return b",".join(parts)

    def subset(self, indices: Iterable[int]) -> Batch:
        """A new batch (fresh id, same key, attempts reset) of the events at ``indices``."""
        picked = list(indices)
        payloads = [self.payloads[i] for i in picked]
        return Batch(
            id=new_batch_id(),
            key=self.key,
            payloads=payloads,
            sources=[self.sources[i] for i in picked],
            chunks=[self.chunks[i] for i in picked],
            created_at=self.created_at,
            body_len=body_len(payloads),
        )


def body_len(payloads: list[bytes]) -> int:
    """Length of the request body these payloads make."""
    if not payloads:
        return _EMPTY_BODY_LEN
    return _EMPTY_BODY_LEN + sum(map(len, payloads)) + len(payloads) - 1


@dataclass(slots=True)
class _Open:
    batch: Batch
    deadline: float


class Batcher:
    """Accumulates events into open batches; the caller sends what it hands back."""

    def __init__(
        self,
        *,
        max_events: int = MAX_EVENTS_PER_REQUEST,
        max_bytes: int = 4_000_000,
        linger_s: float = 0.05,
        clock: Callable[[], float],
    ) -> None:
        if not 1 <= max_events <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"max_events must be within 1..{MAX_EVENTS_PER_REQUEST}")
        if max_bytes <= _EMPTY_BODY_LEN:
            raise ValueError("max_bytes is too small for any request")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self._clock = clock
        # Insertion order == creation order, and linger is constant, so the first entry
        # always has the earliest deadline.
        self._open: dict[BatchKey, _Open] = {}
        self._pending = 0

    @property
    def pending_events(self) -> int:
        """Items held in open (not yet handed out) batches."""
        return self._pending

    def extend(
        self,
        key: BatchKey,
        payloads: list[bytes],
        sources: list[Any],
        chunks: list[Chunk],
    ) -> list[Batch]:
        """Add one fetch's events for ``key``; return the batches that became full.

        Slices whole runs into the open batch (one call per key per fetch, not per
        event). A batch closes at ``max_events``, or before the event that would push its
        body past ``max_bytes``; an event that alone exceeds ``max_bytes`` goes out alone
        (the server decides; it is never dropped here).
        """
        full: list[Batch] = []
        start, end = 0, len(payloads)
        while start < end:
            batch = self._open_batch(key)
            held = len(batch.payloads)
            stop = min(end, start + self.max_events - held)
            added = sum(map(len, payloads[start:stop])) + (stop - start) - (0 if held else 1)
            if batch.body_len + added > self.max_bytes:
                stop, added = self._fit(batch, payloads, start, stop)
            batch.payloads += payloads[start:stop]
            batch.sources += sources[start:stop]
            batch.chunks += chunks[start:stop]
            batch.body_len += added
            self._pending += stop - start
            start = stop
            if start < end or len(batch.payloads) >= self.max_events:
                full.append(self._close(key))
            elif batch.body_len > self.max_bytes:
                full.append(self._close(key))  # one oversized event alone
        return full

    def _fit(self, batch: Batch, payloads: list[bytes], start: int, stop: int) -> tuple[int, int]:
        """How many of ``payloads[start:stop]`` fit the byte limit: (new stop, bytes added)."""
        length, held, added = batch.body_len, len(batch.payloads), 0
        at = start
        while at < stop:
            extra = len(payloads[at]) + (1 if held + at - start else 0)
            if length + added + extra > self.max_bytes and held + at - start > 0:
                break
            added += extra
            at += 1
        return at, added

    def _open_batch(self, key: BatchKey) -> Batch:
        current = self._open.get(key)
        if current is None:
            now = self._clock()
            current = _Open(
                batch=Batch(
                    id=new_batch_id(),
                    key=key,
                    payloads=[],
                    sources=[],
                    chunks=[],
                    created_at=now,
                ),
                deadline=now + self.linger_s,
            )
            self._open[key] = current
        return current.batch

    def due(self, now: float) -> list[Batch]:
        """Batches whose linger time has passed at ``now``."""
        out: list[Batch] = []
        while self._open:
            key, entry = next(iter(self._open.items()))
            if entry.deadline > now:
                break
            out.append(self._close(key))
        return out

    def next_deadline(self) -> float | None:
        """When the oldest open batch is due (clock time), or None when nothing is open."""
        for entry in self._open.values():
            return entry.deadline
        return None

    def drain(self) -> list[Batch]:
        """Hand out every open batch (shutdown)."""
        return [self._close(key) for key in list(self._open)]

    def _close(self, key: BatchKey) -> Batch:
        entry = self._open.pop(key)
        self._pending -= len(entry.batch.payloads)
        return entry.batch
