"""Per-partition commit watermarks for at-least-once delivery.

Messages of one partition finish out of order (batches of different pixels, retries,
dead-letters), but Kafka commits one offset per partition meaning "everything below is
done". The watermark is therefore the lowest offset still unfinished; it only moves
over a contiguous run of finished offsets, so a crash never skips an unfinished event.

Assignment epochs make acknowledgements from a previous ownership harmless: when a
partition is revoked (and perhaps assigned again), ``done`` calls carrying the old
epoch are ignored, so a batch that finished after a rebalance never commits for a
partition this member no longer owns (or owns again with a fresh position).

Memory. What a partition costs is its *span*: every offset from the watermark to the
last one tracked, finished or not, because a finished offset behind an unfinished head
must be remembered until the head finishes. ``held`` therefore counts spans, plus the
unfinished events of revoked partitions whose batches are still out ("orphans", until
they finish or are abandoned): back-pressure on ``held`` bounds memory even when one
stuck event sits at a partition's head while the events behind it keep finishing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]
"""``(topic, partition)``."""


@dataclass(slots=True)
class _PartitionState:
    epoch: int
    # Tracked offsets from the lowest unfinished one upwards (finished ones behind the
    # head are popped eagerly, so the deque never starts with a finished offset).
    queue: deque[int] = field(default_factory=deque)
    unfinished: set[int] = field(default_factory=set)
    last_tracked: int | None = None
    committed: int | None = None  # highest offset asked of the broker
    confirmed: int | None = None  # highest offset the broker acknowledged


class OffsetTracker:
    """Outstanding offsets and the contiguous commit watermark of each owned partition.

    O(1) amortised per message; memory is proportional to the offsets between the
    lowest unfinished one and the last tracked one.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self._epoch_counter = 0
        self._total_unfinished = 0
        self._total_span = 0
        # epoch of a revoked partition -> its events still out in batches
        self._orphans: dict[int, int] = {}
        self._total_orphans = 0

    # -- ownership -------------------------------------------------------------------

    def assign(self, tp: TopicPartition) -> int:
        """Start tracking ``tp``; return its assignment epoch.

        Assigning a partition that is already owned keeps its state and epoch
        (cooperative rebalances may repeat an assignment).
        """
        state = self._parts.get(tp)
        if state is not None:
            return state.epoch
        self._epoch_counter += 1
        self._parts[tp] = _PartitionState(epoch=self._epoch_counter)
        return self._epoch_counter

    def revoke(self, tp: TopicPartition) -> None:
        """Stop tracking ``tp``; later ``done`` calls for its old epoch are ignored."""
        state = self._parts.pop(tp, None)
        if state is not None:
            self._total_unfinished -= len(state.unfinished)
            self._total_span -= len(state.queue)
            if state.unfinished:
                self._orphans[state.epoch] = len(state.unfinished)
                self._total_orphans += len(state.unfinished)

    def is_current(self, tp: TopicPartition, epoch: int) -> bool:
        """Whether ``epoch`` is the live assignment of ``tp`` (False once revoked)."""
        state = self._parts.get(tp)
        return state is not None and state.epoch == epoch

    def epoch(self, tp: TopicPartition) -> int | None:
        """The current assignment epoch of ``tp``, or None when not owned."""
        state = self._parts.get(tp)
        return None if state is None else state.epoch

    def assigned(self) -> list[TopicPartition]:
        """The partitions currently owned."""
        return list(self._parts)

    # -- per message -----------------------------------------------------------------

    def track(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` was taken from ``tp`` and is now in flight.

        Offsets must increase within a partition (gaps are fine: compaction,
        transaction markers). Raises ``KeyError`` for an unowned partition and
        ``ValueError`` for an offset that does not increase.
        """
        state = self._parts[tp]
        if state.last_tracked is not None and offset <= state.last_tracked:
            raise ValueError(f"offset {offset} of {tp} is not above {state.last_tracked}")
        state.queue.append(offset)
        state.unfinished.add(offset)
        state.last_tracked = offset
        self._total_unfinished += 1
        self._total_span += 1

    def done(self, tp: TopicPartition, offset: int, epoch: int) -> bool:
        """Mark ``offset`` finished (delivered or dead-lettered).

        Returns False, changing nothing, when ``tp`` is no longer owned, ``epoch`` is
        stale, or the offset is not in flight (unknown or already done).
        """
        state = self._parts.get(tp)
        if state is None or state.epoch != epoch:
            self._release_orphans(epoch, 1)
            return False
        unfinished = state.unfinished
        if offset not in unfinished:
            return False
        unfinished.remove(offset)
        self._total_unfinished -= 1
        queue = state.queue
        before = len(queue)
        while queue and queue[0] not in unfinished:
            queue.popleft()
        self._total_span -= before - len(queue)
        return True

    def abandon(self, epoch: int, count: int) -> None:
        """Events of a revoked assignment that will never finish here (dropped batch)."""
        self._release_orphans(epoch, count)

    def _release_orphans(self, epoch: int, count: int) -> None:
        left = self._orphans.get(epoch)
        if left is None:
            return
        taken = min(left, count)
        self._total_orphans -= taken
        if left - taken > 0:
            self._orphans[epoch] = left - taken
        else:
            del self._orphans[epoch]

    # -- commits ---------------------------------------------------------------------

    def watermark(self, tp: TopicPartition) -> int | None:
        """The offset Kafka should hold for ``tp`` now, or None when nothing was tracked."""
        state = self._parts.get(tp)
        if state is None or state.last_tracked is None:
            return None
        if state.queue:
            return state.queue[0]
        return state.last_tracked + 1

    def committable(self, tp: TopicPartition) -> int | None:
        """The Kafka commit offset for ``tp`` if it moved since the last commit, else None.

        This is the next offset to consume: the lowest unfinished offset, or the last
        tracked offset + 1 when everything tracked is finished.
        """
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
        return 0 if state is None else len(state.unfinished)

    @property
    def total_outstanding(self) -> int:
        """Unfinished messages over all owned partitions."""
        return self._total_unfinished

    @property
    def held(self) -> int:
        """What memory holds: every owned partition's span plus orphaned events."""
        return self._total_span + self._total_orphans

    def span(self, tp: TopicPartition) -> int:
        """Offsets remembered for ``tp``: from its watermark to the last one tracked."""
        state = self._parts.get(tp)
        return 0 if state is None else len(state.queue)
