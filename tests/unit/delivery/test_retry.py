from __future__ import annotations

import random

from consumer.delivery.retry import Backoff
from consumer.errors import RateLimitedError, ServerError, TransportError


def test_full_jitter_within_exponential_ceiling() -> None:
    b = Backoff(base_s=0.5, cap_s=60.0, rng=random.Random(1))
    for attempt in range(1, 12):
        ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
        delays = [b.delay_for(TransportError("t"), attempt) for _ in range(200)]
        assert all(0.0 <= d < ceiling for d in delays)
        assert max(delays) > ceiling * 0.5  # jitter spreads over the range


def test_cap_holds_for_huge_attempts() -> None:
    b = Backoff(base_s=0.5, cap_s=60.0, rng=lambda: 0.999)
    assert b.delay_for(None, 10_000) < 60.0
    assert b.ceiling(10_000) == 60.0


def test_server_hint_is_a_floor() -> None:
    b = Backoff(base_s=0.5, cap_s=60.0, rng=lambda: 0.0)
    assert b.delay_for(RateLimitedError("429", retry_after=42.0), 1) >= 42.0
    assert b.delay_for(ServerError(503, "x", retry_after=7.0), 3) >= 7.0
    r = random.Random(3)
    b2 = Backoff(rng=r)
    for attempt in range(1, 20):
        d = b2.delay_for(RateLimitedError("429", retry_after=120.0), attempt)
        assert 120.0 <= d <= 121.0


def test_accepts_callable_or_random() -> None:
    values = iter([0.5, 0.25])
    b = Backoff(base_s=1.0, cap_s=10.0, rng=lambda: next(values))
    assert b.delay_for(None, 1) == 0.5
    assert b.delay_for(None, 2) == 0.5  # 0.25 * 2
