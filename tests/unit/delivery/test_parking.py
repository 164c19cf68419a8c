"""The pure parts of parking: record headers, their untrusted reading, the stuck
policy's decision and the buffer share (no I/O, no clock but the one passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery.parking import (
    H_ACCOUNT,
    H_ATTEMPTS,
    H_FIRST_FAILURE,
    H_PARKS,
    H_REASON,
    H_TIME,
    Policy,
    decode_park,
    iso_ms,
    judge_failure,
    next_note,
    park_letter,
    parking_headers,
    read_note,
    share,
)
from tests.fakes_kafka import FakeMessage

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW_DT = datetime.fromtimestamp(NOW, UTC)


def parked_copy(msg: FakeMessage, headers: list[tuple[str, bytes]]) -> FakeMessage:
    """``msg`` as it reads back from the parking topic."""
    return FakeMessage("purchases.parking", 3, 77, msg.value(), list(headers))


def test_first_park_records_origin_history_and_keeps_the_producers_headers() -> None:
    source = FakeMessage("purchases", 2, 41, b"{}", [("trace", b"t-1"), ("xconv.reason", b"x")])
    note = next_note(
        source, account="acct", attempts=3, failing_since=NOW - 60, reason="http_500", now=NOW
    )
    assert (note.parks, note.attempts, note.first_failure) == (1, 3, NOW - 60)
    headers = dict(parking_headers(source, park_letter(note), NOW_DT))
    assert headers["trace"] == b"t-1"
    assert "xconv.reason" not in headers  # an old xconv header is not carried over
    assert headers["xconv.source.topic"] == b"purchases"
    assert (headers["xconv.source.partition"], headers["xconv.source.offset"]) == (b"2", b"41")
    assert headers[H_ACCOUNT] == b"acct"
    assert headers[H_REASON] == b"http_500"
    assert headers[H_PARKS] == b"1"
    assert headers[H_FIRST_FAILURE] == iso_ms(NOW - 60).encode()
    assert headers[H_TIME] == b"2026-01-01T00:00:00.000Z"


def test_parking_again_adds_up_and_keeps_the_first_failure_and_origin() -> None:
    source = FakeMessage("purchases", 2, 41, b"{}")
    first = next_note(
        source, account="a", attempts=2, failing_since=NOW - 100, reason="r1", now=NOW
    )
    parked = parked_copy(source, parking_headers(source, park_letter(first), NOW_DT))
    second = next_note(parked, account="a", attempts=1, failing_since=NOW - 5, reason="r2", now=NOW)
    assert (second.parks, second.attempts, second.reason) == (2, 3, "r2")
    assert second.first_failure == pytest.approx(NOW - 100, abs=0.001)
    headers = dict(parking_headers(parked, park_letter(second), NOW_DT))
    assert headers["xconv.source.topic"] == b"purchases"  # not the parking topic
    assert headers["xconv.source.offset"] == b"41"


def test_a_record_that_was_never_parked_has_no_note() -> None:
    assert read_note(FakeMessage("purchases", 0, 1, b"{}", [("a", b"b")]), NOW) is None
    assert read_note(FakeMessage("purchases", 0, 1, b"{}"), NOW) is None


@given(
    attempts=st.binary(max_size=30),
    parks=st.binary(max_size=30),
    first=st.binary(max_size=40),
)
def test_odd_header_values_are_clamped_never_trusted(
    attempts: bytes, parks: bytes, first: bytes
) -> None:
    msg = FakeMessage(
        "purchases.parking",
        0,
        0,
        b"{}",
        [(H_ACCOUNT, b"a"), (H_ATTEMPTS, attempts), (H_PARKS, parks), (H_FIRST_FAILURE, first)],
    )
    note = read_note(msg, NOW)
    assert note is not None
    assert 0 <= note.attempts <= 10**9
    assert 0 <= note.parks <= 10**9
    assert note.first_failure <= NOW  # a future or garbled time is taken as now


def test_a_first_failure_in_the_future_counts_as_now() -> None:
    msg = FakeMessage(
        "p", 0, 0, b"", [(H_ACCOUNT, b"a"), (H_FIRST_FAILURE, b"2999-01-01T00:00:00.000Z")]
    )
    note = read_note(msg, NOW)
    assert note is not None
    assert note.first_failure == NOW


def test_decode_park_is_the_show_view() -> None:
    source = FakeMessage("purchases", 2, 41, b'{"email":"a@b.c"}')
    note = next_note(source, account="acct", attempts=4, failing_since=NOW, reason="401 X", now=NOW)
    view = decode_park(parking_headers(source, park_letter(note), NOW_DT))
    assert view["account"] == "acct"
    assert view["reason"] == "401 X"
    assert (view["attempts"], view["parks"]) == (4, 1)
    assert view["source"] == {"topic": "purchases", "partition": 2, "offset": 41}
    assert "a@b.c" not in repr(view)


@pytest.mark.parametrize(
    ("max_buffered", "holding", "expected"),
    [(20_000, 0, 20_000), (20_000, 1, 20_000), (20_000, 2, 10_000), (500, 3, 166), (2, 5, 1)],
)
def test_share_is_an_equal_part_among_the_accounts_holding_events(
    max_buffered: int, holding: int, expected: int
) -> None:
    assert share(max_buffered, holding) == expected


def test_judge_failure() -> None:
    def judge(policy: Policy = Policy.PARK, **kw: object) -> bool:
        args: dict[str, object] = {
            "failing_for": 1.0,
            "park_after_s": 60.0,
            "crowding": False,
            "other_healthy": True,
        }
        args.update(kw)
        return judge_failure(policy, **args).set_aside  # type: ignore[arg-type]

    assert not judge()  # failing, but not for long, and not crowding anyone
    assert judge(failing_for=60.0)
    assert judge(crowding=True)
    assert judge(Policy.DEAD_LETTER, failing_for=61.0)
    assert not judge(Policy.HOLD, failing_for=1e9, crowding=True)
    assert not judge(failing_for=1e9, crowding=True, other_healthy=False)  # nobody to free
    assert not judge(failing_for=None, crowding=True)  # not failing (e.g. only 429s)
