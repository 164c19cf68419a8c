"""Rate limiter (fake clock), seeded faults and the counters, without HTTP."""

from __future__ import annotations

import orjson
import pytest

from consumer.sandbox.config import FaultConfig, RateLimitConfig
from consumer.sandbox.faults import FaultInjector, FaultKind
from consumer.sandbox.ratelimit import FixedWindowLimiter
from consumer.sandbox.state import SandboxState
from tests.fakes import FakeClock


def test_requests_budget_per_window() -> None:
    clock = FakeClock(1_700_000_000.0)
    limiter = FixedWindowLimiter(RateLimitConfig(requests_per_window=3, window_s=900), clock)
    decisions = [limiter.acquire_request() for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].exhausted == "requests"
    assert {d.reset for d in decisions} == {1_700_000_900}
    assert decisions[0].headers() == {
        "x-rate-limit-limit": "3",
        "x-rate-limit-remaining": "2",
        "x-rate-limit-reset": "1700000900",
    }
    clock.now += 899.5
    assert not limiter.acquire_request().allowed
    clock.now += 0.5  # the window is over: a new one opens
    fresh = limiter.acquire_request()
    assert (fresh.allowed, fresh.remaining, fresh.reset) == (True, 2, 1_700_001_800)


def test_peek_spends_nothing() -> None:
    limiter = FixedWindowLimiter(RateLimitConfig(requests_per_window=2), FakeClock(1_700_000_000.0))
    assert limiter.peek().remaining == 2
    assert limiter.peek().remaining == 2
    limiter.acquire_request()
    assert limiter.peek().remaining == 1


def test_events_budget_refuses_whole_requests() -> None:
    limiter = FixedWindowLimiter(
        RateLimitConfig(events_per_window=1000), FakeClock(1_700_000_000.0)
    )
    assert limiter.acquire_events(500).allowed
    assert limiter.acquire_events(500).allowed
    refused = limiter.acquire_events(1)
    assert (refused.allowed, refused.exhausted) == (False, "events")


def test_disabled_limiter_never_refuses() -> None:
    limiter = FixedWindowLimiter(
        RateLimitConfig(enabled=False, requests_per_window=1, events_per_window=1),
        FakeClock(1_700_000_000.0),
    )
    assert all(limiter.acquire_request().allowed for _ in range(10))
    assert limiter.acquire_events(500).allowed


def test_reset_clears_the_window() -> None:
    limiter = FixedWindowLimiter(RateLimitConfig(requests_per_window=1), FakeClock(1_700_000_000.0))
    limiter.acquire_request()
    assert not limiter.acquire_request().allowed
    limiter.reset()
    assert limiter.acquire_request().allowed


def test_same_seed_same_decisions() -> None:
    settings = FaultConfig(error_500=0.2, drop=0.2, hang=0.1, latency_jitter_ms=50)
    first = [FaultInjector(settings, 7).decide() for _ in range(1)]
    a, b = FaultInjector(settings, 7), FaultInjector(settings, 7)
    run_a = [a.decide() for _ in range(200)]
    run_b = [b.decide() for _ in range(200)]
    assert run_a == run_b
    assert run_a[0] == first[0]
    other = FaultInjector(settings, 8)
    assert [other.decide() for _ in range(200)] != run_a


def test_shares_are_respected() -> None:
    settings = FaultConfig(error_500=0.1, error_503=0.2, burst_429=0.3)
    injector = FaultInjector(settings, 1)
    kinds = [injector.decide().kind for _ in range(20_000)]
    share = {kind: kinds.count(kind) / len(kinds) for kind in FaultKind}
    assert share[FaultKind.ERROR_500] == pytest.approx(0.1, abs=0.02)
    assert share[FaultKind.ERROR_503] == pytest.approx(0.2, abs=0.02)
    assert share[FaultKind.BURST_429] == pytest.approx(0.3, abs=0.02)
    assert share[FaultKind.NONE] == pytest.approx(0.4, abs=0.02)
    assert share[FaultKind.DROP] == 0


def test_latency_is_fixed_plus_jitter() -> None:
    injector = FaultInjector(FaultConfig(latency_ms=100, latency_jitter_ms=50), 3)
    latencies = [injector.decide().latency_s for _ in range(500)]
    assert min(latencies) >= 0.1
    assert max(latencies) <= 0.15
    assert max(latencies) - min(latencies) > 0.04


def test_configure_with_seed_restarts_the_sequence() -> None:
    settings = FaultConfig(error_500=0.5)
    injector = FaultInjector(settings, 5)
    start = [injector.decide() for _ in range(20)]
    injector.configure(FaultConfig(error_500=0.5, reject_conversion_ids=["x"]), seed=5)
    assert [injector.decide() for _ in range(20)] == start
    assert injector.reject_ids == frozenset({"x"})


def test_fault_shares_cannot_exceed_one() -> None:
    with pytest.raises(ValueError, match="more than 1"):
        FaultConfig(error_500=0.6, drop=0.5)


def test_state_counts_ids_per_account() -> None:
    state = SandboxState(recent_capacity=3)
    state.record_accepted("a1", "p1", [{"conversion_id": "x"}, {"conversion_id": "y"}], 1.0)
    state.record_accepted("a1", "p1", [{"conversion_id": "x"}, {}], 2.0)
    state.record_accepted("a2", "p2", [{"conversion_id": "x"}], 3.0)
    state.record_status(200, "a1")
    state.record_status(0, "a2")
    assert state.conversion_ids("a1") == {"x": 2, "y": 1}
    assert state.conversion_ids() == {"x": 3, "y": 1}
    stats = state.as_json()
    assert stats["accepted_conversions"] == 5
    assert stats["unique_conversion_ids"] == 2
    assert stats["duplicate_conversion_ids"] == 2
    assert stats["requests_by_status"] == {"dropped": 1, "200": 1}
    assert stats["accounts"]["a1"]["duplicate_conversion_ids"] == 1
    assert stats["accounts"]["a2"]["requests_by_status"] == {"dropped": 1}
    recent = state.recent_conversions(10)
    assert [(r.account_id, r.conversion.get("conversion_id")) for r in recent] == [
        ("a1", "x"),
        ("a1", None),
        ("a2", "x"),
    ]
    assert [r.account_id for r in state.recent_conversions(10, "a1")] == ["a1", "a1"]
    state.reset()
    assert state.as_json()["accepted_conversions"] == 0
    assert state.recent_conversions(10) == []


def test_state_handles_a_million_ids() -> None:
    state = SandboxState(recent_capacity=1000)
    for batch in range(2000):
        state.record_accepted(
            "a1", "p1", [{"conversion_id": f"{batch}-{i}"} for i in range(500)], 0.0
        )
    ids = state.conversion_ids()
    assert len(ids) == 1_000_000
    assert len(orjson.dumps({"conversion_ids": ids})) > 10_000_000
    assert len(state.recent_conversions(5000)) == 1000
