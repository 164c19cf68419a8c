from __future__ import annotations

import asyncio

import pytest

from consumer.delivery.concurrency import AdaptiveLimit, InFlightLimiter


async def test_limiter_caps_in_flight_and_wakes_fifo() -> None:
    lim = InFlightLimiter(2)
    await lim.acquire()
    await lim.acquire()
    assert not lim.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await lim.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert lim.waiting == 3
    lim.release()
    await asyncio.sleep(0)
    assert order == [0]
    lim.release()
    lim.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert lim.in_flight == 2


async def test_raising_the_limit_admits_waiters_and_lowering_drains() -> None:
    lim = InFlightLimiter(1)
    await lim.acquire()
    task = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    assert not task.done()
    lim.set_limit(2)
    await asyncio.wait_for(task, 1.0)
    assert lim.in_flight == 2
    lim.set_limit(1)
    lim.release()
    assert not lim.try_acquire()  # still 1 in flight, limit 1
    lim.release()
    assert lim.try_acquire()


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    lim = InFlightLimiter(1)
    await lim.acquire()
    task = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lim.release()
    assert lim.in_flight == 0
    async with lim:
        assert lim.in_flight == 1
    assert lim.in_flight == 0


async def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        InFlightLimiter(1).release()


def test_aimd_grows_by_one_per_steady_window() -> None:
    a = AdaptiveLimit(4, minimum=1, maximum=6)
    for _ in range(4):
        a.on_success(0.1)
    assert a.limit == 5
    for _ in range(5):
        a.on_success(0.1)
    assert a.limit == 6
    for _ in range(20):
        a.on_success(0.1)
    assert a.limit == 6  # max


def test_aimd_does_not_grow_when_latency_rises() -> None:
    a = AdaptiveLimit(4, maximum=10, latency_tolerance=2.0)
    a.on_success(0.1)
    for _ in range(3):
        a.on_success(0.5)
    assert a.limit == 4


def test_aimd_halves_once_per_episode_within_bounds() -> None:
    a = AdaptiveLimit(16, minimum=2, maximum=32)
    assert a.on_overload() == 8
    # The other 15 requests in flight at the decrease fail too: no further halving.
    for _ in range(15):
        assert a.on_failure() == 8
    assert a.on_overload() == 4
    for _ in range(7):  # the 8 - 1 others in flight at that decrease
        assert a.on_overload() == 4
    assert a.on_overload() == 2
    for _ in range(10):
        a.on_overload()
    assert a.limit == 2
