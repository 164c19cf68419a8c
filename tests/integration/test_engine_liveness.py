"""Engine v2 liveness (issue 9): a blocked account is probed until it recovers, and
readiness fails when the broker has not been reached for a while.

Each test runs ``xconv run`` as a subprocess against the session's real broker and a
real sandbox over HTTP. On the engine before issue 9 they fail for the issue's reasons:
a blocked account was probed once and never again (item 1), and "waiting for an
assignment" counted as ready with no broker at all (item 8).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from consumer.samples import SampleGenerator
from devtools.kafka import free_port
from tests.fixtures.engine import EngineEnv, wait_until
from tests.fixtures.liveness import (
    EXIT_SLACK_S,
    has_reason,
    probe_detail,
    shutdown_bound_s,
    sigterm_and_time,
    status_count,
)
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox]

StartSandbox = Callable[..., SandboxHandle]

PROBE_INITIAL_S = 0.5
PROBE_MAX_S = 2.0
# Every wait between probes is at least half the initial one, whatever the jitter
# (the engine's jitter spreads a delay over [0.5, 1.5] of its value at most).
MIN_PROBE_GAP_S = PROBE_INITIAL_S / 2


# --------------------------------------------------------------------------------------
# issue 9, item 1: a blocked account is probed, one request at a time, until it recovers
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("status", "html"), [(401, False), (404, True)], ids=["401-json", "404-html-page"]
)
def test_blocked_account_is_probed_until_it_recovers(
    engine_env: EngineEnv, sandbox: SandboxHandle, status: int, html: bool
) -> None:
    env = engine_env
    aid = sandbox.account_id
    sandbox.set_faults(status_overrides={aid: status}, error_page_html=html)
    # One partition and one batch of 200: exactly one request answers the block, so
    # every later answer with ``status`` is a probe.
    produced = env.produce(SampleGenerator(seed=901).events(200), partition=0)
    config = env.config(
        sandbox,
        batching={"max_events": 500, "linger_ms": 1000},
        delivery={"probe_initial_s": PROBE_INITIAL_S, "probe_max_s": PROBE_MAX_S},
    )
    engine = env.start(config)
    engine.wait_ready()

    def blocked() -> bool:
        return engine.metric("xconv_account_blocked") == 1 and engine.readyz() == 503

    wait_until(blocked, 90, "account blocked and /readyz 503", on_timeout=engine.log_tail)
    blocked_at = time.monotonic()
    # The first probes fail too (still blocked): the engine must keep probing. Three
    # failed probes take at most 1.5 * (0.5 + 1 + 2) s with any jitter.
    wait_until(
        lambda: status_count(sandbox, status, aid) >= 4,
        30,
        f"three failed probes after the first {status} (the account is probed again)",
        on_timeout=progress(sandbox, engine),
    )
    probe = env.probe()
    assert all(offset == 0 for offset in probe.committed().values())
    assert sandbox.conversion_ids() == {}
    assert engine.metric("xconv_account_blocked") == 1

    sandbox.set_faults(status_overrides={}, error_page_html=False)
    fixed_at = time.monotonic()
    answered_while_blocked = status_count(sandbox, status, aid)
    # The next probe comes within probe_max_s (x 1.5 for jitter); then the held batch flows.
    wait_until(
        all_done(sandbox, produced, env),
        2 * PROBE_MAX_S + 5,
        "delivery within about 2 x probe_max_s of the fix",
        interval=0.1,
        on_timeout=progress(sandbox, engine),
    )
    recovered_s = time.monotonic() - fixed_at
    wait_until(committed_at_end(probe, produced), 30, "commits at the end offsets")
    wait_until(lambda: engine.metric("xconv_account_blocked") == 0, 10, "account unblocked")
    wait_until(lambda: engine.readyz() == 200, 15, "/readyz 200 again")

    # One prober: at most one probe per minimum gap while blocked, plus the request
    # that found the block and one probe in flight at the fix.
    blocked_s = fixed_at - blocked_at
    most = 2 + int(blocked_s / MIN_PROBE_GAP_S) + 1
    assert answered_while_blocked <= most, (answered_while_blocked, blocked_s)
    assert status_count(sandbox, status, aid) <= answered_while_blocked + 1
    assert recovered_s <= 2 * PROBE_MAX_S + 5
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    tail = env.dead_letters()
    tail.catch_up()
    assert tail.records == []  # a blocked account holds, it never dead-letters
    assert engine.terminate() == 0, engine.log_tail()


# --------------------------------------------------------------------------------------
# issue 9, item 8: readiness fails without broker contact; liveness stays up
# --------------------------------------------------------------------------------------

READY_BROKER_CONTACT_S = 3.0
DRAIN_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 2.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_readiness_fails_without_broker_contact_while_liveness_stays_up(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    nobody = f"127.0.0.1:{free_port()}"  # a loopback port with no broker behind it
    config = env.config(
        sandbox,
        kafka={"bootstrap_servers": nobody, "call_timeout_s": CALL_TIMEOUT_S},
        delivery={"drain_timeout_s": DRAIN_TIMEOUT_S},
        observability={"ready_broker_contact_s": READY_BROKER_CONTACT_S},
    )
    engine = env.start(config)
    engine.wait_ready()

    def not_ready_for_the_broker() -> bool:
        answer = probe_detail(engine, "/readyz")
        return (
            answer is not None and answer[0] == 503 and has_reason(answer[1], "broker_unreachable")
        )

    wait_until(
        not_ready_for_the_broker,
        READY_BROKER_CONTACT_S + 20,
        "/readyz 503 with reason broker_unreachable",
        on_timeout=lambda: f"/readyz: {probe_detail(engine, '/readyz')}\n{engine.log_tail()}",
    )
    # A restart does not fix a broker outage: liveness stays 200 for a while.
    deadline = time.monotonic() + 2 * READY_BROKER_CONTACT_S
    while time.monotonic() < deadline:
        health = probe_detail(engine, "/healthz")
        assert health is not None, engine.log_tail()
        assert health[0] == 200, health
        ready = probe_detail(engine, "/readyz")
        assert ready is not None
        assert ready[0] == 503, ready
        time.sleep(0.5)
    assert engine.alive(), engine.log_tail()
    bound = shutdown_bound_s(DRAIN_TIMEOUT_S, CALL_TIMEOUT_S) + EXIT_SLACK_S
    end = sigterm_and_time(engine, bound)
    assert end.code in (0, 3), (end, engine.log_tail())
    assert end.seconds <= bound, end
