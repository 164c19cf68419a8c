"""bench.run_all rewrites BENCHMARKS.md but carries the hand-run sandbox section over."""

from __future__ import annotations

from pathlib import Path

from bench import run_all


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
