from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery.watermark import OffsetTracker

TP = ("purchases", 0)


def test_watermark_is_the_oldest_unfinished_chunks_first_offset() -> None:
    t = OffsetTracker()
    t.assign(TP)
    a = t.add(TP, 10, 12, 3)
    b = t.add(TP, 15, 15, 1)
    assert t.committable(TP) == 10
    t.finish(b)
    assert t.committable(TP) == 10  # b is done, a is not: never past a's first offset
    t.finish(a, 2)
    assert t.committable(TP) == 10  # partly done: still a's first offset
    t.finish(a)
    assert t.committable(TP) == 16  # both done: one past the last offset taken
    assert t.outstanding(TP) == 0


def test_committable_is_none_until_something_new() -> None:
    t = OffsetTracker()
    t.assign(TP)
    assert t.committable(TP) is None
    c = t.add(TP, 0, 0, 1)
    t.finish(c)
    assert t.committable(TP) == 1
    t.mark_committed(TP, 1)
    assert t.committable(TP) is None
    c = t.add(TP, 1, 1, 1)
    assert t.committable(TP) is None  # watermark still 1: nothing new
    t.finish(c)
    assert t.committable(TP) == 2
    assert t.committable_all() == {TP: 2}


def test_a_revoked_partitions_chunks_never_commit_after_reassignment() -> None:
    t = OffsetTracker()
    t.assign(TP)
    old = t.add(TP, 5, 5, 1)
    t.revoke(TP)
    assert not old.current
    t.finish(old)
    assert t.committable(TP) is None
    t.assign(TP)
    new = t.add(TP, 5, 5, 1)
    t.finish(old)  # late, stale: changes nothing
    assert t.outstanding(TP) == 1
    assert t.committable(TP) == 5
    t.finish(new)
    assert t.committable(TP) == 6


def test_finishing_more_than_a_chunk_holds_is_clamped() -> None:
    t = OffsetTracker()
    t.assign(TP)
    c = t.add(TP, 1, 2, 2)
    t.finish(c, 5)
    t.finish(c)
    assert t.total_outstanding == 0
    assert t.held == 0
    assert c.finished == 2


def test_reassign_while_owned_keeps_state() -> None:
    t = OffsetTracker()
    t.assign(TP)
    c = t.add(TP, 3, 3, 1)
    t.assign(TP)
    assert t.outstanding(TP) == 1
    assert c.current


def test_offsets_must_increase_and_unowned_partitions_are_refused() -> None:
    t = OffsetTracker()
    t.assign(TP)
    t.add(TP, 4, 6, 2)  # a gap inside a chunk is fine (compaction)
    assert t.taken_up_to(TP) == 6
    with pytest.raises(ValueError):
        t.add(TP, 6, 7, 1)
    with pytest.raises(ValueError):
        t.add(TP, 10, 11, 3)  # two offsets cannot hold three messages
    with pytest.raises(KeyError):
        t.add(("other", 1), 0, 0, 1)
    assert t.open_chunk(("other", 1)) is None
    assert t.taken_up_to(("other", 1)) is None


def test_an_open_chunk_counts_only_once_sealed_and_an_empty_one_never() -> None:
    t = OffsetTracker()
    t.assign(TP)
    assert t.taken_up_to(TP) == -1
    empty = t.open_chunk(TP)
    assert empty is not None
    t.seal(empty, 0, 0, 0)
    assert t.held == 0
    assert t.watermark(TP) is None
    c = t.open_chunk(TP)
    assert c is not None
    assert t.held == 0
    t.seal(c, 0, 9, 10)
    assert t.held == 10 == t.total_outstanding
    with pytest.raises(ValueError):
        t.seal(c, 10, 11, 2)  # sealed once only


def test_total_outstanding_across_partitions_and_revoke() -> None:
    t = OffsetTracker()
    a, b = ("t", 0), ("t", 1)
    t.assign(a)
    t.assign(b)
    ca = t.add(a, 0, 1, 2)
    t.add(b, 0, 0, 1)
    assert t.total_outstanding == 3
    t.finish(ca)
    t.revoke(b)
    assert t.total_outstanding == 1
    assert t.assigned() == [a]


def test_finish_all_counts_a_batchs_chunk_list() -> None:
    t = OffsetTracker()
    t.assign(TP)
    a = t.add(TP, 0, 2, 3)
    b = t.add(TP, 3, 4, 2)
    t.finish_all([a, b, a, b, a])
    assert t.total_outstanding == 0
    assert t.watermark(TP) == 5
    assert not t.all_revoked([a, b])


@given(
    st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60).flatmap(
        lambda sizes: st.tuples(
            st.just(sizes), st.permutations([i for i, n in enumerate(sizes) for _ in range(n)])
        )
    )
)
def test_watermark_never_passes_unfinished_and_reaches_end(
    case: tuple[list[int], list[int]],
) -> None:
    """Chunks of random sizes, their events finished in a random order."""
    sizes, order = case
    t = OffsetTracker()
    t.assign(TP)
    chunks = []
    unfinished: dict[int, list[int]] = {}
    off = 100
    for i, n in enumerate(sizes):
        offsets = list(range(off, off + 2 * n, 2))  # gaps between offsets
        chunks.append(t.add(TP, offsets[0], offsets[-1], n))
        unfinished[i] = offsets
        off += 2 * n + 3
    last_mark = None
    for i in order:
        t.finish(chunks[i])
        unfinished[i].pop()
        mark = t.committable(TP)
        if mark is not None:
            assert all(u >= mark for left in unfinished.values() for u in left)
            assert last_mark is None or mark >= last_mark
            t.mark_committed(TP, mark)
            last_mark = mark
        assert t.outstanding(TP) == sum(len(v) for v in unfinished.values())
        assert t.held >= t.outstanding(TP)
    assert t.watermark(TP) == chunks[-1].last + 1
    assert last_mark == chunks[-1].last + 1
    assert t.held == 0
