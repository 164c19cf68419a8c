"""Back-pressure is a pure decision on (held, paused): no copy of either can go stale."""

from __future__ import annotations

import pytest

from consumer.delivery.backpressure import Backpressure


def test_hysteresis_between_the_marks() -> None:
    bp = Backpressure(high_water=100, low_water=50)
    assert not bp.should_pause(99, paused=False)
    assert bp.should_pause(100, paused=False)
    assert bp.should_pause(70, paused=True)  # between the marks: stay paused
    assert not bp.should_pause(50, paused=True)  # at the low mark: resume
    assert not bp.should_pause(70, paused=False)  # between the marks: stay running


def test_a_rebalance_that_empties_the_buffer_cannot_switch_pausing_off() -> None:
    # v1 kept its own "paused" flag: after a revoke dropped the held events it stayed
    # "paused" and never paused again. Here the decision reads the source's state.
    bp = Backpressure(high_water=10, low_water=5)
    assert bp.should_pause(10, paused=False)
    assert not bp.should_pause(0, paused=True)  # revoke emptied it: resume
    assert bp.should_pause(10, paused=False)  # and the next fill pauses again


def test_room_never_negative() -> None:
    bp = Backpressure(10, 0)
    assert bp.room(3) == 7
    assert bp.room(12) == 0
    with pytest.raises(ValueError, match="low_water"):
        Backpressure(10, 10)


def test_from_ratio() -> None:
    bp = Backpressure.from_ratio(50_000, 0.5)
    assert (bp.high_water, bp.low_water) == (50_000, 25_000)
    assert Backpressure.from_ratio(10, 1.0).low_water == 9


def test_a_full_buffer_pauses_only_after_the_grace() -> None:
    bp = Backpressure(high_water=100, low_water=50, grace_s=2.0)
    assert not bp.should_pause(100, paused=False, full_for_s=0.0)
    assert not bp.should_pause(100, paused=False, full_for_s=1.99)
    assert bp.should_pause(100, paused=False, full_for_s=2.0)
    assert bp.should_pause(100, paused=False)  # no timing known: pause (the safe side)
    assert not bp.should_pause(99, paused=False, full_for_s=9.0)  # not full: never
    assert bp.should_pause(70, paused=True, full_for_s=None)  # paused: hysteresis as before
    with pytest.raises(ValueError, match="grace_s"):
        Backpressure(10, 5, grace_s=-1.0)


def test_a_fetch_waits_until_it_can_take_a_refill() -> None:
    bp = Backpressure(high_water=100, low_water=50, grace_s=2.0, refill=30)
    assert not bp.full(70)  # room for 30: fetch
    assert bp.full(71)  # room for 29 only: wait for more room
    assert not bp.should_pause(80, paused=False, full_for_s=1.0)  # waiting, within the grace
    assert bp.should_pause(80, paused=False, full_for_s=2.0)  # no fetch for the grace: pause
    assert Backpressure.from_ratio(100, 0.5, refill=2000).refill == 50  # clamped to the gap
    with pytest.raises(ValueError, match="refill"):
        Backpressure(100, 50, refill=51)
