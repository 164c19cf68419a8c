"""HealthState as a state machine on a fake clock; HealthServer over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from consumer.observability.health import (
    CONSUME_LOOP,
    EVENT_LOOP,
    HealthServer,
    HealthState,
    run_event_loop_heartbeat,
)
from consumer.observability.metrics import Metrics
from tests.fakes import FakeClock


def ready_state(clock: FakeClock, **kwargs: object) -> HealthState:
    state = HealthState(clock=clock, stale_after_s=30.0, **kwargs)  # type: ignore[arg-type]
    state.register(EVENT_LOOP)
    state.register(CONSUME_LOOP)
    state.set_started()
    state.set_assigned(True)
    return state


def test_live_with_no_components_and_fresh_beats() -> None:
    clock = FakeClock()
    state = HealthState(clock=clock)
    assert state.live()[0] is True
    state.beat(EVENT_LOOP)
    clock.advance(29.9)
    ok, detail = state.live()
    assert ok is True
    assert detail["components"][EVENT_LOOP] == {"ok": True, "age_s": 29.9}


def test_a_stale_component_fails_liveness_until_it_beats_again() -> None:
    clock = FakeClock()
    state = HealthState(clock=clock, stale_after_s=30.0)
    state.register(EVENT_LOOP)
    state.register(CONSUME_LOOP)
    clock.advance(20)
    state.beat(EVENT_LOOP)
    clock.advance(10.5)  # consume loop last seen 30.5 s ago, event loop 10.5 s ago
    ok, detail = state.live()
    assert ok is False
    assert detail["reasons"] == ["stale:consume_loop"]
    assert detail["components"][EVENT_LOOP]["ok"] is True
    state.beat(CONSUME_LOOP)
    assert state.live()[0] is True


def test_staleness_is_judged_at_the_given_time() -> None:
    clock = FakeClock()
    state = HealthState(clock=clock, stale_after_s=5)
    state.beat(EVENT_LOOP)
    assert state.live(now=clock.now + 5)[0] is True
    assert state.live(now=clock.now + 5.01)[0] is False


def test_unregistered_component_is_no_longer_expected() -> None:
    clock = FakeClock()
    state = HealthState(clock=clock)
    state.register(CONSUME_LOOP)
    clock.advance(100)
    assert state.live()[0] is False
    state.unregister(CONSUME_LOOP)
    assert state.live()[0] is True


def test_ready_needs_start_and_an_assignment_or_a_normal_wait() -> None:
    clock = FakeClock()
    state = HealthState(clock=clock)
    state.register(EVENT_LOOP)
    ok, detail = state.ready()
    assert ok is False
    assert detail["reasons"] == ["not_started", "no_assignment"]
    state.set_started()
    assert state.ready()[1]["reasons"] == ["no_assignment"]
    state.set_waiting_for_assignment(True)
    assert state.ready()[0] is True
    state.set_waiting_for_assignment(False)
    state.set_assigned(True)
    ok, detail = state.ready()
    assert ok is True
    assert detail["status"] == "ok"
    assert "reasons" not in detail


def test_waiting_for_assignment_without_broker_contact_is_not_ready() -> None:
    # v1 answered 200 ("waiting for assignment") while the broker was unreachable.
    clock = FakeClock()
    state = HealthState(clock=clock, broker_contact_s=60.0)
    state.register(EVENT_LOOP)
    state.set_started()
    state.set_waiting_for_assignment(True)
    state.broker_contact(clock())
    clock.advance(59.0)
    state.beat(EVENT_LOOP)
    assert state.ready()[0] is True
    clock.advance(2.0)
    state.beat(EVENT_LOOP)
    ok, detail = state.ready()
    assert ok is False
    assert detail["reasons"] == ["broker_unreachable"]
    assert detail["broker_contact_age_s"] == 61.0
    assert state.live()[0] is True  # a restart does not fix a broker outage
    state.broker_contact(clock())
    assert state.ready()[0] is True


def test_an_engine_failure_fails_liveness_and_readiness() -> None:
    clock = FakeClock()
    state = HealthState(clock=clock)
    state.register(EVENT_LOOP)
    state.set_started()
    state.set_assigned(True)
    state.set_failed("deliver task failed: OverflowError")
    state.set_failed("a second failure does not replace the first")
    live, detail = state.live()
    assert live is False
    assert detail["reasons"] == ["engine_failed"]
    assert detail["failure"] == "deliver task failed: OverflowError"
    assert state.ready()[0] is False


def test_ready_fails_when_not_live() -> None:
    clock = FakeClock()
    state = ready_state(clock)
    assert state.ready()[0] is True
    clock.advance(31)
    ok, detail = state.ready()
    assert ok is False
    assert detail["reasons"] == ["stale:consume_loop", "stale:event_loop"]


def test_blocked_accounts_fail_readiness_by_default_and_clear() -> None:
    clock = FakeClock()
    state = ready_state(clock)
    state.set_account_blocked("18ce552mlaq", "401")
    state.set_account_blocked("abc123", "404")
    ok, detail = state.ready()
    assert ok is False
    assert detail["blocked_accounts"] == {"18ce552mlaq": "401", "abc123": "404"}
    assert detail["reasons"] == ["account_blocked:18ce552mlaq", "account_blocked:abc123"]
    assert state.live()[0] is True  # a credentials problem is no reason to restart
    state.set_account_blocked("18ce552mlaq", None)
    state.set_account_blocked("abc123", None)
    state.set_account_blocked("never-blocked", None)
    assert state.ready()[0] is True
    assert state.blocked_accounts == {}


def test_blocked_accounts_can_be_tolerated_by_policy() -> None:
    clock = FakeClock()
    state = ready_state(clock, ready_when_account_blocked=True)
    state.set_account_blocked("18ce552mlaq", "403")
    ok, detail = state.ready()
    assert ok is True
    assert detail["blocked_accounts"] == {"18ce552mlaq": "403"}


def test_draining_is_live_but_not_ready() -> None:
    clock = FakeClock()
    state = ready_state(clock)
    state.set_draining()
    assert state.live()[0] is True
    ok, detail = state.ready()
    assert ok is False
    assert detail["reasons"] == ["draining"]


def test_stale_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HealthState(stale_after_s=0)


# --- HTTP ------------------------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[HealthServer, HealthState, Metrics, FakeClock]]:
    clock = FakeClock()
    state = HealthState(clock=clock)
    metrics = Metrics()
    server = HealthServer(metrics, state, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server, state, metrics, clock
    finally:
        await server.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_server_binds_a_free_port_and_serves_metrics(
    served: tuple[HealthServer, HealthState, Metrics, FakeClock],
) -> None:
    server, _, metrics, _ = served
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    metrics.events_consumed_total.labels(topic="purchases").inc(7)
    status, ctype, body = await get(f"{server.url}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert 'xconv_events_consumed_total{topic="purchases"} 7.0' in body


async def test_probes_follow_the_state(
    served: tuple[HealthServer, HealthState, Metrics, FakeClock],
) -> None:
    server, state, _, clock = served
    status, ctype, body = await get(f"{server.url}/healthz")
    assert (status, ctype) == (200, "application/json")
    assert '"status":"ok"' in body

    status, _, body = await get(f"{server.url}/readyz")
    assert status == 503
    assert '"not_started"' in body

    state.register(CONSUME_LOOP)
    state.set_started()
    state.set_assigned(True)
    assert (await get(f"{server.url}/readyz"))[0] == 200

    state.set_account_blocked("18ce552mlaq", "401")
    status, _, body = await get(f"{server.url}/readyz")
    assert status == 503
    assert "account_blocked:18ce552mlaq" in body
    assert (await get(f"{server.url}/healthz"))[0] == 200

    clock.advance(60)
    status, _, body = await get(f"{server.url}/healthz")
    assert status == 503
    assert "stale:consume_loop" in body

    assert (await get(f"{server.url}/nope"))[0] == 404


async def test_stop_closes_the_port_and_is_idempotent() -> None:
    server = HealthServer(Metrics(), HealthState(), port=0)
    await server.start()
    url = f"{server.url}/healthz"
    assert (await get(url))[0] == 200
    await server.stop()
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(url)


async def test_a_taken_port_raises() -> None:
    first = HealthServer(Metrics(), HealthState(), port=0)
    await first.start()
    try:
        second = HealthServer(Metrics(), HealthState(), port=first.port)
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.stop()


class SignallingState(HealthState):
    """Lets a test await the next beat instead of polling."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.beaten = asyncio.Event()

    def beat(self, component: str) -> None:
        super().beat(component)
        self.beaten.set()


async def test_heartbeat_beats_records_lag_and_unregisters_on_cancel() -> None:
    clock = FakeClock()
    state = SignallingState(clock)
    metrics = Metrics()
    metrics.event_loop_lag_seconds.set(-1)  # a value the heartbeat can never write
    task = asyncio.create_task(run_event_loop_heartbeat(state, metrics, interval_s=0.01))
    await asyncio.sleep(0)
    assert EVENT_LOOP in state.live()[1]["components"]
    clock.advance(1000)  # stale now; only a beat after this point makes it fresh again
    assert state.live()[0] is False
    state.beaten.clear()
    await asyncio.wait_for(state.beaten.wait(), timeout=30)
    assert state.live()[0] is True
    lag = metrics.registry.get_sample_value("xconv_event_loop_lag_seconds")
    assert lag is not None
    assert lag >= 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert EVENT_LOOP not in state.live()[1]["components"]
