from __future__ import annotations

import heapq
import itertools
import math

import pytest

from consumer.delivery.ratebudget import RateBudget
from tests.fakes import FakeClock


def send_times(budget: RateBudget, clock: FakeClock, n: int, events: int = 1) -> list[float]:
    """Reserve n slots back to back (as many workers would); absolute send times."""
    return [clock.now + budget.reserve(events) for _ in range(n)]


def headers_seen(budget: RateBudget, clock: FakeClock) -> RateBudget:
    """The server's first answer: the whole window left (bursts need its headers)."""
    wall = 50_000.0
    limit = budget.requests_per_window
    budget.observe(limit, limit, wall + budget.window_s, wall, sent_at=clock.now)
    return budget


def test_pacing_spreads_evenly_after_the_burst(clock: FakeClock) -> None:
    budget = headers_seen(RateBudget(100, 10.0, clock=clock, burst=5), clock)  # 0.1 s each
    times = send_times(budget, clock, 50)
    start = clock.now
    assert all(t == pytest.approx(start) for t in times[:5])
    assert times[5] == pytest.approx(start + 0.1)
    gaps = [b - a for a, b in itertools.pairwise(times[5:])]
    assert all(g == pytest.approx(0.1) for g in gaps)
    # Sustained rate is nominal: 50 requests within (50 - 5 + 1) * 0.1 s.
    assert times[-1] - start == pytest.approx(4.5)


def test_burst_is_bounded_after_idle(clock: FakeClock) -> None:
    budget = headers_seen(RateBudget(100, 10.0, clock=clock, burst=5), clock)
    clock.advance(1000.0)  # a long idle period does not bank credit beyond the burst
    times = send_times(budget, clock, 10)
    immediate = [t for t in times if t < clock.now + 1e-6]
    assert len(immediate) == 5


def test_no_burst_before_the_servers_first_headers(clock: FakeClock) -> None:
    # A process that just joined a group cannot know what the others left of the
    # window: with the burst, two newcomers sent 10 requests each at once, and the
    # window's last few were refused (429). Until the first headers: the nominal pace.
    budget = RateBudget(100, 10.0, clock=clock, burst=5)
    times = send_times(budget, clock, 5)
    assert [t - clock.now for t in times] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    headers_seen(budget, clock)
    clock.advance(10.0)  # idle: the burst is back, within a window the server told of
    times = send_times(budget, clock, 6)
    assert sum(1 for t in times if t < clock.now + 1e-6) == 5


def test_full_window_budget_is_usable(clock: FakeClock) -> None:
    budget = RateBudget(900, 900.0, clock=clock, burst=1)
    start = clock.now
    times = send_times(budget, clock, 900)
    assert times[-1] - start == pytest.approx(899.0)
    assert sum(1 for t in times if t < start + 900.0) == 900


def test_events_budget_paces_by_event_count(clock: FakeClock) -> None:
    # 60,000 events / 900 s = one event per 15 ms; 500-event requests every 7.5 s.
    budget = RateBudget(100_000, 900.0, 60_000, clock=clock, burst=10, event_burst=500)
    times = send_times(headers_seen(budget, clock), clock, 6, events=500)
    start = clock.now
    assert times[0] == start
    assert times[1] == start  # one full request of event burst
    assert times[2] == pytest.approx(start + 7.5)
    assert times[5] == pytest.approx(start + 30.0)


def test_headers_slow_down_when_server_has_less_left(clock: FakeClock) -> None:
    budget = RateBudget(1000, 100.0, clock=clock, burst=1)  # nominal 0.1 s
    wall = 5_000.0
    # Another replica used most of the window: 20 left for the 50 s until reset.
    budget.observe(1000, 20, wall + 50.0, wall)
    assert budget.current_interval() == pytest.approx(2.5)
    times = send_times(budget, clock, 21)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(2.5) for g in gaps[:19])
    assert sum(1 for t in times if t < clock.now + 50.0) == 20
    # After the reset, nominal pacing again.
    clock.advance(60.0)
    assert budget.current_interval() == pytest.approx(0.1)


def test_headers_never_speed_up_beyond_nominal(clock: FakeClock) -> None:
    budget = RateBudget(100, 100.0, clock=clock, burst=1)  # nominal 1 s
    budget.observe(100_000, 99_999, 10_060.0, 10_000.0)
    assert budget.current_interval() == pytest.approx(1.0)
    times = send_times(budget, clock, 3)
    assert times[2] - times[0] == pytest.approx(2.0)


def test_unseen_reservations_are_subtracted(clock: FakeClock) -> None:
    budget = RateBudget(1000, 100.0, clock=clock, burst=1)
    sent_at = clock.now
    send_times(budget, clock, 5)  # 5 requests reserved after (and at) sent_at
    clock.advance(0.01)
    # The answer to the first one: 10 left. 4 of ours (after sent_at) are unseen.
    budget.observe(1000, 10, 20_000.0 + 60.0, 20_000.0, sent_at=sent_at)
    assert budget.remaining_estimate() == 6  # 10 minus the 4 unseen
    budget.reserve()
    assert budget.remaining_estimate() == 5
    assert budget.current_interval() > 60.0 / 7


def test_zero_remaining_waits_for_the_reset(clock: FakeClock) -> None:
    budget = RateBudget(1000, 100.0, clock=clock, burst=3)
    budget.observe(1000, 0, 100.0 + 30.0, 100.0)
    wait = budget.reserve()
    assert wait >= 30.0


def test_overrun_blocks_everything_until_reset(clock: FakeClock) -> None:
    budget = RateBudget(1000, 100.0, clock=clock, burst=3)
    send_times(budget, clock, 3)  # all at now, none seen by the server yet
    budget.observe(1000, 1, 100.0 + 30.0, 100.0, sent_at=clock.now - 1.0)
    assert budget.blocked_for() == pytest.approx(30.0)


def test_429_blocks_all_sends_until_the_given_time(clock: FakeClock) -> None:
    budget = RateBudget(1000, 100.0, clock=clock, burst=10)
    budget.block_until(clock.now + 40.0)
    assert budget.blocked_for() == pytest.approx(40.0)
    assert budget.reserve() == pytest.approx(40.0)
    budget.block_until(clock.now + 5.0)  # an earlier time never shortens a block
    assert budget.blocked_for() == pytest.approx(40.0)
    clock.advance(41.0)
    assert budget.blocked_for() == 0.0


def test_stale_headers_are_ignored(clock: FakeClock) -> None:
    budget = RateBudget(1000, 100.0, clock=clock, burst=1)
    budget.observe(1000, 0, 900.0, 1000.0)  # reset in the past
    assert budget.reserve() == 0.0
    assert budget.remaining_estimate() == 1000


def _simulate(
    *,
    limit: int,
    window_s: float,
    duration_s: float,
    workers: int,
    rtt_s: float,
    foreign_per_window: int = 0,
    burst: int = 10,
    configured: int | None = None,
) -> tuple[list[int], list[int], int]:
    """A fixed-window server shared with a foreign client; our workers reserve, send and
    observe headers. Returns (our accepted requests per full window, all accepted per
    full window, our 429 count)."""
    clock = FakeClock(0.0)
    wall_offset = 1_000_003.7  # server windows are not aligned with our start
    budget = RateBudget(configured or limit, window_s, clock=clock, burst=burst)
    used: dict[int, int] = {}
    ours: dict[int, int] = {}
    rejected = 0

    def window_of(t: float) -> int:
        return math.floor((t + wall_offset) / window_s)

    # Foreign traffic: evenly spread arrivals.
    queue: list[tuple[float, int, str]] = []
    if foreign_per_window:
        step = window_s / foreign_per_window
        t = 0.0
        while t < duration_s:
            heapq.heappush(queue, (t, -1, "foreign"))
            t += step
    for w in range(workers):
        heapq.heappush(queue, (0.0, w, "reserve"))
    sent_at: dict[int, float] = {}
    budget_headers: dict[int, tuple[int, float]] = {}
    while queue:
        t, worker, what = heapq.heappop(queue)
        if t >= duration_s:
            break
        clock.now = t
        win = window_of(t)
        if what == "foreign":
            if used.get(win, 0) < limit:
                used[win] = used.get(win, 0) + 1
        elif what == "reserve":
            wait = budget.reserve(1) + budget.blocked_for()
            heapq.heappush(queue, (t + wait, worker, "send"))
        elif what == "send":
            if budget.blocked_for() > 0:
                heapq.heappush(queue, (t + budget.blocked_for(), worker, "send"))
                continue
            sent_at[worker] = t
            arrive = t + rtt_s / 2
            awin = window_of(arrive)
            if used.get(awin, 0) >= limit:
                rejected += 1
                ok = False
            else:
                used[awin] = used.get(awin, 0) + 1
                ours[awin] = ours.get(awin, 0) + 1
                ok = True
            remaining = max(0, limit - used.get(awin, 0))
            reset_wall = (awin + 1) * window_s
            heapq.heappush(queue, (t + rtt_s, worker, "ok" if ok else "429"))
            # Headers as of the arrival, delivered with the answer.
            budget_headers[worker] = (remaining, reset_wall)
        else:
            remaining, reset_wall = budget_headers[worker]
            wall_now = t + wall_offset
            if what == "429":
                budget.block_until(t + max(0.0, reset_wall - wall_now))
            budget.observe(limit, remaining, reset_wall, wall_now, sent_at=sent_at[worker])
            heapq.heappush(queue, (t, worker, "reserve"))
    first = window_of(0.0) + 1
    last = window_of(duration_s) - 1
    windows = range(first, last + 1)
    return [ours.get(w, 0) for w in windows], [used.get(w, 0) for w in windows], rejected


def test_simulated_saturation_uses_the_budget_without_429() -> None:
    per_window, _, rejected = _simulate(
        limit=600, window_s=60.0, duration_s=400.0, workers=8, rtt_s=0.08
    )
    assert rejected == 0
    assert len(per_window) >= 4
    assert min(per_window) >= 0.95 * 600


def test_simulated_shared_account_adapts_to_foreign_use() -> None:
    per_window, total, rejected = _simulate(
        limit=600,
        window_s=60.0,
        duration_s=400.0,
        workers=8,
        rtt_s=0.08,
        foreign_per_window=300,
    )
    assert rejected <= len(per_window)
    assert min(total) >= 0.95 * 600
    assert min(per_window) >= 0.9 * 300


def test_simulated_server_limit_below_configuration_converges() -> None:
    # Configured for 10x what the server grants: only the first window may see 429s.
    per_window, _, rejected = _simulate(
        limit=600, window_s=60.0, duration_s=400.0, workers=8, rtt_s=0.08, configured=6000
    )
    assert rejected <= 20
    assert min(per_window[1:]) >= 0.95 * 600
