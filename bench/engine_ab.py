"""A/B of two source trees' consumers on the same broker, pool and sandbox.

Not a test. Runs the consumer of this tree and of ``--base`` (a checkout of another
commit, e.g. ``git archive COMMIT | tar -x -C /tmp/base``) alternately, ``--rounds``
times, and prints consumer CPU per event and events/s for each and the ratio of the
medians. ``--pipeline noop`` (default) runs each tree's engine with the no-op transform
of bench/noop_engine.py (this tree's file, the other tree's package): the engine's own
cost. ``--pipeline xconv`` runs each tree's ``xconv run`` as it is: the end-to-end
figure.

    python -m bench.engine_ab --base /tmp/base --events 200000 --rounds 3
    python -m bench.engine_ab --base /tmp/base --pipeline xconv --events 1000000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from bench import e2e
from bench.common import REPO_ROOT, RUN_ROOT

NOOP_SCRIPT = REPO_ROOT / "bench" / "noop_engine.py"


def programs(base: Path, pipeline: str) -> dict[str, list[str]]:
    """The command (before ``run --config FILE``) for each tree. The base tree's consumer
    runs from its own root, so its ``consumer`` package is the one imported."""
    root = str(base.resolve())
    if pipeline == "noop":
        script = f'cd "{root}" && PYTHONPATH="{root}" exec "$0" "{NOOP_SCRIPT}" "$@"'
        this = [sys.executable, "-m", "bench.noop_engine"]
    else:
        script = f'cd "{root}" && exec "$0" -m consumer "$@"'
        this = [sys.executable, "-m", "consumer"]
    return {"base": ["sh", "-c", script, sys.executable], "this": this}


def side_by_side(
    suite: e2e.Suite, pool: e2e.Pool, base: Path, events: int, rounds: int, pipeline: str
) -> dict[str, list[dict[str, float]]]:
    """``rounds`` interleaved runs of each tree's ``pipeline``; ``e2e.throughput`` rows
    (each checked for loss) per tree."""
    commands = programs(base, pipeline)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    saved = e2e.PIPELINES[pipeline]
    try:
        for i in range(rounds):
            for name, program in commands.items():
                e2e.PIPELINES[pipeline] = program
                got = e2e.throughput(suite, pool, events, pipeline=pipeline, paced=False)
                rows[name].append(got)
                print(
                    f"round {i + 1} {name} ({pipeline}): {got['cpu_us_per_event']:.2f} µs/event,"
                    f" {got['events_per_s']:,.0f} events/s, {got['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    finally:
        e2e.PIPELINES[pipeline] = saved
    return rows


def checkout(commit: str, into: Path) -> Path:
    """A clean tree of ``commit`` (``git archive``) at ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree's root")
    parser.add_argument("--pipeline", choices=["noop", "xconv"], default="noop")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=RUN_ROOT / "engine-ab")
    args = parser.parse_args(argv)
    suite = e2e.Suite(args.workdir)
    pool = e2e.Pool.make(20_000)
    try:
        rows = side_by_side(suite, pool, args.base, args.events, args.rounds, args.pipeline)
    finally:
        suite.close()
    medians = {
        name: statistics.median(r["cpu_us_per_event"] for r in runs) for name, runs in rows.items()
    }
    for name, runs in rows.items():
        cpu = [round(r["cpu_us_per_event"], 2) for r in runs]
        print(f"{name}: median {medians[name]:.2f} µs/event {cpu}")
    print(f"ratio this/base: {medians['this'] / medians['base']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
