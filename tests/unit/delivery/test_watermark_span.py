"""Memory is bounded by what the watermark holds (spans), not by unfinished events."""

from __future__ import annotations

from consumer.delivery.watermark import OffsetTracker

TP = ("t", 0)


def test_one_stuck_head_counts_the_whole_span() -> None:
    t = OffsetTracker()
    t.assign(TP)
    head = t.add(TP, 0, 0, 1)
    rest = [t.add(TP, off, off + 98, 99) for off in range(1, 1000, 99)]
    t.finish_all(c for c in rest for _ in range(c.size))
    # v1 counted 1 event held (the unfinished head) while remembering 1000 offsets.
    assert t.total_outstanding == 1
    assert t.held == 1 + sum(c.size for c in rest) == t.span(TP)
    t.finish(head)
    assert t.held == 0
    assert t.watermark(TP) == rest[-1].last + 1


def test_revoked_partitions_events_still_out_count_until_they_finish_or_are_abandoned() -> None:
    t = OffsetTracker()
    t.assign(TP)
    c = t.add(TP, 0, 9, 10)
    t.finish(c)
    t.revoke(TP)
    assert t.held == 9  # nine events still out in batches
    assert t.all_revoked([c, c])
    t.finish(c)  # a stale batch finishing: never commits...
    assert t.held == 8  # ...but frees its memory
    t.finish(c, 100)  # more than are left (an abandoned batch): clamps
    assert t.held == 0
    t.assign(TP)
    fresh = t.add(TP, 10, 10, 1)
    assert fresh.current
    assert not c.current


def test_commits_never_go_backwards_and_a_refused_one_is_offered_again() -> None:
    t = OffsetTracker()
    t.assign(TP)
    chunks = [t.add(TP, off, off, 1) for off in range(5)]
    for c in chunks[:3]:
        t.finish(c)
    assert t.committable(TP) == 3
    t.mark_committed(TP, 3)
    assert t.committable(TP) is None  # asked once, not twice
    t.finish(chunks[3])
    assert t.committable(TP) == 4
    t.mark_committed(TP, 4)
    assert t.commit_result(TP, 3, ok=True) == 3
    # The broker refused the second commit: it is offered again, never a lower one.
    assert t.commit_result(TP, 4, ok=False) == 3
    assert t.committable(TP) == 4
    assert t.confirmed(TP) == 3
    assert t.commit_result(("other", 1), 1, ok=True) is None
