from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery.watermark import OffsetTracker

TP = ("purchases", 0)


def test_watermark_moves_only_over_contiguous_done_offsets() -> None:
    t = OffsetTracker()
    epoch = t.assign(TP)
    for off in (10, 11, 12, 15):
        t.track(TP, off)
    assert t.committable(TP) == 10
    assert t.done(TP, 11, epoch)
    assert t.committable(TP) == 10
    assert t.done(TP, 10, epoch)
    assert t.committable(TP) == 12
    assert t.done(TP, 15, epoch)
    assert t.committable(TP) == 12
    assert t.done(TP, 12, epoch)
    assert t.committable(TP) == 16
    assert t.outstanding(TP) == 0


def test_committable_is_none_until_something_new() -> None:
    t = OffsetTracker()
    epoch = t.assign(TP)
    assert t.committable(TP) is None
    t.track(TP, 0)
    t.done(TP, 0, epoch)
    assert t.committable(TP) == 1
    t.mark_committed(TP, 1)
    assert t.committable(TP) is None
    t.track(TP, 1)
    assert t.committable(TP) is None  # watermark still 1: nothing new
    t.done(TP, 1, epoch)
    assert t.committable(TP) == 2
    assert t.committable_all() == {TP: 2}


def test_stale_epoch_and_revoked_partition_never_commit() -> None:
    t = OffsetTracker()
    old = t.assign(TP)
    t.track(TP, 5)
    t.revoke(TP)
    assert not t.done(TP, 5, old)
    assert t.committable(TP) is None
    new = t.assign(TP)
    assert new != old
    t.track(TP, 5)
    assert not t.done(TP, 5, old)
    assert t.outstanding(TP) == 1
    assert t.committable(TP) == 5
    assert t.done(TP, 5, new)
    assert t.committable(TP) == 6


def test_double_done_and_unknown_offset_are_ignored() -> None:
    t = OffsetTracker()
    epoch = t.assign(TP)
    t.track(TP, 1)
    t.track(TP, 2)
    assert t.done(TP, 1, epoch)
    assert not t.done(TP, 1, epoch)
    assert not t.done(TP, 99, epoch)
    assert t.total_outstanding == 1


def test_reassign_while_owned_keeps_state() -> None:
    t = OffsetTracker()
    epoch = t.assign(TP)
    t.track(TP, 3)
    assert t.assign(TP) == epoch
    assert t.outstanding(TP) == 1


def test_track_rejects_non_increasing_and_unowned() -> None:
    t = OffsetTracker()
    t.assign(TP)
    t.track(TP, 4)
    with pytest.raises(ValueError):
        t.track(TP, 4)
    with pytest.raises(KeyError):
        t.track(("other", 1), 0)


def test_total_outstanding_across_partitions_and_revoke() -> None:
    t = OffsetTracker()
    a, b = ("t", 0), ("t", 1)
    ea = t.assign(a)
    t.assign(b)
    t.track(a, 0)
    t.track(a, 1)
    t.track(b, 0)
    assert t.total_outstanding == 3
    t.done(a, 0, ea)
    t.revoke(b)
    assert t.total_outstanding == 1
    assert t.assigned() == [a]


@given(
    st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60).flatmap(
        lambda gaps: st.tuples(st.just(gaps), st.permutations(range(len(gaps))))
    )
)
def test_watermark_never_passes_unfinished_and_reaches_end(
    case: tuple[list[int], list[int]],
) -> None:
    gaps, order = case
    offsets: list[int] = []
    off = 100
    for gap in gaps:
        off += gap
        offsets.append(off)
    t = OffsetTracker()
    epoch = t.assign(TP)
    for o in offsets:
        t.track(TP, o)
    unfinished = set(offsets)
    last_mark = None
    for i in order:
        assert t.done(TP, offsets[i], epoch)
        unfinished.discard(offsets[i])
        mark = t.committable(TP)
        if mark is not None:
            assert all(u >= mark for u in unfinished)
            assert last_mark is None or mark >= last_mark
            t.mark_committed(TP, mark)
            last_mark = mark
        assert t.outstanding(TP) == len(unfinished)
    assert t.watermark(TP) == offsets[-1] + 1
    assert last_mark == offsets[-1] + 1
