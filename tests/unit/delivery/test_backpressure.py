from __future__ import annotations

import pytest

from consumer.delivery.backpressure import Backpressure


def test_hysteresis_pause_once_resume_once() -> None:
    bp = Backpressure(high_water=100, low_water=50)
    bp.add(99)
    assert not bp.should_pause()
    bp.add(1)
    assert bp.should_pause()
    assert bp.paused
    assert not bp.should_pause()  # fires once per transition
    bp.release(30)
    assert not bp.should_resume()  # 70 is between the marks
    bp.release(20)
    assert bp.should_resume()
    assert not bp.paused
    assert not bp.should_resume()
    assert bp.held == 50


def test_release_never_goes_negative_and_validation() -> None:
    bp = Backpressure(10, 0)
    bp.release(5)
    assert bp.held == 0
    with pytest.raises(ValueError):
        Backpressure(10, 10)


def test_from_ratio() -> None:
    bp = Backpressure.from_ratio(50_000, 0.5)
    assert (bp.high_water, bp.low_water) == (50_000, 25_000)
    assert Backpressure.from_ratio(10, 1.0).low_water == 9
