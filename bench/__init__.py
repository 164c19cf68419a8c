"""Benchmarks (never pass/fail tests) and the chaos harness; see BENCHMARKS.md."""
