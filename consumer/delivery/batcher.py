"""Micro-batches of conversions per (account_id, pixel_id).

A request goes to one pixel (the path carries it) and is signed for one account, while
``event_id`` and ``conversion_id`` travel inside each conversion object: events of
different event tags can share a request. So the batch key is ``(account_id, pixel_id)``.

A batch closes when it holds ``max_events`` items, when the next item would push the
request body past ``max_bytes``, or when its oldest item has waited ``linger_s``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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


@dataclass(slots=True)
class BatchItem:
    """One conversion with where it came from (for the commit and the dead-letter record)."""

    topic: str
    partition: int
    offset: int
    epoch: int
    payload: bytes
    conversion_id: str
    source: object = None


@dataclass(slots=True)
class Batch:
    """Conversions for one request; ``attempts`` counts HTTP attempts made for it."""

    id: str
    key: BatchKey
    items: list[BatchItem]
    created_at: float
    attempts: int = 0
    body_len: int = _EMPTY_BODY_LEN

    def __len__(self) -> int:
        return len(self.items)

    def body(self) -> bytes:
        """The request body, built by joining the payloads (no re-serialisation)."""
        return _PREFIX + b",".join(item.payload for item in self.items) + _SUFFIX

    def subset(self, indices: Iterable[int]) -> Batch:
        """A new batch (fresh id, same key, attempts reset) of the items at ``indices``."""
        items = [self.items[i] for i in indices]
        return Batch(
            id=new_batch_id(),
            key=self.key,
            items=items,
            created_at=self.created_at,
            body_len=_body_len(items),
        )


def _body_len(items: list[BatchItem]) -> int:
    if not items:
        return _EMPTY_BODY_LEN
    return _EMPTY_BODY_LEN + sum(len(i.payload) for i in items) + len(items) - 1


@dataclass(slots=True)
class _Open:
    batch: Batch
    deadline: float


class Batcher:
    """Accumulates items into open batches; the caller sends what it hands back."""

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

    def add(self, key: BatchKey, item: BatchItem) -> Batch | None:
        """Add ``item``; return a batch that became full because of it, if any.

        When the item would push the open batch past ``max_bytes``, the open batch is
        returned and the item starts the next one. An item that alone exceeds
        ``max_bytes`` is returned alone (the server decides; it is never dropped here).
        """
        size = len(item.payload)
        current = self._open.get(key)
        flushed: Batch | None = None
        if current is not None and current.batch.body_len + 1 + size > self.max_bytes:
            flushed = self._close(key)
            current = None
        if current is None:
            now = self._clock()
            current = _Open(
                batch=Batch(id=new_batch_id(), key=key, items=[], created_at=now),
                deadline=now + self.linger_s,
            )
            self._open[key] = current
        batch = current.batch
        batch.body_len += size + (1 if batch.items else 0)
        batch.items.append(item)
        self._pending += 1
        if flushed is not None:
            return flushed
        if len(batch.items) >= self.max_events or batch.body_len > self.max_bytes:
            return self._close(key)
        return None

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
        self._pending -= len(entry.batch.items)
        return entry.batch
