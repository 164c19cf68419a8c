"""Run every benchmark and rewrite BENCHMARKS.md (a table, the machine, a command per figure).

    python -m bench.run_all [--quick] [--only e2e,pacing,...] [--runs N] [--events N]

Each figure is the median of several runs with min and max. ``--quick`` uses smaller
sizes and fewer runs (for iterating); the published file says which mode produced it.
With ``--only``, figures of the scenarios not run are kept from the previous results
file (``bench/results.json``), so one scenario can be refreshed on its own.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import (
    chaos,
    consume_floor,
    e2e,
    engine_ab,
    http_floor,
    replica_share,
    sick_account,
)
from bench.common import REPO_ROOT, RUN_ROOT, machine

RESULTS = REPO_ROOT / "bench" / "results.json"
OUTPUT = REPO_ROOT / "BENCHMARKS.md"
SCENARIOS = (
    "transform",
    "e2e",
    "engine",
    "v1",
    "naive",
    "pacing",
    "outage",
    "latency",
    "accounts",
    "chaos",
    "replicas",
    "sick",
)


#: The last commit before engine v2 (issue 9): the 789-line ``Engine`` and the Python
#: transform only. Scenario ``v1`` runs it beside this tree.
V1_COMMIT = "a4c952f"


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _repeat(runs: int, one: Callable[[], dict[str, float]], label: str) -> dict[str, Any]:
    """Run ``one`` ``runs`` times; every numeric key gets median/min/max."""
    rows: list[dict[str, float]] = []
    for i in range(runs):
        started = time.monotonic()
        row = one()
        rows.append(row)
        print(
            f"  {label} run {i + 1}/{runs} ({time.monotonic() - started:.0f}s): {row}", flush=True
        )
    return {key: _stats([float(r[key]) for r in rows]) for key in rows[0]}


def run_transform(runs: int, quick: bool) -> dict[str, Any]:
    argv = [sys.executable, "bench/transform_bench.py", "--runs", str(runs), "--no-profile"]
    if quick:
        argv += ["--events", "5000"]
    out = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    match = re.search(r"median ([\d.]+) us \(min ([\d.]+), max ([\d.]+)\)", out)
    if match is None:
        raise RuntimeError(f"unexpected transform_bench output:\n{out}")
    median, low, high = map(float, match.groups())
    ref = re.search(
        r"python reference CPU per event: median ([\d.]+) us \(min ([\d.]+), max ([\d.]+)\)", out
    )
    reference: dict[str, Any] = {}
    if ref is not None:
        r_median, r_low, r_high = map(float, ref.groups())
        reference = {"reference_us_per_event": {"median": r_median, "min": r_low, "max": r_high}}
    return {
        "us_per_event": {"median": median, "min": low, "max": high},
        **reference,
        "command": " ".join(["python", *argv[1:]]),
        "output": out.strip(),
    }


def run_sandbox_ceiling(runs: int, quick: bool) -> dict[str, Any]:
    """bench/sandbox_bench.py, short: full 500-event requests the sandbox answers per second."""
    duration = "2" if quick else "3"
    argv = [sys.executable, "bench/sandbox_bench.py", "--runs", str(runs), "--duration", duration]
    out = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    figures: dict[str, Any] = {}
    for mode in ("token", "oauth"):
        for validation, suffix in (("on", ""), ("off", "_no_validation")):
            match = re.search(
                rf"{mode}, validation {validation}: median +[\d.]+ req/s \(([\d,]+) conv/s\)", out
            )
            if match is None:
                raise RuntimeError(f"unexpected sandbox_bench output:\n{out}")
            figures[f"{mode}{suffix}_conversions_per_s"] = float(match.group(1).replace(",", ""))
    figures["command"] = " ".join(["python", *argv[1:]])
    return figures


def side_by_side(
    suite: e2e.Suite, pool: e2e.Pool, events: int, runs: int, quick: bool
) -> dict[str, Any]:
    """xconv, the naive baseline and xconv with a no-op transform in interleaved rounds
    (load on this shared machine hits all three alike), plus the transform alone and the
    sandbox's ceiling. Every run checks delivery and commits (``e2e.verify`` raises)."""
    # name -> (pipeline, sandbox validation); "ceiling": xconv with the sandbox's
    # validation off, so the sandbox does next to nothing: the consumer's own ceiling.
    # The short ceilings first: a broken one fails the scenario before the long rounds.
    transform = run_transform(max(runs, 5), quick)
    sandbox = run_sandbox_ceiling(runs, quick)
    order = {
        "xconv": ("xconv", True),
        "naive": ("naive", True),
        "noop": ("noop", True),
        "ceiling": ("xconv", False),
    }
    rows: list[dict[str, float]] = []
    for i in range(runs):
        row: dict[str, float] = {}
        for name, (pipeline, validation) in order.items():
            got = e2e.throughput(
                suite,
                pool,
                events,
                pipeline=pipeline,
                sandbox_validation=validation,
                paced=False,  # the naive baseline has no pacing: nobody waits on a budget
            )
            for key in (
                "events_per_s",
                "cpu_us_per_event",
                "peak_rss_mb",
                "consumer_cores",
                "sandbox_cores",
            ):
                row[f"{name}_{key}"] = got[key]
        row["xconv_to_naive_cpu"] = row["xconv_cpu_us_per_event"] / row["naive_cpu_us_per_event"]
        row["noop_to_naive_cpu"] = row["noop_cpu_us_per_event"] / row["naive_cpu_us_per_event"]
        print(f"  naive round {i + 1}/{runs}: {row}", flush=True)
        rows.append(row)
    out: dict[str, Any] = {key: _stats([r[key] for r in rows]) for key in rows[0]}
    out["events"] = events
    out["rounds"] = runs
    out["verified_runs"] = runs * len(order)  # throughput() raised otherwise
    out["transform_us_per_event"] = transform["us_per_event"]
    out["transform_command"] = transform["command"]
    out["sandbox_command"] = sandbox.pop("command")
    out.update(sandbox)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--events", type=int, default=None, help="end-to-end size")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    quick = args.quick
    runs = args.runs or (2 if quick else 3)
    events = args.events or (100_000 if quick else 1_000_000)
    mode = "quick" if quick else "full"
    base_cmd = "python -m bench.run_all" + (" --quick" if quick else "")

    previous: dict[str, Any] = {}
    if RESULTS.is_file():
        previous = orjson.loads(RESULTS.read_bytes())
    results: dict[str, Any] = previous.get("scenarios", {})
    failures: list[str] = []

    suite: e2e.Suite | None = None
    pool: e2e.Pool | None = None

    def need_suite() -> tuple[e2e.Suite, e2e.Pool]:
        nonlocal suite, pool
        if suite is None or pool is None:
            print("starting broker; generating the event pool...", flush=True)
            suite = e2e.Suite(RUN_ROOT / "suite")
            pool = e2e.Pool.make(20_000 if not quick else 10_000)
        return suite, pool

    def record(name: str, command: str, body: Callable[[], dict[str, Any]]) -> None:
        print(f"== {name}", flush=True)
        try:
            figures = body()
        except Exception as exc:  # one broken scenario must not hide the others
            traceback.print_exc()
            failures.append(f"{name}: {exc}")
            return
        figures["command"] = figures.get("command", command)
        figures["mode"] = mode
        figures["at"] = datetime.now(UTC).isoformat(timespec="seconds")
        figures["cpu"] = machine().get("cpu", "")  # machines change between sessions
        results[name] = figures

    try:
        if "transform" in only:
            record("transform", "", lambda: run_transform(max(runs, 5), quick))
        if "e2e" in only:
            cmd = f"{base_cmd} --only e2e --events {events} --runs {runs}"

            def run_e2e() -> dict[str, Any]:
                s, p = need_suite()
                return _repeat(runs, lambda: e2e.throughput(s, p, events), "e2e")

            record("e2e", cmd, run_e2e)
        if "engine" in only:
            cmd = f"{base_cmd} --only engine --events {events} --runs {runs}"

            def run_engine() -> dict[str, Any]:
                # Interleaved rounds, the real transform and the no-op one side by side,
                # so load on this noisy machine hits both alike; read the ratio.
                s, p = need_suite()
                rows: list[dict[str, float]] = []
                for i in range(runs):
                    full = e2e.throughput(s, p, events, paced=False)
                    noop = e2e.throughput(s, p, events, pipeline="noop", paced=False)
                    # The bare AIOConsumer loop on the same machine, same round: the part
                    # of the engine's figure no Python consumer can avoid.
                    floor = consume_floor.floor_us_per_event(s, p, events)
                    # The engine's own client alone, same round: sending 500-event bodies.
                    http = http_floor.floor_us_per_event(s, p, events)
                    # The naive confluent-kafka + aiohttp script with the same no-op
                    # transform, same round: what such a script pays beside the transform.
                    naive = e2e.throughput(s, p, events, pipeline="naive-noop", paced=False)
                    row = {
                        "full_cpu_us_per_event": full["cpu_us_per_event"],
                        "noop_cpu_us_per_event": noop["cpu_us_per_event"],
                        "full_events_per_s": full["events_per_s"],
                        "noop_events_per_s": noop["events_per_s"],
                        "noop_share": noop["cpu_us_per_event"] / full["cpu_us_per_event"],
                        "floor_cpu_us_per_event": floor,
                        "noop_above_floor_us": noop["cpu_us_per_event"] - floor,
                        "http_floor_cpu_us_per_event": http,
                        "noop_above_floors_us": noop["cpu_us_per_event"] - floor - http,
                        "naive_noop_cpu_us_per_event": naive["cpu_us_per_event"],
                        "noop_to_naive_noop": noop["cpu_us_per_event"] / naive["cpu_us_per_event"],
                        **{
                            f"{who}_{group}_cpu_us_per_event": run[f"{group}_cpu_us_per_event"]
                            for who, run in (("noop", noop), ("naive_noop", naive))
                            for group in ("loop", "librdkafka", "other")
                        },
                    }
                    print(f"  engine round {i + 1}/{runs}: {row}", flush=True)
                    rows.append(row)
                return {key: _stats([r[key] for r in rows]) for key in rows[0]}

            record("engine", cmd, run_engine)
        if "v1" in only:
            cmd = f"{base_cmd} --only v1 --events {events} --runs {runs}"

            def run_v1() -> dict[str, Any]:
                # Before and after engine v2, side by side on one broker: each tree's
                # ``xconv run`` end to end, and each tree's engine with the no-op transform.
                s, p = need_suite()
                base = engine_ab.checkout(V1_COMMIT, RUN_ROOT / f"v1-{V1_COMMIT}")
                out: dict[str, Any] = {"base_commit": V1_COMMIT}
                for pipeline, size in (("xconv", events), ("noop", min(events, 200_000))):
                    rows = engine_ab.side_by_side(s, p, base, size, runs, pipeline)
                    for tree, name in (("base", "v1"), ("this", "v2")):
                        for key in ("cpu_us_per_event", "events_per_s", "peak_rss_mb"):
                            out[f"{pipeline}_{name}_{key}"] = _stats([r[key] for r in rows[tree]])
                    out[f"{pipeline}_cpu_ratio"] = _stats(
                        [
                            new["cpu_us_per_event"] / old["cpu_us_per_event"]
                            for old, new in zip(rows["base"], rows["this"], strict=True)
                        ]
                    )
                    out[f"{pipeline}_events"] = size
                return out

            record("v1", cmd, run_v1)
        if "naive" in only:
            cmd = f"{base_cmd} --only naive --events {events} --runs {runs}"

            def run_naive() -> dict[str, Any]:
                s, p = need_suite()
                return side_by_side(s, p, events, runs, quick)

            record("naive", cmd, run_naive)
        if "pacing" in only:
            # Windows long enough that the header's whole-second reset is a small error
            # (the example budget: 1,000 requests per 60 s).
            budget = 300 if quick else 1000
            window = 30.0 if quick else 60.0
            windows = 2
            for headers in (True, False):
                name = "pacing_headers" if headers else "pacing_no_headers"
                cmd = f"{base_cmd} --only pacing --runs {runs}"

                def run_pacing(headers: bool = headers, name: str = name) -> dict[str, Any]:
                    s, p = need_suite()
                    out = _repeat(
                        runs,
                        lambda: e2e.pacing(
                            s, p, headers=headers, requests=budget, window_s=window, windows=windows
                        ),
                        name,
                    )
                    out["setup"] = f"{budget} requests per {window:.0f} s window, {windows} windows"
                    return out

                record(name, cmd, run_pacing)
        if "outage" in only:
            size = 100_000 if quick else 500_000
            outage_s = 15.0 if quick else 30.0
            cmd = f"{base_cmd} --only outage --runs {runs}"

            def run_outage() -> dict[str, Any]:
                s, p = need_suite()
                valid_pool = e2e.Pool(
                    [k for k, ok in zip(p.keys, p.valid, strict=True) if ok],
                    [v for v, ok in zip(p.values, p.valid, strict=True) if ok],
                    [True] * sum(p.valid),
                )
                return _repeat(
                    runs,
                    lambda: e2e.outage(s, valid_pool, events=size, outage_s=outage_s),
                    "outage",
                )

            record("outage", cmd, run_outage)
        if "latency" in only:
            rate, seconds = 2000.0, (10.0 if quick else 30.0)
            cmd = f"{base_cmd} --only latency --runs {runs}"

            def run_latency() -> dict[str, Any]:
                s, p = need_suite()
                return _repeat(
                    runs, lambda: e2e.latency(s, p, rate=rate, seconds=seconds), "latency"
                )

            record("latency", cmd, run_latency)
        if "accounts" in only:
            per_account = 2_000 if quick else 5_000
            for throttle in (False, True):
                name = "accounts_throttled" if throttle else "accounts_baseline"
                cmd = f"{base_cmd} --only accounts --runs {runs}"

                def run_accounts(throttle: bool = throttle, name: str = name) -> dict[str, Any]:
                    s, _ = need_suite()
                    return _repeat(
                        runs,
                        lambda: e2e.many_accounts(
                            s, accounts=20, events_per_account=per_account, throttle=throttle
                        ),
                        name,
                    )

                record(name, cmd, run_accounts)
        if "chaos" in only:
            record("chaos", "", lambda: run_chaos_scenario(quick))
        if "replicas" in only:
            # Three replicas in one group on one account, headers on (issue 12).
            budget, window, windows = (300, 30.0, 3) if quick else (600, 60.0, 4)
            cmd = f"{base_cmd} --only replicas --runs {runs}"

            def run_replicas() -> dict[str, Any]:
                s, _ = need_suite()
                out = _repeat(
                    runs,
                    lambda: replica_share.figures_dict(
                        replica_share.run(
                            s, replicas=3, requests=budget, window_s=window, windows=windows
                        )
                    ),
                    "replicas",
                )
                out["setup"] = f"{budget} requests per {window:.0f} s window, {windows} windows"
                return out

            record("replicas", cmd, run_replicas)
        if "sick" in only:
            # A sick account (500 forever) beside a healthy one, alone / park / hold.
            sizes = sick_account.summary_args(quick)
            cmd = f"{base_cmd} --only sick --runs {runs}"

            def run_sick() -> dict[str, Any]:
                s, _ = need_suite()
                valid = sick_account.valid_pool(10_000 if quick else 20_000)
                out = _repeat(runs, lambda: sick_account.round_figures(s, valid, **sizes), "sick")
                out["setup"] = (
                    f"healthy account paced at {sizes['rate']:,.0f} events/s, "
                    f"{sizes['measure_s']:.0f} s measured after {sizes['warmup_s']:.0f} s, "
                    f"max_buffered_events {sick_account.MAX_BUFFERED:,}, "
                    f"park_after_s {sick_account.PARK_AFTER_S:.0f}"
                )
                return out

            record("sick", cmd, run_sick)
    finally:
        if suite is not None:
            suite.close()

    info = machine()
    RESULTS.write_bytes(
        orjson.dumps({"machine": info, "scenarios": results}, option=orjson.OPT_INDENT_2)
    )
    OUTPUT.write_text(render(info, results, kept_section(OUTPUT)))
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)} and {RESULTS.relative_to(REPO_ROOT)}")
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


def _v1_rows(v: dict[str, Any], command: str) -> list[tuple[str, str, str, str, str]]:
    """Section 2c: engine v1 (before issue 9) and this tree, side by side in one run."""

    def pair(pipeline: str, key: str, digits: int) -> str:
        return " / ".join(_fmt(v.get(f"{pipeline}_{tree}_{key}"), digits) for tree in ("v1", "v2"))

    base = v.get("base_commit", "?")
    out: list[tuple[str, str, str, str, str]] = []
    for pipeline, what in (("xconv", "`xconv run` end to end"), ("noop", "no-op transform")):
        size = v.get(f"{pipeline}_events")
        label = f"2c. Before / after engine v2 ({base} / this tree), {what}" + (
            f", {size:,} events" if size else ""
        )
        out += [
            (f"{label}: events/s", pair(pipeline, "events_per_s", 0), "", "", command),
            (
                f"{label}: consumer CPU per event; after / before (per round)",
                pair(pipeline, "cpu_us_per_event", 1)
                + " µs; "
                + _fmt(v.get(f"{pipeline}_cpu_ratio"), 2)
                + " x",
                "",
                "",
                command,
            ),
            (f"{label}: peak RSS", pair(pipeline, "peak_rss_mb", 0) + " MB", "", "", command),
        ]
    return out


def _chaos_rows(c: dict[str, Any] | None, command: str) -> list[tuple[str, str, str, str, str]]:
    if not c:
        return [("9. Chaos (SIGKILLs, a broker restart, API faults)", "not run", "", "", "")]
    return [
        (
            f"9. Chaos, {c['events']:,} events, {c['kills']} SIGKILLs, "
            f"{c['broker_restarts']} broker restart: valid events lost",
            f"**{c['lost']}**",
            "0",
            _met(c["lost"] == 0),
            command,
        ),
        (
            "9. Chaos: duplicates accepted (re-deliveries after kills) / per kill",
            f"**{c['duplicates']:,}** / {c['duplicates_per_kill']:,.0f}",
            f"≤ {c['duplicate_bound']:,} (bound)",
            _met(c["duplicates"] <= c["duplicate_bound"]),
            command,
        ),
    ]


def run_chaos_scenario(quick: bool) -> dict[str, Any]:
    """The chaos harness at full size (its own broker): SIGKILLs, a broker restart, faults."""
    events, kills = (50_000, 3) if quick else (200_000, 6)
    result = chaos.run_chaos(events, kills, seed=1, log=lambda line: print(line, flush=True))
    if not result.ok:
        raise RuntimeError("chaos: " + "; ".join(result.failures))
    return {
        "command": f"python -m bench.chaos --events {events} --kills {kills} --seed 1",
        "events": events,
        "kills": len(result.kills),
        "broker_restarts": result.broker_restarts,
        "lost": result.missing,
        "duplicates": result.duplicates,
        "duplicate_bound": result.duplicate_bound,
        "duplicates_per_kill": result.duplicates / max(1, len(result.kills)),
        "dead_letter_records": result.dlq_records,
        "seconds": result.seconds,
    }


# --------------------------------------------------------------------------------------
# BENCHMARKS.md
# --------------------------------------------------------------------------------------


def _fmt(stat: dict[str, float] | None, digits: int = 0, scale: float = 1.0) -> str:
    if not stat:
        return "not run"
    m, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
    return f"**{m:,.{digits}f}** ({lo:,.{digits}f} - {hi:,.{digits}f})"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def _naive_rows(n: dict[str, Any], command: str) -> list[tuple[str, str, str, str, str]]:
    """Section 8: xconv beside the naive baseline (bench/naive_baseline.py)."""

    def three(key: str, digits: int) -> str:
        return " / ".join(_fmt(n.get(f"{p}_{key}"), digits) for p in ("xconv", "naive", "noop"))

    ratio = n.get("xconv_to_naive_cpu", {}).get("median")
    at = f" ({n.get('mode')}, {n.get('at')})" if n else ""
    sandbox = (
        f"**{n['oauth_conversions_per_s']:,.0f}** (OAuth 1.0a) / "
        f"**{n['token_conversions_per_s']:,.0f}** (X-Pixel-Token) conversions/s"
        + (
            f"; validation off: {n['oauth_no_validation_conversions_per_s']:,.0f} / "
            f"{n['token_no_validation_conversions_per_s']:,.0f}"
            if "oauth_no_validation_conversions_per_s" in n
            else ""
        )
        if "oauth_conversions_per_s" in n
        else "not run"
    )
    runs = n.get("verified_runs")
    setup = f"{n.get('events', 0):,} events, {n.get('rounds', 0)} interleaved rounds" if n else ""
    return [
        (
            f"8. Side by side ({setup}): consumer CPU per event, "
            "xconv / naive baseline / xconv with a no-op transform",
            three("cpu_us_per_event", 1) + " µs",
            "",
            "",
            command,
        ),
        (
            "8. xconv's consumer CPU per event / the naive baseline's (per round)",
            _fmt(n.get("xconv_to_naive_cpu"), 2) + " x",
            "≤ 0.35 x",
            _met(None if ratio is None else ratio <= 0.35),
            command,
        ),
        (
            "8. Throughput, xconv / naive baseline / no-op transform",
            three("events_per_s", 0) + " events/s",
            "",
            "",
            command,
        ),
        (
            "8. Cores used (CPU s / wall s), consumer: xconv / naive / no-op; sandbox: same order",
            three("consumer_cores", 2) + "; " + three("sandbox_cores", 2),
            "",
            "",
            command,
        ),
        ("8. Peak RSS, xconv / naive / no-op", three("peak_rss_mb", 0) + " MB", "", "", command),
        (
            "8. The consumer's own ceiling: xconv with the sandbox's validation off, "
            "events/s and consumer CPU per event",
            _fmt(n.get("ceiling_events_per_s"), 0)
            + " events/s, "
            + _fmt(n.get("ceiling_cpu_us_per_event"), 1)
            + " µs",
            "",
            "",
            command,
        ),
        (
            "8. Transform alone, CPU per event (same suite)",
            _fmt(n.get("transform_us_per_event"), 2) + " µs",
            "",
            "",
            f"`{n['transform_command']}`{at}" if n else "",
        ),
        (
            "8. Sandbox ceiling, 8 requests of 500 in flight (same suite)",
            sandbox,
            "",
            "",
            f"`{n['sandbox_command']}`{at}" if n else "",
        ),
        (
            "8. Runs where every valid event was accepted, every invalid one dead-lettered "
            "and every offset committed (Kafka's view)",
            "not run" if runs is None else f"{runs:.0f} of {runs:.0f}",
            "all (a run that loses one fails the suite)",
            _met(None if runs is None else True),
            command,
        ),
    ]


def _sick_rows(r: dict[str, Any], command: str) -> list[tuple[str, str, str, str, str]]:
    """Section 11: a sick account beside a healthy one (bench/sick_account.py)."""

    def get(key: str) -> dict[str, float] | None:
        value = r.get(key)
        return value if isinstance(value, dict) else None

    ratio = (get("park_to_alone") or {}).get("median")
    lost = (get("lost") or {}).get("max")
    setup = r.get("setup", "")
    return [
        (
            f"11. Sick account (500 forever) beside a healthy one on the same {e2e.PARTITIONS} "
            f"partitions ({setup}): healthy account's rate beside it / alone",
            _fmt(get("park_to_alone"), 3) + " x",
            "≥ 0.9 x",
            _met(None if ratio is None else ratio >= 0.9),
            command,
        ),
        (
            "11. Healthy account's events/s: alone / beside the sick one (park) / "
            "beside it with stuck_policy = hold (before issue 12)",
            _fmt(get("alone_events_per_s"))
            + " / "
            + _fmt(get("park_events_per_s"))
            + " / "
            + _fmt(get("hold_events_per_s")),
            "",
            "",
            command,
        ),
        (
            "11. While sick: source events committed (share of the backlog) / events parked",
            _fmt(get("source_committed_share"), 3) + " / " + _fmt(get("parked_events")),
            "",
            "",
            command,
        ),
        (
            "11. Fault cleared: time until every event was accepted and both topics committed "
            "to their end (Kafka's tool) / events lost",
            _fmt(get("recovered_s"), 1) + " s / " + _fmt(get("lost")),
            "0 lost",
            _met(None if lost is None else lost == 0),
            command,
        ),
    ]


SANDBOX_HEADING = "## Sandbox throughput (bench/sandbox_bench.py, run by hand)"


def kept_section(path: Path) -> list[str]:
    """The hand-run sandbox section of the current file: run_all does not measure it,
    so a rewrite carries it over as it is."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    if SANDBOX_HEADING not in lines:
        return []
    start = lines.index(SANDBOX_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = lines[start:end]
    while section and not section[-1].strip():
        section.pop()
    return [*section, ""]


def render(info: dict[str, str], r: dict[str, Any], kept: list[str] | None = None) -> str:
    def get(name: str, key: str) -> dict[str, float] | None:
        value = r.get(name, {}).get(key)
        return value if isinstance(value, dict) else None

    def med(name: str, key: str) -> float | None:
        stat = get(name, key)
        return None if stat is None else stat["median"]

    def cmd(name: str) -> str:
        if name not in r:
            return ""
        cpu = f", {r[name]['cpu']}" if r[name].get("cpu") else ""
        return f"`{r[name]['command']}` ({r[name]['mode']}, {r[name]['at']}{cpu})"

    rows: list[tuple[str, str, str, str, str]] = []
    tr = med("transform", "us_per_event")
    rows.append(
        (
            "1. Transform, CPU per event (native fast path; the Python reference)",
            _fmt(get("transform", "us_per_event"), 2)
            + " µs"
            + (
                f" (reference {_fmt(get('transform', 'reference_us_per_event'), 2)} µs)"
                if get("transform", "reference_us_per_event") is not None
                else ""
            ),
            "≤ 5 µs",
            _met(None if tr is None else tr <= 5),
            cmd("transform"),
        )
    )
    eps, ratio = med("e2e", "events_per_s"), med("e2e", "ratio_to_ceiling")
    size = med("e2e", "events")
    rows += [
        (
            f"2. End to end, 1 account, limit off ({size or 0:,.0f} events, 12 partitions)",
            _fmt(get("e2e", "events_per_s")) + " events/s",
            "≥ 55,600 events/s",
            _met(None if eps is None else eps >= e2e.X_EVENTS_PER_S),
            cmd("e2e"),
        ),
        (
            "2. Raw consume ceiling (confluent-kafka Consumer, discard)",
            _fmt(get("e2e", "raw_ceiling_per_s")) + " events/s",
            "",
            "",
            cmd("e2e"),
        ),
        (
            "2. Throughput / raw ceiling",
            _fmt(get("e2e", "ratio_to_ceiling"), 3),
            "≥ 0.5",
            _met(None if ratio is None else ratio >= 0.5),
            cmd("e2e"),
        ),
        (
            "2. Consumer process CPU per event",
            _fmt(get("e2e", "cpu_us_per_event"), 1) + " µs",
            "",
            "",
            cmd("e2e"),
        ),
        ("2. Consumer peak RSS", _fmt(get("e2e", "peak_rss_mb")) + " MB", "", "", cmd("e2e")),
        (
            "3. Cores used while at that rate: consumer / sandbox",
            _fmt(get("e2e", "consumer_cores"), 2) + " / " + _fmt(get("e2e", "sandbox_cores"), 2),
            "55,600 events/s on one process",
            _met(None if eps is None else eps >= e2e.X_EVENTS_PER_S),
            cmd("e2e"),
        ),
    ]
    noop = med("engine", "noop_cpu_us_per_event")
    rows += [
        (
            "2b. Engine's own CPU per event (no-op transform, same run as the next row)",
            _fmt(get("engine", "noop_cpu_us_per_event"), 1) + " µs",
            "≤ 3 µs",
            _met(None if noop is None else noop <= 3),
            cmd("engine"),
        ),
        (
            "2b. Bare AIOConsumer loop (2,000 per call, nothing done) in the same rounds /"
            " the engine's no-op figure above it",
            _fmt(get("engine", "floor_cpu_us_per_event"), 1)
            + " µs / "
            + _fmt(get("engine", "noop_above_floor_us"), 1)
            + " µs",
            "",
            "",
            cmd("engine"),
        ),
        (
            "2b. The engine's HTTP path alone (its client, 500 events per request, 16 in"
            " flight) in the same rounds / the no-op figure above both floors",
            _fmt(get("engine", "http_floor_cpu_us_per_event"), 1)
            + " µs / "
            + _fmt(get("engine", "noop_above_floors_us"), 1)
            + " µs",
            "",
            "",
            cmd("engine"),
        ),
        (
            "2b. The naive script (bench/naive_baseline.py) with the same no-op transform, same"
            " rounds / the engine's no-op figure over it (per round)",
            _fmt(get("engine", "naive_noop_cpu_us_per_event"), 1)
            + " µs / "
            + _fmt(get("engine", "noop_to_naive_noop"), 2)
            + " x",
            "",
            "",
            cmd("engine"),
        ),
        (
            "2b. Where the no-op CPU goes, engine / naive script: asyncio loop thread,"
            " librdkafka's threads, the rest (executor threads building messages)",
            " / ".join(
                ", ".join(
                    _fmt(get("engine", f"{who}_{group}_cpu_us_per_event"), 1)
                    for group in ("loop", "librdkafka", "other")
                )
                for who in ("noop", "naive_noop")
            )
            + " µs",
            "",
            "",
            cmd("engine"),
        ),
        (
            "2b. Consumer CPU per event with the real transform (interleaved rounds)",
            _fmt(get("engine", "full_cpu_us_per_event"), 1) + " µs",
            "",
            "",
            cmd("engine"),
        ),
        (
            "2b. Throughput, no-op transform / real transform",
            _fmt(get("engine", "noop_events_per_s"))
            + " / "
            + _fmt(get("engine", "full_events_per_s"))
            + " events/s",
            "",
            "",
            cmd("engine"),
        ),
    ]
    rows += _v1_rows(r.get("v1", {}), cmd("v1"))
    for name, label in (("pacing_headers", "with headers"), ("pacing_no_headers", "no headers")):
        used = med(name, "budget_used")
        limited = med(name, "http_429")
        setup = r.get(name, {}).get("setup", "")
        rows.append(
            (
                f"4. Rate budget used, {label} ({setup})",
                _fmt(get(name, "budget_used"), 3) + f"; 429s: {_fmt(get(name, 'http_429'))}",
                "≥ 0.95, no 429" if name == "pacing_headers" else "(no target)",
                _met(
                    None
                    if used is None or limited is None or name != "pacing_headers"
                    else used >= 0.95 and limited == 0
                ),
                cmd(name),
            )
        )
    rss = med("outage", "peak_rss_mb_outage")
    committed = med("outage", "committed_during_outage")
    rows += [
        (
            f"5. Outage ({med('outage', 'events') or 0:,.0f} events backlog, "
            f"{med('outage', 'outage_s') or 0:.0f} s of 503): peak RSS during the outage",
            _fmt(get("outage", "peak_rss_mb_outage")) + " MB",
            "< 256 MB",
            _met(None if rss is None else rss < 256),
            cmd("outage"),
        ),
        (
            "5. Outage: peak RSS over the whole run, drain included",
            _fmt(get("outage", "peak_rss_mb")) + " MB",
            "",
            "",
            cmd("outage"),
        ),
        (
            "5. Outage: partitions paused (peak) / events in flight (peak)",
            _fmt(get("outage", "peak_partitions_paused"))
            + " / "
            + _fmt(get("outage", "peak_in_flight")),
            "",
            "",
            cmd("outage"),
        ),
        (
            "5. Outage: offsets committed while nothing was accepted",
            _fmt(get("outage", "committed_during_outage")),
            "0",
            _met(None if committed is None else committed == 0),
            cmd("outage"),
        ),
        (
            "5. Outage: time to drain the backlog after recovery",
            _fmt(get("outage", "drain_s"), 1) + " s",
            "",
            "",
            cmd("outage"),
        ),
        (
            f"6. Latency produce → accepted at {med('latency', 'rate') or 0:,.0f} events/s: p50",
            _fmt(get("latency", "p50_ms")) + " ms",
            "",
            "",
            cmd("latency"),
        ),
        ("6. Latency: p99", _fmt(get("latency", "p99_ms")) + " ms", "", "", cmd("latency")),
    ]
    base, thr = (
        med("accounts_baseline", "others_events_per_s"),
        med("accounts_throttled", "others_events_per_s"),
    )
    rows += [
        (
            "7. 20 accounts, none throttled: throughput of accounts 1-19",
            _fmt(get("accounts_baseline", "others_events_per_s")) + " events/s",
            "",
            "",
            cmd("accounts_baseline"),
        ),
        (
            "7. 20 accounts, account 0 at 2 requests/10 s: throughput of accounts 1-19",
            _fmt(get("accounts_throttled", "others_events_per_s")) + " events/s",
            "≥ 0.9 x baseline",
            _met(None if base is None or thr is None else thr >= 0.9 * base),
            cmd("accounts_throttled"),
        ),
    ]
    rows += _naive_rows(r.get("naive", {}), cmd("naive"))
    rows += _chaos_rows(r.get("chaos"), cmd("chaos"))
    gap, bound = med("replicas", "longest_gap_s"), med("replicas", "gap_bound_s")
    used, limited = med("replicas", "budget_used_min_window"), med("replicas", "http_429")
    setup = r.get("replicas", {}).get("setup", "")
    rows += [
        (
            f"10. 3 replicas sharing 1 account, with headers ({setup}): "
            "budget used, worst window / over time",
            _fmt(get("replicas", "budget_used_min_window"), 3)
            + " / "
            + _fmt(get("replicas", "budget_used_time"), 3)
            + f"; 429s: {_fmt(get('replicas', 'http_429'))}",
            "≥ 0.95, no 429",
            _met(None if used is None or limited is None else used >= 0.95 and limited == 0),
            cmd("replicas"),
        ),
        (
            "10. 3 replicas: longest time with nothing accepted",
            _fmt(get("replicas", "longest_gap_s"), 2)
            + f" s (bound {bound or 0:.2f} s: 3 nominal slots of one replica)",
            "≤ 3 slots",
            _met(None if gap is None or bound is None else gap <= bound),
            cmd("replicas"),
        ),
    ]
    rows += _sick_rows(r.get("sick", {}), cmd("sick"))
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.run_all` (see `docs/benchmarks.md` for what each",
        "scenario does and how it measures). Figures: **median** (min - max) over the runs.",
        "Everything runs on one machine: the broker, the sandbox, the consumer and the load",
        "share the cores below, and other jobs may run at the same time.",
        "",
        "## Machine",
        "",
        "The machine of the latest run; each figure's command names the CPU it ran on.",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        "## Figures",
        "",
        "| figure | result | target | verdict | command |",
        "|---|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows],
        "",
        *(kept or []),
        "## Raw results",
        "",
        "Every measured value per scenario (median/min/max) is in `bench/results.json`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
