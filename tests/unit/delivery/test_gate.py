"""The account gate: explicit states, exactly one prober, bounded jittered backoff."""

from __future__ import annotations

import asyncio

import pytest

from consumer.delivery.gate import Gate, GateMode, GateState, ProbeOutcome
from tests.fakes import FakeClock


def state(clock: FakeClock, jitter: float = 0.5) -> GateState:
    # rng 0.5 makes the jitter factor exactly 1.0
    return GateState(initial_s=15.0, max_s=300.0, clock=clock, rng=lambda: jitter)


def test_blocked_probe_fails_again_and_again_then_recovers() -> None:
    clock = FakeClock()
    g = state(clock)
    assert g.block("401 UNAUTHORIZED_ACCESS")
    assert not g.block("401 UNAUTHORIZED_ACCESS")  # already blocked: no second close
    delays = []
    for _ in range(8):
        wait = g.seconds_to_probe()
        assert wait is not None
        delays.append(wait)
        assert not g.probe_due()
        clock.advance(wait)
        assert g.probe_due()
        g.start_probe()
        assert g.mode is GateMode.PROBING
        g.finish_probe(ProbeOutcome.BLOCKED, "401 UNAUTHORIZED_ACCESS")
    # v1 probed once and then waited forever; here every failed probe schedules the next.
    assert delays == [15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 300.0, 300.0]
    assert g.probes == 8
    clock.advance(g.seconds_to_probe() or 0.0)
    g.start_probe()
    g.finish_probe(ProbeOutcome.ACCEPTED)
    assert g.mode is GateMode.OPEN
    assert g.reason is None
    # A later block starts from the initial delay again.
    g.block("403 X")
    assert g.seconds_to_probe() == 15.0


def test_transient_probe_failure_keeps_the_delay_and_jitter_stays_in_bounds() -> None:
    clock = FakeClock()
    g = state(clock, jitter=0.99)
    g.block("404 NOT_FOUND")
    first = g.seconds_to_probe()
    assert first is not None
    assert 15.0 * 0.5 <= first < 15.0 * 1.5
    clock.advance(first)
    g.start_probe()
    g.finish_probe(ProbeOutcome.FAILED)
    assert g.delay_s == 15.0
    assert g.mode is GateMode.BLOCKED


def test_abandoned_probe_hands_the_turn_on_at_once() -> None:
    clock = FakeClock()
    g = state(clock)
    g.block("401 X")
    clock.advance(15.0)
    g.start_probe()
    g.finish_probe(ProbeOutcome.ABANDONED)
    assert g.probe_due()


def test_state_errors() -> None:
    clock = FakeClock()
    g = state(clock)
    with pytest.raises(RuntimeError, match="cannot probe"):
        g.start_probe()
    with pytest.raises(RuntimeError, match="no probe"):
        g.finish_probe(ProbeOutcome.ACCEPTED)
    with pytest.raises(ValueError, match="initial_s"):
        GateState(initial_s=10, max_s=5, clock=clock)


async def test_gate_lets_exactly_one_probe_through_then_releases_everyone() -> None:
    loop = asyncio.get_running_loop()
    g = Gate(GateState(initial_s=0.02, max_s=0.05, clock=loop.time, rng=lambda: 0.5))
    assert (await g.admit()).probe is False  # open
    assert g.block("401 X")
    waiters = [asyncio.create_task(g.admit()) for _ in range(5)]
    await asyncio.sleep(0.05)
    done = [w for w in waiters if w.done()]
    assert len(done) == 1
    assert done[0].result().probe
    assert g.mode is GateMode.PROBING
    g.finish(ProbeOutcome.BLOCKED, "401 X")  # the probe failed: back off, probe again
    await asyncio.sleep(0.1)
    done = [w for w in waiters if w.done()]
    assert len(done) == 2
    assert all(w.result().probe for w in done)
    g.finish(ProbeOutcome.ACCEPTED)
    await asyncio.sleep(0)
    assert all(w.done() for w in waiters)
    assert sum(w.result().probe for w in waiters) == 2
    assert g.state.mode.value == "open"


async def test_cancelled_prober_passes_the_turn_to_the_next_waiter() -> None:
    loop = asyncio.get_running_loop()
    g = Gate(GateState(initial_s=0.01, max_s=0.02, clock=loop.time, rng=lambda: 0.5))
    g.block("401 X")
    first = asyncio.create_task(g.admit())
    second = asyncio.create_task(g.admit())
    await asyncio.sleep(0.05)
    assert first.done()
    assert first.result().probe
    # The probing task goes away without an answer (shutdown, revoke).
    g.finish(ProbeOutcome.ABANDONED)
    await asyncio.sleep(0.02)
    assert second.done()
    assert second.result().probe
    g.close()


async def test_gate_reports_every_change() -> None:
    loop = asyncio.get_running_loop()
    seen: list[GateMode] = []
    g = Gate(
        GateState(initial_s=0.01, max_s=0.02, clock=loop.time, rng=lambda: 0.5),
        on_change=lambda s: seen.append(s.mode),
    )
    g.block("401 X")
    ticket = await asyncio.wait_for(g.admit(), 1.0)
    assert ticket.probe
    g.finish(ProbeOutcome.ACCEPTED)
    assert seen == [GateMode.BLOCKED, GateMode.PROBING, GateMode.OPEN]
