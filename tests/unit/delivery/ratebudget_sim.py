"""A discrete-event simulation of replicas sharing one account's fixed-window budget.

Pure and deterministic (a fake clock, a seeded RNG): each replica is a ``RateBudget``
with ``workers`` tasks that always have a batch ready (demand exceeds the budget); a
task reserves a slot, waits, sends, and observes the answer's headers one round trip
later. The server counts requests per fixed window aligned on the wall clock (as X's
windows), refuses with 429 beyond ``limit``, and answers every request with
``remaining`` / ``reset`` as of its arrival. Replicas join and leave on a schedule
(a leaving replica's queued slots vanish; a joining one starts from scratch, like a new
process). Used by ``test_ratebudget_share.py``; the figures in docs/delivery-internals.md
(*Fair share between replicas*) come from it. ``opening_windows=True`` counts like the
sandbox instead: a window opens with the first request after the previous one ended and
its reset header is the end rounded up to a whole second.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass, field

from consumer.delivery.lane import RESERVE_LEAD_S
from consumer.delivery.ratebudget import RateBudget
from tests.fakes import FakeClock

Payload = tuple[float, int, float, bool]  # an answer: (sent_at, remaining, reset, accepted)

WALL_OFFSET = 1_000_017.0  # the simulation starts 17 s into a wall-clock window (60 s)


@dataclass(frozen=True)
class Lifetime:
    """One replica process: alive from ``start`` to ``stop`` (simulation seconds)."""

    start: float
    stop: float = math.inf


@dataclass
class SimResult:
    limit: int
    window_s: float
    lifetimes: list[Lifetime]
    duration_s: float
    accepted: list[float] = field(default_factory=list)  # arrival times, sorted
    per_window: dict[int, int] = field(default_factory=dict)  # wall window index -> accepted
    rejected: int = 0
    by_replica: dict[int, int] = field(default_factory=dict)  # replica -> accepted
    shares: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    opened: list[float] = field(default_factory=list)  # opening_windows: when each opened

    def window_of(self, t: float) -> int:
        return math.floor((t + WALL_OFFSET) / self.window_s)

    def window_start(self, w: int) -> float:
        return w * self.window_s - WALL_OFFSET

    def alive(self, t: float) -> int:
        return sum(1 for life in self.lifetimes if life.start <= t < life.stop)

    def full_windows(self, after: float = 0.0) -> list[int]:
        """Windows that lie wholly within (after, duration)."""
        first = self.window_of(after) + 1
        last = self.window_of(self.duration_s) - 1
        return list(range(first, last + 1))

    def use(self, windows: list[int]) -> list[float]:
        """Accepted requests per window as a fraction of the limit."""
        return [self.per_window.get(w, 0) / self.limit for w in windows]

    def nominal_slot_s(self, replicas: int) -> float:
        """One replica's nominal slot interval at a fair share: window / (limit / N)."""
        return self.window_s / (self.limit / max(1, replicas))

    def gaps(self, after: float = 0.0) -> list[tuple[float, float, float]]:
        """(start, length, bound) of each gap between accepted requests after ``after``;
        bound is 3 nominal slot intervals for the replicas alive at the gap's start."""
        times = [t for t in self.accepted if t >= after]
        return [
            (a, b - a, 3 * self.nominal_slot_s(self.alive(a))) for a, b in itertools.pairwise(times)
        ]

    def worst_gap(self, after: float = 0.0) -> tuple[float, float, float]:
        """The gap with the largest length / bound ratio: (start, length, bound)."""
        return max(self.gaps(after), key=lambda g: g[1] / g[2], default=(0.0, 0.0, 1.0))


def simulate(
    *,
    lifetimes: list[Lifetime],
    duration_s: float,
    limit: int = 600,
    window_s: float = 60.0,
    workers: int = 16,
    rtt_s: float = 0.02,
    rtt_jitter: float = 0.5,
    configured: int | None = None,
    lead_s: float | None = RESERVE_LEAD_S,
    opening_windows: bool = False,
    seed: int = 1,
) -> SimResult:
    clock = FakeClock(0.0)
    rng = random.Random(seed)
    result = SimResult(limit, window_s, lifetimes, duration_s)
    used: dict[int, int] = result.per_window
    budgets: dict[int, RateBudget] = {}
    # (time, sequence, replica, worker, what, payload)
    queue: list[tuple[float, int, int, int, str, Payload]] = []
    seq = 0
    window_end = -math.inf  # opening_windows: the open window's end (wall seconds)
    opened = 0

    def push(
        t: float, replica: int, worker: int, what: str, payload: Payload = (0.0, 0, 0.0, True)
    ) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (t, seq, replica, worker, what, payload))

    for r, life in enumerate(lifetimes):
        push(life.start, r, -1, "start")
    while queue:
        t, _, r, worker, what, payload = heapq.heappop(queue)
        if t >= duration_s:
            break
        life = lifetimes[r]
        if not life.start <= t < life.stop:
            continue  # that process is gone: its queued slots and answers vanish
        clock.now = t
        if what == "start":
            budgets[r] = RateBudget(configured or limit, window_s, clock=clock)
            result.shares[r] = []
            for w in range(workers):
                push(t, r, w, "reserve")
            continue
        budget = budgets[r]
        if what == "reserve":
            # As AccountLane.send: reserve only once the next slot is within the lead.
            ahead = 0.0 if lead_s is None else budget.next_slot_in()
            if lead_s is not None and ahead > lead_s:
                push(t + ahead - lead_s / 2, r, worker, "reserve")
            else:
                push(t + budget.reserve(1), r, worker, "send")
        elif what == "send":
            blocked = budget.blocked_for()
            if blocked > 0:
                push(t + blocked, r, worker, "send")
                continue
            rtt = rtt_s * (1 + rtt_jitter * (2 * rng.random() - 1))
            arrive = t + rtt / 2
            if opening_windows:
                # The sandbox's limiter: a window opens with the first request after the
                # previous one ended; its reset header is the end rounded up.
                if arrive + WALL_OFFSET >= window_end:
                    window_end = arrive + WALL_OFFSET + window_s
                    opened += 1
                    result.opened.append(arrive)
                win = opened
                reset_wall = float(math.ceil(window_end))
            else:
                win = result.window_of(arrive)
                reset_wall = (win + 1) * window_s
            ok = used.get(win, 0) < limit
            if ok:
                used[win] = used.get(win, 0) + 1
                result.accepted.append(arrive)
                result.by_replica[r] = result.by_replica.get(r, 0) + 1
            else:
                result.rejected += 1
            remaining = limit - used.get(win, 0)
            push(t + rtt, r, worker, "answer", (t, remaining, reset_wall, ok))
        else:  # answer
            sent_at, remaining, reset_wall, ok = payload
            wall_now = t + WALL_OFFSET
            if not ok:
                budget.block_until(t + max(0.0, reset_wall - wall_now))
            budget.observe(limit, remaining, reset_wall, wall_now, sent_at=sent_at)
            result.shares[r].append((t, budget.share()))
            push(t, r, worker, "reserve")
    result.accepted.sort()
    return result
