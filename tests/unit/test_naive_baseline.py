"""The naive baseline's commit order and section 8 of BENCHMARKS.md (bench/, not the service)."""

from __future__ import annotations

from bench.naive_baseline import InOrderCommits
from bench.run_all import render


def test_offsets_are_released_in_read_order_whatever_the_finish_order() -> None:
    order = InOrderCommits()
    first = order.add({("t", 0): 10, ("t", 1): 5})
    second = order.add({("t", 0): 20})
    third = order.add({("t", 1): 9})
    second.done = True
    assert order.ready() == {}  # the first batch is still out: nothing is safe
    first.done = True
    assert order.ready() == {("t", 0): 20, ("t", 1): 5}
    assert order.ready() == {}
    third.done = True
    assert order.ready() == {("t", 1): 9}


def test_render_without_and_with_the_side_by_side_figures() -> None:
    assert "| 8. Side by side (): consumer CPU per event" in render({}, {})

    def stat(value: float) -> dict[str, float]:
        return {"median": value, "min": value, "max": value}

    naive = {
        **{
            f"{p}_cpu_us_per_event": stat(v) for p, v in (("xconv", 10), ("naive", 40), ("noop", 5))
        },
        **{
            f"{p}_{k}": stat(1.0)
            for p in ("xconv", "naive", "noop")
            for k in ("events_per_s", "peak_rss_mb")
        },
        "xconv_to_naive_cpu": stat(0.25),
        "transform_us_per_event": stat(2.0),
        "transform_command": "python bench/transform_bench.py",
        "sandbox_command": "python bench/sandbox_bench.py",
        "oauth_conversions_per_s": 50_000.0,
        "token_conversions_per_s": 60_000.0,
        "events": 1000,
        "rounds": 3,
        "verified_runs": 9,
        "command": "python -m bench.run_all --only naive",
        "mode": "full",
        "at": "2026-12-01T00:00:00+00:00",
    }
    text = render({}, {"naive": naive})
    assert "**0.25** (0.25 - 0.25) x | ≤ 0.35 x | met |" in text
    assert "**50,000** (OAuth 1.0a)" in text
    assert "| 9 of 9 |" in text
