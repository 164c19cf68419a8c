"""A/B of the engine's own cost: the no-op-transform consumer of two source trees.

Not a test. Runs ``bench/noop_engine.py`` of this tree and of ``--base`` (a checkout of
another commit, e.g. ``git archive COMMIT | tar -x -C /tmp/base``) on the same broker,
the same event pool and the same sandbox configuration, alternating, ``--rounds``
times, and prints consumer CPU per event for each and the ratio of the medians.

    python -m bench.engine_ab --base /tmp/base --events 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from bench import e2e
from bench.common import RUN_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree's root")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=RUN_ROOT / "engine-ab")
    args = parser.parse_args(argv)
    base = str(args.base.resolve())
    # The consumer runs from the base tree's root, so ``-m`` imports that tree's code.
    programs = {
        "base": ["sh", "-c", f'cd "{base}" && exec "$0" -m bench.noop_engine "$@"', sys.executable],
        "this": [sys.executable, "-m", "bench.noop_engine"],
    }
    suite = e2e.Suite(args.workdir)
    pool = e2e.Pool.make(20_000)
    figures: dict[str, list[float]] = {name: [] for name in programs}
    try:
        for i in range(args.rounds):
            for name, program in programs.items():
                e2e.PIPELINES["noop"] = program
                got = e2e.throughput(suite, pool, args.events, pipeline="noop", paced=False)
                figures[name].append(got["cpu_us_per_event"])
                print(
                    f"round {i + 1} {name}: {got['cpu_us_per_event']:.2f} µs/event, "
                    f"{got['events_per_s']:,.0f} events/s",
                    flush=True,
                )
    finally:
        suite.close()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name}: median {medians[name]:.2f} µs/event {[round(v, 2) for v in values]}")
    print(f"ratio this/base: {medians['this'] / medians['base']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
