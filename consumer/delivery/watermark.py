"""Per-partition commit watermarks for at-least-once delivery, kept per fetch, not per event.

Messages of one partition finish out of order (batches of different pixels, retries,
dead-letters), but Kafka commits one offset per partition meaning "everything below is
done". The watermark therefore never passes an unfinished event.

Bookkeeping is per *chunk*: the consecutive messages of one partition taken in one
fetch (a few hundred to a few thousand). A batch remembers which chunk each of its
events came from and, when it finishes, tells each chunk how many of its events are
done; a chunk is done when all of its events are. The watermark is the first offset
of the oldest chunk not yet done (or one past the last offset taken when every chunk
is done). That is as safe as per-offset tracking (it never passes an unfinished
event) and costs O(1) per fetch instead of a set and a deque entry per event; on a
crash it may redeliver up to one chunk of already-finished events, which X
de-duplicates by ``conversion_id``.

Ownership. A chunk points at the partition state it was taken under. Revoking a
partition marks that state revoked, so a batch finishing after a rebalance never
commits for a partition this member no longer owns, or owns again with a fresh state.

Memory. What a partition costs is its *span*: every event of every chunk from the
oldest unfinished one to the newest, finished or not. ``held`` counts spans plus the
unfinished events of revoked partitions whose batches are still out ("orphans", until
they finish or are abandoned), so back-pressure on ``held`` bounds memory even when
one stuck event heads a partition while everything behind it finishes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence

TopicPartition = tuple[str, int]
"""``(topic, partition)``."""


class _Partition:
    """One assignment of one partition (a new object on every re-assignment)."""

    __slots__ = ("chunks", "committed", "confirmed", "last_taken", "revoked", "span", "unfinished")

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()  # oldest first; never starts with a done chunk
        self.last_taken: int | None = None
        self.span = 0  # events in ``chunks``
        self.unfinished = 0
        self.revoked = False
        self.committed: int | None = None  # highest offset asked of the broker
        self.confirmed: int | None = None  # highest offset the broker acknowledged


class Chunk:
    """Consecutive offsets of one partition taken in one fetch: the unit of bookkeeping.

    Identity-hashed, so a batch's chunk list can be counted with ``Counter``.
    """

    __slots__ = ("finished", "first", "last", "owner", "size")

    def __init__(self, owner: _Partition, first: int, last: int, size: int) -> None:
        self.owner = owner
        self.first = first
        self.last = last
        self.size = size
        self.finished = 0

    @property
    def current(self) -> bool:
        """False once its partition was revoked: its events can no longer commit here."""
        return not self.owner.revoked

    def __repr__(self) -> str:
        return f"Chunk({self.first}..{self.last}, {self.finished}/{self.size} finished)"


class OffsetTracker:
    """Chunks in flight and the contiguous commit watermark of each owned partition."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._total_unfinished = 0
        self._total_span = 0
        self._total_orphans = 0

    # -- ownership -------------------------------------------------------------------

    def assign(self, tp: TopicPartition) -> None:
        """Start tracking ``tp``; a repeated assignment keeps the state it has."""
        if tp not in self._parts:
            self._parts[tp] = _Partition()

    def revoke(self, tp: TopicPartition) -> None:
        """Stop tracking ``tp``; its chunks still out become orphans (memory, no commit)."""
        state = self._parts.pop(tp, None)
        if state is None:
            return
        state.revoked = True
        self._total_unfinished -= state.unfinished
        self._total_span -= state.span
        self._total_orphans += state.unfinished

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._parts

    def assigned(self) -> list[TopicPartition]:
        """The partitions currently owned."""
        return list(self._parts)

    # -- per fetch -------------------------------------------------------------------

    def taken_up_to(self, tp: TopicPartition) -> int | None:
        """The last offset taken from ``tp`` (-1 before the first); None when not owned.

        A message at or below it was taken already (a re-fetch after a pause or seek)
        and must not be taken twice.
        """
        state = self._parts.get(tp)
        if state is None:
            return None
        return -1 if state.last_taken is None else state.last_taken

    def open_chunk(self, tp: TopicPartition) -> Chunk | None:
        """A new, empty chunk for the next run of ``tp``; None when ``tp`` is not owned.

        Events may refer to it at once; it counts (and can finish) once ``seal``ed.
        """
        state = self._parts.get(tp)
        return None if state is None else Chunk(state, -1, -1, 0)

    @staticmethod
    def next_chunk(chunk: Chunk) -> Chunk:
        """A new, empty chunk of the same assignment (a run longer than one chunk)."""
        return Chunk(chunk.owner, -1, -1, 0)

    def seal(self, chunk: Chunk, first: int, last: int, size: int) -> None:
        """Record that the chunk took ``size`` messages from ``first`` to ``last``.

        Offsets must increase across chunks (gaps are fine: compaction, transaction
        markers). An empty chunk is dropped. Raises ``ValueError`` for a chunk that
        does not start above the last offset taken, cannot hold ``size`` offsets, is
        sealed twice, or belongs to a revoked partition.
        """
        if size == 0:
            return
        state = chunk.owner
        if state.revoked or chunk.size:
            raise ValueError("only a fresh chunk of an owned partition can be sealed")
        if size < 0 or last < first or (last - first + 1) < size:
            raise ValueError(f"chunk {first}..{last} cannot hold {size} messages")
        if state.last_taken is not None and first <= state.last_taken:
            raise ValueError(f"offset {first} is not above {state.last_taken}")
        chunk.first, chunk.last, chunk.size = first, last, size
        state.chunks.append(chunk)
        state.last_taken = last
        state.span += size
        state.unfinished += size
        self._total_span += size
        self._total_unfinished += size

    def add(self, tp: TopicPartition, first: int, last: int, size: int) -> Chunk:
        """``open_chunk`` and ``seal`` in one: raises ``KeyError`` for an unowned ``tp``."""
        chunk = self.open_chunk(tp)
        if chunk is None:
            raise KeyError(tp)
        self.seal(chunk, first, last, size)
        return chunk

    def finish(self, chunk: Chunk, count: int = 1) -> None:
        """``count`` events of ``chunk`` are finished (delivered, dead-lettered, skipped).

        For a revoked partition this only frees their memory (nothing commits). Never
        counts more events than the chunk has.
        """
        count = min(count, chunk.size - chunk.finished)
        if count <= 0:
            return
        chunk.finished += count
        state = chunk.owner
        if state.revoked:
            self._total_orphans -= count
            return
        state.unfinished -= count
        self._total_unfinished -= count
        chunks = state.chunks
        if chunks[0] is chunk:
            before = state.span
            while chunks and chunks[0].finished == chunks[0].size:
                state.span -= chunks.popleft().size
            self._total_span -= before - state.span

    def finish_all(self, chunks: Iterable[Chunk]) -> None:
        """``finish`` for a batch's chunk list (one entry per event)."""
        for chunk, n in Counter(chunks).items():  # counted in C: no per-event Python
            self.finish(chunk, n)

    @staticmethod
    def all_revoked(chunks: Sequence[Chunk]) -> bool:
        """Whether none of these events can commit here any more."""
        if chunks and chunks[0].current:
            return False  # the common case, without a set of 500 chunks
        return not any(chunk.current for chunk in set(chunks))

    # -- commits ---------------------------------------------------------------------

    def watermark(self, tp: TopicPartition) -> int | None:
        """The offset Kafka should hold for ``tp`` now, or None when nothing was taken."""
        state = self._parts.get(tp)
        if state is None or state.last_taken is None:
            return None
        if state.chunks:
            return state.chunks[0].first
        return state.last_taken + 1

    def committable(self, tp: TopicPartition) -> int | None:
        """The Kafka commit offset for ``tp`` if it moved since the last commit, else None."""
        mark = self.watermark(tp)
        if mark is None:
            return None
        state = self._parts[tp]
        if state.committed is not None and mark <= state.committed:
            return None
        return mark

    def committable_all(self) -> dict[TopicPartition, int]:
        """``committable`` for every owned partition that has something new."""
        out: dict[TopicPartition, int] = {}
        for tp in self._parts:
            mark = self.committable(tp)
            if mark is not None:
                out[tp] = mark
        return out

    def mark_committed(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` was asked of the broker for ``tp`` (ignored when not owned).

        ``committable`` then only offers higher offsets, so commits never go backwards.
        """
        state = self._parts.get(tp)
        if state is not None and (state.committed is None or offset > state.committed):
            state.committed = offset

    def commit_result(self, tp: TopicPartition, offset: int, ok: bool) -> int | None:
        """The broker's answer to a commit; returns the confirmed offset, if any.

        A refused commit hands the partition's watermark out again (the next commit
        retries it); an acknowledged one becomes the confirmed offset.
        """
        state = self._parts.get(tp)
        if state is None:
            return None
        if ok:
            if state.confirmed is None or offset > state.confirmed:
                state.confirmed = offset
        elif state.committed is not None and offset >= state.committed:
            state.committed = state.confirmed
        return state.confirmed

    def confirmed(self, tp: TopicPartition) -> int | None:
        """The last offset the broker acknowledged for ``tp`` in this assignment."""
        state = self._parts.get(tp)
        return None if state is None else state.confirmed

    # -- metrics ---------------------------------------------------------------------

    def outstanding(self, tp: TopicPartition) -> int:
        """Unfinished messages of ``tp`` (0 when not owned)."""
        state = self._parts.get(tp)
        return 0 if state is None else state.unfinished

    @property
    def total_outstanding(self) -> int:
        """Unfinished messages over all owned partitions."""
        return self._total_unfinished

    @property
    def held(self) -> int:
        """What memory holds: every owned partition's span plus orphaned events."""
        return self._total_span + self._total_orphans

    def span(self, tp: TopicPartition) -> int:
        """Events remembered for ``tp``: every chunk from its oldest unfinished one on."""
        state = self._parts.get(tp)
        return 0 if state is None else state.span
