"""Replicas sharing one account's budget: budget use, 429s and the longest gap (issue 12).

    python -m bench.replica_share [--replicas 3] [--requests 600] [--window 60] [--windows 4]

Starts ``--replicas`` ``xconv run`` processes in one consumer group on a backlog far
above the budget, all on the sandbox's one demo account with rate-limit headers on
(``--requests`` per ``--window`` seconds), and reads every accepted request's time
from the sandbox (its recent-conversions ring; every request carries
``BATCH_EVENTS`` events, all valid). The sandbox's windows open with the first
request after the previous one ended, so they are rebuilt from those times. Over
``--windows`` whole windows after one window of warm-up (the group's rebalances and the
first share estimates): accepted requests per window as a share of the budget, the
same over time (whole-second reset headers cost up to a second per window), 429s, and
the longest time with nothing accepted beside its bound, 3 nominal slot intervals of
one replica (``window / (limit / replicas)``).

``analyse`` is shared with ``tests/integration/test_replica_share.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import tomli_w

from bench.common import (
    RUN_ROOT,
    consumer_account,
    produce_all,
    sandbox_account,
    sandbox_stats,
    wait_for,
)
from bench.e2e import Pool, Suite
from devtools.stack import DEMO_ACCOUNT, Process, http_get

BATCH_EVENTS = 10


@dataclass(frozen=True)
class ShareFigures:
    """What one run measured over its whole windows."""

    replicas: int
    limit: int
    window_s: float
    per_window: list[int]  # accepted requests in each whole window measured
    time_use: float  # accepted / (limit per window_s) over the same span of time
    longest_gap_s: float
    gap_at: float  # seconds after the first measured window opened
    gap_bound_s: float
    http_429: int = 0  # the sandbox's 429 answers over the whole run
    gap_into_window_s: float = 0.0  # the gap ended this long after a window opened

    @property
    def window_use(self) -> list[float]:
        return [n / self.limit for n in self.per_window]

    def report(self) -> str:
        use = ", ".join(f"{u:.1%}" for u in self.window_use)
        return (
            f"{self.replicas} replicas, {self.limit} requests per {self.window_s:.0f} s: "
            f"budget used per window {use}; over time {self.time_use:.1%}; "
            f"longest gap {self.longest_gap_s:.2f} s (bound {self.gap_bound_s:.2f} s) "
            f"at +{self.gap_at:.1f} s (ending {self.gap_into_window_s:.2f} s into a window); "
            f"429s {self.http_429}"
        )


def windows_of(times: Sequence[float], window_s: float) -> list[tuple[float, float]]:
    """The sandbox's windows, rebuilt from request times: (opened, ends)."""
    windows: list[tuple[float, float]] = []
    end = float("-inf")
    for t in times:
        if t >= end:
            end = t + window_s
            windows.append((t, end))
    return windows


def analyse(
    times: Sequence[float],
    *,
    window_s: float,
    limit: int,
    replicas: int,
    after: float,
    windows: int,
) -> ShareFigures:
    """Figures over ``windows`` whole sandbox windows opened at or after ``after``.

    ``times`` are the sandbox's times of every request it counted (epoch seconds).
    """
    times = sorted(times)
    opened = [w for w in windows_of(times, window_s) if w[0] >= after]
    if len(opened) < windows + 1:
        raise ValueError(f"only {len(opened)} windows opened after {after}, need {windows + 1}")
    measured = opened[:windows]
    start, stop = measured[0][0], opened[windows][0]  # up to the next window's opening
    per_window = [sum(1 for t in times if a <= t < b) for a, b in measured]
    inside = [t for t in times if start <= t < stop]
    time_use = len(inside) / ((stop - start) / window_s * limit)
    gap, gap_at = 0.0, 0.0
    for a, b in itertools.pairwise(inside):
        if b - a > gap:
            gap, gap_at = b - a, a - start
    # Where the gap ended relative to the window opened at (or just before) its end.
    gap_end = start + gap_at + gap
    into = min((gap_end - w[0] for w in opened if w[0] <= gap_end), default=0.0)
    bound = 3 * window_s / (limit / replicas)
    return ShareFigures(
        replicas, limit, window_s, per_window, time_use, gap, gap_at, bound, gap_into_window_s=into
    )


def accepted_request_times(sandbox_url: str, limit: int) -> list[float]:
    """Times of the accepted requests, from the recent-conversions ring (one time per
    request: its conversions share it)."""
    body = orjson.loads(http_get(f"{sandbox_url}/_sandbox/conversions?limit={limit}", timeout=60))
    return sorted({float(item["received_at"]) for item in body["conversions"]})


def run(
    suite: Suite,
    *,
    replicas: int = 3,
    requests: int = 600,
    window_s: float = 60.0,
    windows: int = 4,
) -> ShareFigures:
    events = requests * BATCH_EVENTS * (windows + 3)
    rate_limit: dict[str, Any] = {
        "enabled": True,
        "send_headers": True,
        "requests_per_window": requests,
        "window_s": window_s,
    }
    account = sandbox_account(
        DEMO_ACCOUNT["account_id"],
        DEMO_ACCOUNT["pixel_id"],
        DEMO_ACCOUNT["event_id"],
        rate_limit=rate_limit,
    )
    topic, run_id = suite.new_run({"accounts": [account], "recent_conversions": events + 1000})
    pool = Pool.make(min(events, 20_000), invalid_share=0.0)
    keys, values = pool.tiled(events)
    produce_all(suite.stack.bootstrap, topic, keys, values)
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": suite.stack.bootstrap,
            "topics": [topic],
            "group_id": f"xconv-{run_id}",
            "dead_letter_topic": f"{topic}.dlq",
        },
        "api": {"base_url": suite.stack.sandbox_url, "version": "12"},
        "accounts": [
            consumer_account(
                DEMO_ACCOUNT["account_id"],
                DEMO_ACCOUNT["pixel_id"],
                requests_per_window=requests,
                window_s=window_s,
            )
        ],
        "transform": {"preset": "canonical"},
        "routing": {"default": dict(DEMO_ACCOUNT)},
        "batching": {"max_events": BATCH_EVENTS, "linger_ms": 20},
        "delivery": {"drain_timeout_s": 2.0},
        "observability": {"http_host": "127.0.0.1", "log_format": "json", "log_level": "warning"},
    }
    path = suite.stack.workdir / f"config-{run_id}.toml"
    path.write_text(tomli_w.dumps(config))
    members: list[Process] = []
    for n in range(replicas):
        process, _ = suite.stack.start_consumer(path, name=f"consumer-{run_id}-{n}")
        members.append(process)
    sandbox = suite.stack.sandbox_url
    wait_for(lambda: sandbox_stats(sandbox)["accepted_requests"] > 0, 120, 0.1, "first request")
    # One window of warm-up: the group settles, each replica measures its share.
    after = time.time() + window_s
    time.sleep(window_s * (windows + 2.2))
    for process in members:
        if not process.alive():
            raise RuntimeError(f"a consumer exited; see {process.log_path}")
    times = accepted_request_times(sandbox, events + 1000)
    stats = sandbox_stats(sandbox)
    for process in members:
        process.stop(timeout=30)
    figures = analyse(
        times, window_s=window_s, limit=requests, replicas=replicas, after=after, windows=windows
    )
    return dataclasses.replace(figures, http_429=int(stats["rate_limited"]))


def figures_dict(figures: ShareFigures) -> dict[str, float]:
    """The figures ``bench.run_all`` records."""
    return {
        "budget_used_min_window": min(figures.window_use),
        "budget_used_time": figures.time_use,
        "http_429": float(figures.http_429),
        "longest_gap_s": figures.longest_gap_s,
        "gap_bound_s": figures.gap_bound_s,
        "gap_into_window_s": figures.gap_into_window_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--windows", type=int, default=4)
    args = parser.parse_args(argv)
    suite = Suite(RUN_ROOT / "replica-share")
    try:
        figures = run(
            suite,
            replicas=args.replicas,
            requests=args.requests,
            window_s=args.window,
            windows=args.windows,
        )
    finally:
        suite.close()
    print(figures.report())
    ok = min(figures.window_use) >= 0.95 and figures.http_429 == 0
    ok = ok and figures.longest_gap_s <= figures.gap_bound_s
    print("verdict:", "met" if ok else "missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
