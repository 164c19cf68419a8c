from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery.batcher import Batch, Batcher, body_len
from consumer.delivery.watermark import Chunk, OffsetTracker
from tests.fakes import FakeClock

KEY = ("acct", "pix")
EMPTY = len(b'{"conversions":[]}')
_TRACKER = OffsetTracker()
_TRACKER.assign(("t", 0))


def chunk() -> Chunk:
    made = _TRACKER.open_chunk(("t", 0))
    assert made is not None
    return made


def add(b: Batcher, key: tuple[str, str], tag: int, payload: bytes = b'{"a":1}') -> Batch | None:
    """One event (``tag`` stands in for its Kafka message); at most one batch comes back."""
    full = b.extend(key, [payload], [tag], [chunk()])
    assert len(full) <= 1
    return full[0] if full else None


def test_full_by_count_and_never_over_500(clock: FakeClock) -> None:
    b = Batcher(max_events=3, clock=clock)
    assert add(b, KEY, 0) is None
    assert add(b, KEY, 1) is None
    full = add(b, KEY, 2)
    assert full is not None
    assert full.sources == [0, 1, 2]
    assert b.pending_events == 0
    with pytest.raises(ValueError):
        Batcher(max_events=501, clock=clock)


def test_body_joins_payloads_into_valid_json(clock: FakeClock) -> None:
    b = Batcher(max_events=2, clock=clock)
    add(b, KEY, 0, b'{"x":1}')
    full = add(b, KEY, 1, b'{"x":2}')
    assert full is not None
    body = full.body()
    assert orjson.loads(body) == {"conversions": [{"x": 1}, {"x": 2}]}
    assert full.body_len == len(body)


def test_byte_limit_closes_before_overflow(clock: FakeClock) -> None:
    payload = b'{"p":"' + b"x" * 40 + b'"}'
    # room for exactly two payloads and one comma
    b = Batcher(max_events=500, max_bytes=EMPTY + 2 * len(payload) + 1, clock=clock)
    assert add(b, KEY, 0, payload) is None
    assert add(b, KEY, 1, payload) is None
    full = add(b, KEY, 2, payload)
    assert full is not None
    assert full.sources == [0, 1]
    assert len(full.body()) <= b.max_bytes
    assert b.pending_events == 1
    rest = b.drain()
    assert rest[0].sources == [2]


def test_oversized_single_item_is_handed_out_alone(clock: FakeClock) -> None:
    b = Batcher(max_bytes=50, clock=clock)
    full = add(b, KEY, 0, b'{"p":"' + b"x" * 100 + b'"}')
    assert full is not None
    assert len(full) == 1


def test_a_run_is_sliced_into_full_batches_and_a_rest(clock: FakeClock) -> None:
    b = Batcher(max_events=4, clock=clock)
    assert add(b, KEY, -1) is None  # one already open
    n = 10
    chunks = [chunk() for _ in range(n)]
    full = b.extend(KEY, [b'{"a":1}'] * n, list(range(n)), chunks)
    assert [batch.sources for batch in full] == [[-1, 0, 1, 2], [3, 4, 5, 6]]
    assert full[0].chunks[1:] == chunks[:3]
    assert all(batch.body_len == len(batch.body()) for batch in full)
    assert b.pending_events == 3
    assert b.drain()[0].sources == [7, 8, 9]


def test_linger_deadline_and_due(clock: FakeClock) -> None:
    b = Batcher(linger_s=0.05, clock=clock)
    assert b.next_deadline() is None
    add(b, KEY, 0)
    first_deadline = clock.now + 0.05
    clock.advance(0.02)
    add(b, ("acct", "other"), 1)
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
    add(b, ("a", "p1"), 0)
    add(b, ("a", "p2"), 1)
    add(b, ("a", "p1"), 2)
    batches = {x.key: x for x in b.drain()}
    assert batches[("a", "p1")].sources == [0, 2]
    assert batches[("a", "p2")].sources == [1]
    assert b.pending_events == 0


def test_subset_gets_fresh_id_and_items(clock: FakeClock) -> None:
    chunks = [chunk() for _ in range(4)]
    batch = Batch(
        id="x",
        key=KEY,
        payloads=[b'{"i":%d}' % i for i in range(4)],
        sources=list(range(4)),
        chunks=chunks,
        created_at=clock.now,
    )
    sub = batch.subset([1, 3])
    assert sub.id != batch.id
    assert sub.sources == [1, 3]
    assert sub.chunks == [chunks[1], chunks[3]]
    assert sub.body_len == len(sub.body())
    assert sub.attempts == 0


def test_batch_ids_are_unique(clock: FakeClock) -> None:
    b = Batcher(max_events=1, clock=clock)
    ids = set()
    for i in range(200):
        full = add(b, KEY, i)
        assert full is not None
        ids.add(full.id)
    assert len(ids) == 200


@given(
    runs=st.lists(st.lists(st.integers(1, 120), max_size=30), min_size=1, max_size=8),
    max_events=st.integers(1, 7),
    room=st.integers(0, 300),
)
def test_runs_keep_order_and_limits_and_lose_nothing(
    runs: list[list[int]], max_events: int, room: int
) -> None:
    """Any sequence of runs: every event once, in order, no batch over either limit."""
    clock = FakeClock()
    b = Batcher(max_events=max_events, max_bytes=EMPTY + 121 + room, clock=clock)
    out: list[Batch] = []
    tag = 0
    for sizes in runs:
        payloads = [b"x" * n for n in sizes]
        tags = list(range(tag, tag + len(sizes)))
        tag += len(sizes)
        out += b.extend(KEY, payloads, tags, [chunk() for _ in sizes])
        assert b.pending_events == tag - sum(len(batch) for batch in out)
    out += b.drain()
    assert [t for batch in out for t in batch.sources] == list(range(tag))
    for batch in out:
        assert 1 <= len(batch) <= max_events
        assert batch.body_len == body_len(batch.payloads) == len(batch.body())
        assert len(batch) == 1 or batch.body_len <= b.max_bytes
        assert len(batch.payloads) == len(batch.sources) == len(batch.chunks)
