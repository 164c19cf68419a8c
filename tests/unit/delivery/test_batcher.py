from __future__ import annotations

import orjson
import pytest

from consumer.delivery.batcher import Batch, Batcher, BatchItem
from tests.fakes import FakeClock

KEY = ("acct", "pix")


def item(offset: int, payload: bytes = b'{"a":1}', partition: int = 0) -> BatchItem:
    return BatchItem(
        topic="t",
        partition=partition,
        offset=offset,
        epoch=1,
        payload=payload,
        conversion_id=f"c{offset}",
    )


def test_full_by_count_and_never_over_500(clock: FakeClock) -> None:
    b = Batcher(max_events=3, clock=clock)
    assert b.add(KEY, item(0)) is None
    assert b.add(KEY, item(1)) is None
    full = b.add(KEY, item(2))
    assert full is not None
    assert [i.offset for i in full.items] == [0, 1, 2]
    assert b.pending_events == 0
    with pytest.raises(ValueError):
        Batcher(max_events=501, clock=clock)


def test_body_joins_payloads_into_valid_json(clock: FakeClock) -> None:
    b = Batcher(max_events=2, clock=clock)
    b.add(KEY, item(0, b'{"x":1}'))
    full = b.add(KEY, item(1, b'{"x":2}'))
    assert full is not None
    body = full.body()
    assert orjson.loads(body) == {"conversions": [{"x": 1}, {"x": 2}]}
    assert full.body_len == len(body)


def test_byte_limit_closes_before_overflow(clock: FakeClock) -> None:
    payload = b'{"p":"' + b"x" * 40 + b'"}'
    empty = len(b'{"conversions":[]}')
    # room for exactly two payloads and one comma
    b = Batcher(max_events=500, max_bytes=empty + 2 * len(payload) + 1, clock=clock)
    assert b.add(KEY, item(0, payload)) is None
    assert b.add(KEY, item(1, payload)) is None
    full = b.add(KEY, item(2, payload))
    assert full is not None
    assert [i.offset for i in full.items] == [0, 1]
    assert len(full.body()) <= b.max_bytes
    assert b.pending_events == 1
    rest = b.drain()
    assert [i.offset for i in rest[0].items] == [2]


def test_oversized_single_item_is_handed_out_alone(clock: FakeClock) -> None:
    b = Batcher(max_bytes=50, clock=clock)
    full = b.add(KEY, item(0, b'{"p":"' + b"x" * 100 + b'"}'))
    assert full is not None
    assert len(full) == 1


def test_linger_deadline_and_due(clock: FakeClock) -> None:
    b = Batcher(linger_s=0.05, clock=clock)
    assert b.next_deadline() is None
    b.add(KEY, item(0))
    first_deadline = clock.now + 0.05
    clock.advance(0.02)
    b.add(("acct", "other"), item(1))
    assert b.next_deadline() == pytest.approx(first_deadline)
    assert b.due(clock.now) == []
    clock.advance(0.04)
    due = b.due(clock.now)
    assert [d.key for d in due] == [KEY]
    assert b.next_deadline() == pytest.approx(first_deadline + 0.02)
    clock.advance(0.05)
    assert [d.key for d in b.due(clock.now)] == [("acct", "other")]
    assert b.next_deadline() is None


def test_keys_are_separate_batches(clock: FakeClock) -> None:
    b = Batcher(clock=clock)
    b.add(("a", "p1"), item(0))
    b.add(("a", "p2"), item(1))
    b.add(("a", "p1"), item(2))
    batches = {x.key: x for x in b.drain()}
    assert [i.offset for i in batches[("a", "p1")].items] == [0, 2]
    assert [i.offset for i in batches[("a", "p2")].items] == [1]
    assert b.pending_events == 0


def test_subset_gets_fresh_id_and_items(clock: FakeClock) -> None:
    batch = Batch(id="x", key=KEY, items=[item(i) for i in range(4)], created_at=clock.now)
    sub = batch.subset([1, 3])
    assert sub.id != batch.id
    assert [i.offset for i in sub.items] == [1, 3]
    assert sub.body_len == len(sub.body())
    assert sub.attempts == 0


def test_batch_ids_are_unique(clock: FakeClock) -> None:
    b = Batcher(max_events=1, clock=clock)
    ids = {b.add(KEY, item(i)).id for i in range(200)}  # type: ignore[union-attr]
    assert len(ids) == 200
