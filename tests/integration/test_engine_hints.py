"""Engine v2 and what the API's answers say (issue 9, items 3, 4 and 6), over real HTTP.

Odd rate-limit header values never crash a delivery task; server hints (``retry-after``,
``x-rate-limit-reset`` with remaining 0) are capped at the account's window and
counted; a 200 whose ``conversions_processed`` is below the number sent is logged and
counted, and its offsets still finish. On the engine before issue 9 these fail: a task
crashed on ``x-rate-limit-remaining: inf`` and its events were never finished, a hint
of 10^9 s froze the account, and a partial 200 passed without a word.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from consumer.samples import SampleGenerator
from tests.fixtures.engine import EngineEnv, EngineProcess, Produced, wait_until
from tests.fixtures.liveness import labelled, status_count
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]

WINDOW_S = 5.0  # the account's window: every server hint is capped at it
# A capped hint delays a batch by at most one window; a few windows plus start-up.
DELIVERY_BOUND_S = 4 * WINDOW_S + 20


def start_engine(env: EngineEnv, sandbox: SandboxHandle, **sections: Any) -> EngineProcess:
    config = env.config(
        sandbox,
        account={"window_s": WINDOW_S},
        batching={"max_events": 100, "linger_ms": 50},
        **sections,
    )
    engine = env.start(config)
    engine.wait_ready()
    return engine


def delivered(
    env: EngineEnv, sandbox: SandboxHandle, engine: EngineProcess, produced: Produced, what: str
) -> None:
    finished = all_done(sandbox, produced, env)

    def done() -> bool:
        if not engine.alive():
            raise AssertionError(f"engine exited: {engine.log_tail()}")
        return finished()

    wait_until(done, DELIVERY_BOUND_S, what, on_timeout=progress(sandbox, engine))


def json_logs(engine: EngineProcess, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in engine.logs().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            doc = orjson.loads(line)
            if doc.get("event") == event:
                lines.append(doc)
    return lines


# --------------------------------------------------------------------------------------
# odd x-rate-limit-* values: never a crashed task, never a stop
# --------------------------------------------------------------------------------------

ODD_HEADERS: list[dict[str, str]] = [
    {"x-rate-limit-remaining": "inf"},
    {"x-rate-limit-remaining": "nan"},
    {"x-rate-limit-remaining": "-5"},
    {"x-rate-limit-remaining": "1e400"},
    {"x-rate-limit-remaining": "9" * 40},
    {"x-rate-limit-remaining": "garbage"},
    {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "inf"},
    {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "nan"},
    {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "-1"},
    {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "garbage"},
]


@pytest.mark.timeout(400)
def test_odd_rate_limit_headers_never_stop_delivery(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    engine = start_engine(env, sandbox)
    probe = env.probe()
    produced = Produced()
    gen = SampleGenerator(seed=961)
    for n, headers in enumerate(ODD_HEADERS):
        sandbox.set_faults(header_overrides=headers)
        before = sandbox.stats()["accepted_requests"]
        phase = env.produce(gen.events(120), id_prefix=f"odd{n}")
        produced.merge(phase)
        delivered(env, sandbox, engine, phase, f"delivery with headers {headers}")
        # The premise: the engine did read answers carrying these headers.
        assert sandbox.stats()["accepted_requests"] > before
        # Accepted is not enough: the delivery task must finish and its offsets commit.
        wait_until(
            committed_at_end(probe, produced),
            DELIVERY_BOUND_S,
            f"commits at the end offsets with headers {headers}",
            on_timeout=engine.log_tail,
        )
    sandbox.set_faults(header_overrides={})
    metrics = engine.metrics()
    assert metrics is not None
    assert metrics.get("xconv_task_failures_total", 0.0) == 0, engine.log_tail()
    assert json_logs(engine, "delivery_task_crashed") == []
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    assert engine.terminate() == 0, engine.log_tail()


# --------------------------------------------------------------------------------------
# retry-after: 1000000000 on a 503, capped at the window
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_huge_retry_after_is_capped_at_the_window(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    aid = sandbox.account_id
    sandbox.set_faults(error_503_retry_after=1.0, retry_after_s=1_000_000_000)
    # Everything is produced now: nothing new arrives later to wake a sleeping retry.
    produced = env.produce(SampleGenerator(seed=962).events(300))
    engine = start_engine(env, sandbox)
    wait_until(
        lambda: status_count(sandbox, 503, aid) >= 3,
        60,
        "503s with retry-after: 10^9 s",
        on_timeout=progress(sandbox, engine),
    )
    sandbox.set_faults(error_503_retry_after=0.0)
    delivered(env, sandbox, engine, produced, "delivery within a few windows of the fix")
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    metrics = engine.metrics()
    capped = labelled(metrics, "xconv_server_hints_capped_total", account=aid, hint="retry_after")
    assert capped > 0, metrics
    assert engine.alive()
    assert engine.terminate() == 0, engine.log_tail()


# --------------------------------------------------------------------------------------
# remaining 0 with a reset 10^8 s ahead, capped at the window
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_far_rate_limit_reset_is_capped_at_the_window(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    aid = sandbox.account_id
    far = str(int(time.time() + 1e8))
    sandbox.set_faults(header_overrides={"x-rate-limit-remaining": "0", "x-rate-limit-reset": far})
    engine = start_engine(env, sandbox)
    gen = SampleGenerator(seed=963)
    first = env.produce(gen.events(100), id_prefix="first")
    # Accepted, but the answer says the budget is gone for three years.
    delivered(env, sandbox, engine, first, "the first batch (its answer empties the budget)")
    sandbox.set_faults(header_overrides={})
    later = env.produce(gen.events(300), id_prefix="later")
    delivered(env, sandbox, engine, later, "later batches within a window of the capped reset")
    produced = Produced()
    produced.merge(first)
    produced.merge(later)
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    metrics = engine.metrics()
    capped = labelled(
        metrics, "xconv_server_hints_capped_total", account=aid, hint="rate_limit_reset"
    )
    assert capped > 0, metrics
    assert engine.alive()
    assert engine.terminate() == 0, engine.log_tail()


# --------------------------------------------------------------------------------------
# a 200 with conversions_processed below the number sent
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_partial_200_is_logged_counted_and_committed(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    aid = sandbox.account_id
    shortfall = 3
    sandbox.set_faults(processed_shortfall=shortfall)
    produced = env.produce(SampleGenerator(seed=971).events(400))
    engine = start_engine(env, sandbox)
    delivered(env, sandbox, engine, produced, "delivery")
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    stats = sandbox.stats()
    partial = int(stats["faults_injected"]["partial_200"])
    unprocessed = int(stats["conversions_unprocessed"])
    assert partial >= 1  # the premise

    def counted() -> bool:
        m = engine.metrics()
        return labelled(m, "xconv_events_unprocessed_total", account=aid) == unprocessed

    wait_until(counted, 15, f"xconv_events_unprocessed_total == {unprocessed}")
    lines = json_logs(engine, "batch_partially_processed")
    assert len(lines) == partial, lines
    for line in lines:
        assert line["level"] == "warning", line
        assert line.get("batch_id") is not None, line
        assert line.get("debug_id"), line  # the sandbox gives every 200 a debug_id
        assert line["sent"] - line["processed"] == min(shortfall, line["sent"]), line
    assert sum(line["sent"] - line["processed"] for line in lines) == unprocessed
    # No resend: X de-duplicates, and the shortfall is the user's signal, not a retry.
    assert stats["duplicate_conversion_ids"] == 0, stats
    assert engine.terminate() == 0, engine.log_tail()
