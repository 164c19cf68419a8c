"""Memory is bounded by what the watermark holds (spans), not by unfinished events."""

from __future__ import annotations

from consumer.delivery.watermark import OffsetTracker

TP = ("t", 0)


def test_one_stuck_head_counts_the_whole_span() -> None:
    t = OffsetTracker()
    e = t.assign(TP)
    for off in range(1000):
        t.track(TP, off)
    for off in range(1, 1000):
        t.done(TP, off, e)
    # v1 counted 1 event held (the unfinished head) while remembering 1000 offsets.
    assert t.total_outstanding == 1
    assert t.held == 1000 == t.span(TP)
    t.done(TP, 0, e)
    assert t.held == 0
    assert t.watermark(TP) == 1000


def test_revoked_partitions_events_still_out_count_until_they_finish_or_are_abandoned() -> None:
    t = OffsetTracker()
    e = t.assign(TP)
    for off in range(10):
        t.track(TP, off)
    t.done(TP, 9, e)
    t.revoke(TP)
    assert t.held == 9  # nine events still out in batches
    assert not t.is_current(TP, e)
    assert t.done(TP, 0, e) is False  # stale epoch: never commits...
    assert t.held == 8  # ...but frees its memory
    t.abandon(e, 100)  # more than are left: clamps
    assert t.held == 0
    e2 = t.assign(TP)
    assert e2 != e
    assert t.is_current(TP, e2)


def test_commits_never_go_backwards_and_a_refused_one_is_offered_again() -> None:
    t = OffsetTracker()
    e = t.assign(TP)
    for off in range(5):
        t.track(TP, off)
    for off in range(3):
        t.done(TP, off, e)
    assert t.committable(TP) == 3
    t.mark_committed(TP, 3)
    assert t.committable(TP) is None  # asked once, not twice
    t.done(TP, 3, e)
    assert t.committable(TP) == 4
    t.mark_committed(TP, 4)
    assert t.commit_result(TP, 3, ok=True) == 3
    # The broker refused the second commit: it is offered again, never a lower one.
    assert t.commit_result(TP, 4, ok=False) == 3
    assert t.committable(TP) == 4
    assert t.confirmed(TP) == 3
    assert t.commit_result(("other", 1), 1, ok=True) is None
