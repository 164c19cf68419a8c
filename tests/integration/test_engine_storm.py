"""Engine v2: SIGTERM during a rebalance storm, twenty times (issue 9, item 7).

Members join every 1-3 s while two or three are in the group, and each join is met by
a SIGTERM to the oldest member while the group rebalances. Every exit must come within
``drain_timeout_s + 3 * call_timeout_s`` (plus process start/exit slack) with code 0
or 3, and at the end every event is delivered or dead-lettered, no offset was ever
committed past unfinished work or rewound, and the commits reach the log end. On the engine
before issue 9 a synchronous commit without a timeout could hold the consumer handle
during the rebalance, and the process ignored its drain bound.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from consumer.samples import SampleGenerator
from tests.fixtures.engine import EngineEnv, EngineProcess, wait_until
from tests.fixtures.liveness import (
    EXIT_SLACK_S,
    Exit,
    group_members,
    shutdown_bound_s,
    sigterm_and_time,
)
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import CommitSampler, all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]

ROUNDS = 20
DRAIN_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 2.0
# Kafka's default session timeout: a member blocked in a rebalance is not evicted soon.
SESSION_TIMEOUT_MS = 45_000
EXIT_BOUND_S = shutdown_bound_s(DRAIN_TIMEOUT_S, CALL_TIMEOUT_S) + EXIT_SLACK_S


@pytest.mark.timeout(330)
def test_sigterm_during_a_rebalance_storm_always_exits_within_the_bound(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    rng = random.Random(941)
    # A slow API (1.5-3 s per answer, some 503s) keeps batches in flight, so every
    # SIGTERM has a drain to do and every revoke has batches to wait for (for up to
    # revoke_timeout_s, 10 s): shutdown must still keep its own bound.
    sandbox = start_sandbox(
        {"seed": 941, "faults": {"latency_ms": 1500, "latency_jitter_ms": 1500, "error_503": 0.1}}
    )
    gen = SampleGenerator(seed=941, invalid_share=0.03)
    produced = env.produce(gen.events(1000), id_prefix="start")
    config = env.config(
        sandbox,
        kafka={"call_timeout_s": CALL_TIMEOUT_S, "session_timeout_ms": SESSION_TIMEOUT_MS},
        account={"max_in_flight": 4},
        batching={"max_events": 40, "linger_ms": 20},
        delivery={
            "drain_timeout_s": DRAIN_TIMEOUT_S,
            "revoke_timeout_s": 10.0,
            "commit_interval_s": 0.3,
            "adaptive_concurrency": False,
        },
    )
    exits: dict[str, Exit] = {}
    waiters: list[threading.Thread] = []
    mid_rebalance = 0

    def stop(name: str, engine: EngineProcess) -> None:
        def wait() -> None:
            exits[name] = sigterm_and_time(engine, EXIT_BOUND_S + 30)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        waiters.append(thread)

    alive: list[tuple[str, EngineProcess]] = []
    with CommitSampler(env, sandbox, produced) as sampler:
        for n in range(2):
            alive.append((f"m{n}", env.start(config, name=f"m{n}")))
        wait_until(
            lambda: len(sandbox.conversion_ids()) > 0,
            90,
            "the first deliveries",
            on_timeout=progress(sandbox, alive[0][1]),
        )
        for round_ in range(ROUNDS):
            name = f"m{round_ + 2}"
            newcomer = env.start(config, name=name)
            alive.append((name, newcomer))
            produced.merge(env.produce(gen.events(200), id_prefix=f"r{round_}"))
            # Up and running (its signal handlers installed) before it can be a victim.
            newcomer.wait_ready()
            # SIGTERM the oldest member as soon as the group rebalances for the newcomer
            # (bounded: 1-3 s, the storm's pace).
            deadline = time.monotonic() + rng.uniform(1.0, 3.0)
            state = "STABLE"
            while time.monotonic() < deadline:
                state, _ = group_members(env.bootstrap, env.group, env.topic)
                if state not in ("STABLE", "UNKNOWN"):
                    break
                time.sleep(0.05)
            if state not in ("STABLE", "UNKNOWN"):
                mid_rebalance += 1
            if len(alive) > 2:
                stop(*alive.pop(0))
        for thread in waiters:
            thread.join(EXIT_BOUND_S + 40)

        sandbox.set_faults(latency_ms=0, latency_jitter_ms=0, error_503=0.0)  # storm over
        survivor = alive[-1][1]
        finished = all_done(sandbox, produced, env)
        wait_until(finished, 180, "delivery", on_timeout=progress(sandbox, survivor))
        wait_until(committed_at_end(env.probe(), produced), 90, "commits at the end offsets")
    for name, engine in alive:
        exits[name] = sigterm_and_time(engine, EXIT_BOUND_S + 30)

    assert not sampler.errors, sampler.errors
    assert sampler.problems == [], sampler.problems[:20]  # never committed past undone work
    # Never rewound either (item 9: an older snapshot landing after a newer commit).
    rewinds = [
        (p, before.get(p, 0), after.get(p, 0))
        for before, after in zip(sampler.samples, sampler.samples[1:], strict=False)
        for p in produced.ends
        if after.get(p, 0) < before.get(p, 0)
    ]
    assert rewinds == [], rewinds[:10]
    assert len(exits) == ROUNDS + 2
    slow = {n: e for n, e in exits.items() if e.code is None or e.seconds > EXIT_BOUND_S}
    assert slow == {}, f"exits past {EXIT_BOUND_S:.0f}s: {slow}"
    codes = {n: e.code for n, e in exits.items() if e.code not in (0, 3)}
    assert codes == {}, codes
    # The premise: most SIGTERMs came while the group was rebalancing.
    assert mid_rebalance >= ROUNDS // 2, mid_rebalance
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    tail = env.dead_letters()
    tail.catch_up()
    assert set(produced.invalid) <= set(tail.by_source())
