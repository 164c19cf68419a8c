"""``xconv run`` against a misbehaving API: rate limits, 5xx, hangs, drops, outages, 401.

Whatever the sandbox does, no event may be lost, none dead-lettered for a transient
failure, and no offset committed before the events below it are done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.samples import SampleGenerator
from consumer.sandbox.config import demo_account
from tests.fixtures.engine import EngineEnv, wait_until
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import CommitSampler, all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox]

StartSandbox = Callable[..., SandboxHandle]


def sandbox_config(rate_limit: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    account = demo_account().model_dump()
    if rate_limit is not None:
        account["rate_limit"] = {**account["rate_limit"], **rate_limit}
    return {"accounts": [account], **top}


# --------------------------------------------------------------------------------------
# 3. a tiny rate budget: paced sends, 429s honoured, nothing lost
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_rate_budget_is_paced_without_loss(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox(sandbox_config({"requests_per_window": 20, "window_s": 5}))
    produced = env.produce(SampleGenerator(seed=31).events(500))
    # 50 requests of 10 events against 20 requests per 5 s: at least three windows.
    config = env.config(
        sandbox,
        account={"requests_per_window": 20, "window_s": 5},
        batching={"max_events": 10, "linger_ms": 20},
    )
    engine = env.start(config)
    wait_until(
        all_done(sandbox, produced, env), 200, "delivery", on_timeout=progress(sandbox, engine)
    )
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()

    stats = sandbox.stats()["accounts"][sandbox.account_id]
    assert stats["accepted_requests"] >= 50
    # Pacing (and the server's headers) keep the engine inside the budget: at most a
    # couple of 429s where the engine's window and the server's fixed one disagree.
    assert stats["rate_limited"] <= 3, stats
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_429s_without_headers_are_retried_without_loss(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox(
        sandbox_config({"requests_per_window": 10, "window_s": 3, "send_headers": False})
    )
    produced = env.produce(SampleGenerator(seed=32, invalid_share=0.05).events(300))
    # The engine believes in a far bigger budget, and no header corrects it: only 429s do.
    config = env.config(sandbox, batching={"max_events": 10, "linger_ms": 20})
    engine = env.start(config)
    with CommitSampler(env, sandbox, produced) as sampler:
        wait_until(
            all_done(sandbox, produced, env), 200, "delivery", on_timeout=progress(sandbox, engine)
        )
        wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()
    assert not sampler.errors, sampler.errors
    assert sampler.problems == [], sampler.problems[:20]

    stats = sandbox.stats()["accounts"][sandbox.account_id]
    assert stats["rate_limited"] > 0, stats  # the premise: the server did say no
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    tail = env.dead_letters()
    tail.catch_up()
    # Nothing dead-lettered for a 429: only the transform's rejections are there.
    assert set(tail.by_source()) == set(produced.invalid)


# --------------------------------------------------------------------------------------
# 4. 5xx, hangs past the client timeout, dropped connections: retried, nothing lost
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_errors_hangs_and_drops_are_retried(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox(
        sandbox_config(
            seed=41,
            faults={
                "error_500": 0.12,
                "error_503": 0.08,
                "error_503_retry_after": 0.05,
                "retry_after_s": 1,
                "hang": 0.06,
                "drop": 0.08,
                "latency_jitter_ms": 50,
            },
        )
    )
    produced = env.produce(SampleGenerator(seed=42, invalid_share=0.03).events(1200))
    config = env.config(
        sandbox,
        api={"request_timeout_s": 1.0, "connect_timeout_s": 1.0},
        batching={"max_events": 25, "linger_ms": 20},
        delivery={"commit_interval_s": 0.1},
    )
    with CommitSampler(env, sandbox, produced) as sampler:
        engine = env.start(config)
        wait_until(
            all_done(sandbox, produced, env), 240, "delivery", on_timeout=progress(sandbox, engine)
        )
        wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    metrics = engine.metrics()
    assert engine.terminate() == 0, engine.log_tail()
    assert not sampler.errors, sampler.errors
    assert sampler.problems == [], sampler.problems[:20]

    faults = sandbox.stats()["faults_injected"]
    for kind in ("error_500", "error_503", "hang", "drop"):
        assert faults.get(kind, 0) > 0, faults  # the premise: each fault happened
    assert metrics is not None
    assert metrics["xconv_retries_total"] >= sum(faults.values())
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    tail = env.dead_letters()
    tail.catch_up()
    assert set(tail.by_source()) == set(produced.invalid)  # no transient failure dead-lettered


# --------------------------------------------------------------------------------------
# 10. an outage with a growing backlog: bounded memory, paused partitions, then recovery
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_outage_holds_a_bounded_buffer_then_recovers(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox(sandbox_config(faults={"error_503": 1.0}))
    max_buffered = 600
    produced = env.produce(SampleGenerator(seed=101).events(1500))
    config = env.config(
        sandbox,
        batching={"max_events": 50, "linger_ms": 20},
        delivery={"max_buffered_events": max_buffered, "resume_ratio": 0.5},
    )
    engine = env.start(config)
    engine.wait_ready()
    held: list[float] = []

    def paused() -> bool:
        m = engine.metrics()
        if m is None:
            return False
        held.append(m.get("xconv_events_in_flight", 0.0))
        return m.get("xconv_partitions_paused", 0.0) == 6

    wait_until(paused, 90, "all partitions paused", interval=0.1, on_timeout=engine.log_tail)
    # The backlog keeps growing while the API is down; the engine's buffer must not.
    more = env.produce(SampleGenerator(seed=102).events(1000), id_prefix="more")
    produced.merge(more)

    def retried_a_while() -> bool:
        m = engine.metrics()
        if m is None:
            return False
        held.append(m.get("xconv_events_in_flight", 0.0))
        return m.get("xconv_retries_total", 0.0) >= 40

    wait_until(retried_a_while, 90, "retries during the outage", interval=0.1)
    m = engine.metrics()
    assert m is not None
    assert m["xconv_partitions_paused"] == 6
    assert m["xconv_events_consumed_total"] < produced.total
    assert max(held) <= max_buffered, max(held)
    # Nothing accepted: no committed offset may have moved past the first event.
    assert all(offset == 0 for offset in env.probe().committed().values())
    assert sandbox.conversion_ids() == {}

    sandbox.set_faults(error_503=0.0)
    wait_until(
        all_done(sandbox, produced, env), 180, "recovery", on_timeout=progress(sandbox, engine)
    )
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    m = engine.metrics()
    assert m is not None
    assert m["xconv_partitions_paused"] == 0
    assert engine.terminate() == 0, engine.log_tail()


# --------------------------------------------------------------------------------------
# 11. 401 on the account: hold everything, not ready, resume once fixed
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_unauthorized_account_holds_offsets_until_fixed(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    sandbox.set_faults(status_overrides={sandbox.account_id: 401})
    produced = env.produce(SampleGenerator(seed=111).events(400))
    engine = env.start(env.config(sandbox, batching={"max_events": 50, "linger_ms": 20}))
    engine.wait_ready()

    def blocked() -> bool:
        return engine.metric("xconv_account_blocked") == 1 and engine.readyz() == 503

    wait_until(blocked, 90, "account blocked and /readyz 503", on_timeout=engine.log_tail)
    probe = env.probe()
    tail = env.dead_letters()
    assert all(offset == 0 for offset in probe.committed().values())
    assert tail.catch_up() == []
    assert sandbox.stats()["requests_by_status"].get("401", 0) >= 1

    sandbox.set_faults(status_overrides={})
    # The engine probes a blocked account with a jittered back-off (15 s first).
    wait_until(
        all_done(sandbox, produced, env), 150, "delivery after the fix", on_timeout=engine.log_tail
    )
    wait_until(committed_at_end(probe, produced), 60, "commits at the end offsets")
    assert engine.metric("xconv_account_blocked") == 0
    wait_until(lambda: engine.readyz() == 200, 30, "/readyz 200 again")
    tail.catch_up()
    assert tail.records == []  # a 401 never dead-letters (on_account_blocked = hold)
    assert engine.terminate() == 0, engine.log_tail()
