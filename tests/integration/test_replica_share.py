"""Three ``xconv run`` replicas in one group share one account's budget (issue 12).

The sandbox grants the demo account ``LIMIT`` requests per ``WINDOW_S`` with rate-limit
headers on; a backlog far above the budget waits in the topic. Each replica estimates
its share of the account's use from the drops of ``x-rate-limit-remaining`` alone and
paces at it. Over whole windows after one of warm-up the group must use at least 95 %
of each window, never get a 429, and never leave more than 3 nominal slot intervals of
one replica (``window / (limit / 3)``) with nothing accepted. On main each replica spread
the server's whole remaining over the time to reset: the three spent each window about
3x too fast and then waited (gaps of 25 s in 60 s windows).

Accepted request times come from the sandbox's recent-conversions ring (every request
carries ``BATCH`` valid events, which share their request's time); the sandbox's
windows open with the first request after the previous one ended, so they are rebuilt
from those times (``bench.replica_share.analyse``, also behind the benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bench.replica_share import accepted_request_times, analyse
from consumer.samples import SampleGenerator
from consumer.sandbox.config import demo_account
from tests.fixtures.engine import EngineEnv, wait_until
from tests.fixtures.liveness import group_members
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]

REPLICAS = 3
WINDOW_S = 20.0
LIMIT = 150  # 7.5 requests/s for the group: a replica's nominal slot is 0.4 s
WINDOWS = 3  # measured, after one window of warm-up
BATCH = 10
EVENTS = LIMIT * BATCH * (WINDOWS + 4)  # far more than the run can deliver


@pytest.mark.timeout(420)
def test_three_replicas_use_the_shared_budget_evenly_without_429(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    account = demo_account().model_dump()
    account["rate_limit"] = {
        "enabled": True,
        "send_headers": True,
        "requests_per_window": LIMIT,
        "window_s": WINDOW_S,
    }
    sandbox = start_sandbox({"accounts": [account], "recent_conversions": EVENTS + 1000})
    env.produce(SampleGenerator(seed=1201).events(EVENTS))
    engines = []
    for n in range(REPLICAS):
        config = env.config(
            sandbox,
            name=f"replica{n}",
            account={"requests_per_window": LIMIT, "window_s": WINDOW_S},
            kafka={"client_id": f"replica{n}"},  # members told apart in the group
            batching={"max_events": BATCH, "linger_ms": 20},
            delivery={"drain_timeout_s": 2.0},
        )
        engines.append(env.start(config, name=f"replica{n}"))
    for engine in engines:
        engine.wait_ready()

    def settled() -> bool:
        state, members = group_members(env.bootstrap, env.group, env.topic)
        return state == "STABLE" and len(members) == REPLICAS and all(members.values())

    wait_until(settled, 90, f"a stable group of {REPLICAS} members with partitions")
    after = time.time() + WINDOW_S  # one window of warm-up: first share estimates
    deadline = after + WINDOW_S * (WINDOWS + 1.3)
    while time.time() < deadline:
        for engine in engines:
            assert engine.alive(), engine.log_tail()
        time.sleep(0.5)
    times = accepted_request_times(sandbox.base_url, EVENTS + 1000)
    stats = sandbox.stats()["accounts"][sandbox.account_id]
    metrics = [engine.metrics() or {} for engine in engines]
    for engine in engines:
        assert engine.terminate() in (0, 3), engine.log_tail()

    figures = analyse(
        times, window_s=WINDOW_S, limit=LIMIT, replicas=REPLICAS, after=after, windows=WINDOWS
    )
    report = figures.report()
    print(report)  # shown with -rP
    assert stats["rate_limited"] == 0, (stats, report)
    assert "429" not in stats["requests_by_status"], stats
    assert all(m.get("xconv_rate_limited_total", 0.0) == 0 for m in metrics), metrics
    assert min(figures.window_use) >= 0.95, report
    assert figures.longest_gap_s <= figures.gap_bound_s, report
    # Every replica delivered: nobody was starved of its share.
    sent = [m.get("xconv_requests_total", 0.0) for m in metrics]
    assert all(s > 0 for s in sent), sent
