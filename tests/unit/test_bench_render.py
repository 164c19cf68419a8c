"""bench.run_all rewrites BENCHMARKS.md but carries the hand-run sandbox section over."""

from __future__ import annotations

from pathlib import Path

from bench import run_all


def stat(value: float) -> dict[str, float]:
    """One figure as run_all stores it: the same median, min and max."""
    return {"median": value, "min": value, "max": value}


def test_sandbox_section_survives_a_rewrite(tmp_path: Path) -> None:
    old = tmp_path / "BENCHMARKS.md"
    old.write_text(
        f"# Benchmarks\n\n## Figures\n\nold\n\n{run_all.SANDBOX_HEADING}\n\nmeasured\n\n\n"
        "## Raw results\n\nx\n"
    )
    kept = run_all.kept_section(old)
    assert kept == [run_all.SANDBOX_HEADING, "", "measured", ""]
    text = run_all.render({"nproc": "2"}, {}, kept)
    assert text.index("## Figures") < text.index(run_all.SANDBOX_HEADING)
    assert text.index("measured") < text.index("## Raw results")
    assert run_all.kept_section(tmp_path / "missing.md") == []


def test_sick_account_rows_render_with_and_without_results() -> None:
    empty = run_all.render({"nproc": "2"}, {})
    assert "11. Sick account" in empty
    assert "not run" in empty.split("11. Sick account", 1)[1].splitlines()[0]
    sick = {
        "park_to_alone": stat(0.97),
        "hold_to_alone": stat(0.0),
        "alone_events_per_s": stat(990.0),
        "park_events_per_s": stat(960.0),
        "hold_events_per_s": stat(0.0),
        "source_committed_share": stat(0.8),
        "parked_events": stat(20000.0),
        "recovered_s": stat(12.5),
        "lost": stat(0.0),
        "setup": "healthy account paced at 1,000 events/s",
        "command": "python -m bench.run_all --only sick",
        "mode": "full",
        "at": "2026-12-02T02:00:00+00:00",
    }
    text = run_all.render({"nproc": "2"}, {"sick": sick})
    line = next(row for row in text.splitlines() if "healthy account's rate beside it" in row)
    assert "**0.970** (0.970 - 0.970) x" in line
    assert "| met |" in line
    lost = next(row for row in text.splitlines() if "events lost" in row)
    assert "| met |" in lost


def test_engine_rows_show_the_naive_no_op_script_and_the_thread_split() -> None:
    engine = {
        "noop_cpu_us_per_event": stat(4.0),
        "naive_noop_cpu_us_per_event": stat(8.0),
        "noop_to_naive_noop": stat(0.5),
        **{
            f"{who}_{group}_cpu_us_per_event": stat(value)
            for who, base in (("noop", 1.0), ("naive_noop", 4.0))
            for group, value in (("loop", base), ("librdkafka", base + 1), ("other", base + 2))
        },
        "command": "python -m bench.run_all --only engine",
        "mode": "full",
        "at": "2026-12-02T19:00:00+00:00",
    }
    text = run_all.render({"nproc": "2"}, {"engine": engine})
    naive = next(row for row in text.splitlines() if "naive script (bench" in row)
    assert "**8.0** (8.0 - 8.0) µs / **0.50** (0.50 - 0.50) x" in naive
    split = next(row for row in text.splitlines() if "Where the no-op CPU goes" in row)
    assert "**1.0** (1.0 - 1.0), **2.0** (2.0 - 2.0), **3.0** (3.0 - 3.0) / **4.0**" in split
    empty = run_all.render({"nproc": "2"}, {})
    assert "not run" in next(row for row in empty.splitlines() if "naive script (bench" in row)


def test_v1_rows_put_before_and_after_side_by_side() -> None:
    v1 = {
        "base_commit": "a4c952f",
        "xconv_events": 1_000_000,
        "noop_events": 200_000,
        **{
            f"{pipeline}_{tree}_{key}": stat(value)
            for pipeline in ("xconv", "noop")
            for tree, value in (("v1", 40.0), ("v2", 10.0))
            for key in ("cpu_us_per_event", "events_per_s", "peak_rss_mb")
        },
        "xconv_cpu_ratio": stat(0.25),
        "noop_cpu_ratio": stat(0.25),
        "command": "python -m bench.run_all --only v1",
        "mode": "full",
        "at": "2026-12-02T19:00:00+00:00",
    }
    text = run_all.render({"nproc": "2"}, {"v1": v1})
    wanted = "end to end, 1,000,000 events: consumer CPU"
    cpu = next(row for row in text.splitlines() if wanted in row)
    assert "(a4c952f / this tree)" in cpu
    assert "**40.0** (40.0 - 40.0) / **10.0** (10.0 - 10.0) µs; **0.25** (0.25 - 0.25) x" in cpu
    assert "no-op transform, 200,000 events: peak RSS" in text
    empty = run_all.render({"nproc": "2"}, {})
    assert "not run / not run" in next(row for row in empty.splitlines() if "2c. Before" in row)
