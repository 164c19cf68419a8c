"""CPU time per event of ``Transformer.transform`` on a realistic mix (not a test).

Mix: canonical events with e-mail, phone (mixed national/international/E.164 formats),
IP + user agent, twclid and 3 line items; 5 % invalid. By default ``transform.engine =
"auto"`` (the native fast path when installed) and the Python reference run alternately
on the same events, and the fast path's coverage is printed. ``--preset auto`` runs the
generator's own events of all four shapes (5 % invalid) through shape detection. Reports
the median of several runs with min/max, then a cProfile summary of one run.

    .venv/bin/python bench/transform_bench.py [--events 20000] [--runs 7] [--preset canonical]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import orjson

from consumer.samples import PRESETS, SampleGenerator
from consumer.transform import (
    Conversion,
    RouteSettings,
    RoutingSettings,
    Transformer,
    TransformSettings,
)
from consumer.transform.config import Preset
from consumer.transform.native import load_error

NOW = 1_767_225_600.0  # fixed clock: results do not depend on the day


def build_events(count: int, preset: str) -> list[bytes]:
    """Samples shaped to the benchmark's mix: every identifier kind and 3 line items."""
    presets = list(PRESETS) if preset == Preset.AUTO else [preset]
    gen = SampleGenerator(seed=42, presets=presets, invalid_share=0.0, now=lambda: NOW)
    events: list[bytes] = []
    invalid = 0
    while len(events) < count:
        if invalid < (len(events) + 1) * 0.05:
            events.append(gen.event(defect=gen.random_defect()).value)
            invalid += 1
            continue
        sample = gen.event()
        if preset != "canonical":
            events.append(sample.value)
            continue
        body = orjson.loads(sample.value)
        user = body["user"]
        if "email" not in user or "phone" not in user or "twclid" not in user:
            continue  # keep the full identifier mix: e-mail, phone, twclid, ip, user agent
        body["items"] = (body["items"] * 3)[:3]
        events.append(orjson.dumps(body))
    return events


def one_run(transformer: Transformer, events: list[bytes]) -> float:
    transform = transformer.transform
    start = time.process_time()
    for raw in events:
        transform(raw)
    return (time.process_time() - start) / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--preset", default="canonical", choices=[p.value for p in Preset if p != Preset.CUSTOM]
    )
    parser.add_argument(
        "--engine",
        default="both",
        choices=["both", "auto", "native", "python"],
        help="both (default): transform.engine auto and the Python reference, runs alternated",
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="native engine: time its JSON read, read + conversion, and the whole call",
    )
    args = parser.parse_args()

    routing = RoutingSettings(
        default=RouteSettings(account_id="18ce552mlaq", pixel_id="oka17", event_id="ol288")
    )
    engines = ["auto", "python"] if args.engine == "both" else [args.engine]
    transformers = [
        Transformer(TransformSettings(preset=args.preset, engine=e), routing, now=lambda: NOW)
        for e in engines
    ]
    events = build_events(args.events, args.preset)
    first = transformers[0]
    accepted = sum(isinstance(first.transform(e), Conversion) for e in events)
    for transformer in transformers:
        one_run(transformer, events)  # warm-up
    native = first.native
    before = dict(native.stats()) if native is not None else None
    per_event: list[list[float]] = [[] for _ in transformers]
    for _ in range(args.runs):  # alternated: load on the shared machine hits both alike
        for column, transformer in zip(per_event, transformers, strict=True):
            column.append(one_run(transformer, events))
    mean_bytes = sum(map(len, events)) / len(events)
    print(
        f"preset={args.preset} events={len(events)} accepted={accepted / len(events):.1%} "
        f"mean_size={mean_bytes:.0f}B runs={args.runs}"
    )
    if native is not None and before is not None:
        after = native.stats()
        done = after["native"] - before["native"]
        deferred = after["deferred"] - before["deferred"]
        calls = after["phone_callbacks"] - before["phone_callbacks"]
        total = done + deferred
        print(
            f"engine=native: {done} of {total} events answered natively "
            f"({done / total:.2%}, rejections included), {deferred} by the reference; "
            f"phonenumbers callbacks for {calls} events ({calls / total:.2%})"
        )
    elif engines[0] != "python":
        why = load_error() or f"preset {args.preset} runs the reference"
        print(f"engine=python: {why}")
    for engine, column in zip(engines, per_event, strict=True):
        label = "CPU per event" if engine == engines[0] else f"{engine} reference CPU per event"
        print(
            f"{label}: median {statistics.median(column) * 1e6:.2f} us "
            f"(min {min(column) * 1e6:.2f}, max {max(column) * 1e6:.2f})"
        )
    if len(engines) == 2:
        ratio = statistics.median(per_event[0]) / statistics.median(per_event[1])
        print(f"engine {engines[0]} / reference: {ratio:.3f}")
    if args.breakdown and native is not None:
        stage = native._stage
        valid = [e for e in events if isinstance(first.transform(e), Conversion)]

        def staged(number: int) -> float:
            start = time.process_time()
            for raw in valid:
                stage(raw, number)
            return (time.process_time() - start) / len(valid)

        parts = {"read": 1, "read+convert": 2}
        times = {
            name: statistics.median(staged(n) for _ in range(args.runs))
            for name, n in parts.items()
        }
        whole = statistics.median(one_run(first, valid) for _ in range(args.runs))
        print(
            f"native breakdown (valid events): JSON read {times['read'] * 1e6:.2f} us, "
            f"conversion {(times['read+convert'] - times['read']) * 1e6:.2f} us, "
            f"result objects and call {(whole - times['read+convert']) * 1e6:.2f} us"
        )
    if not args.no_profile:
        profiler = cProfile.Profile()
        profiler.enable()
        one_run(first, events)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print(out.getvalue())


if __name__ == "__main__":
    main()
