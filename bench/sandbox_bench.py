"""Throughput of ``xconv sandbox``: full 500-event requests per second on one core.

Not a test. The sandbox runs in its own process (one event loop, so one core); the load
comes from another process with pre-built bodies and keep-alive connections, first with
``X-Pixel-Token``, then with OAuth 1.0a (every request signed with its own nonce, signed
before the measured window so that the client's signing does not set the rate).
Rate limiting is switched off in the sandbox's config. Each is measured with the field
rules on (the sandbox as tests use it) and off (``validation = false``: what end-to-end
benchmarks can use to find the client's own ceiling). Reports the median, min and max
requests/s over several runs, and the command line that produced them.

    .venv/bin/python bench/sandbox_bench.py --runs 5 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from oauthlib.oauth1 import Client

from consumer.sandbox.config import (
    DEMO_ACCESS_TOKEN,
    DEMO_ACCESS_TOKEN_SECRET,
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    DEMO_PIXEL_TOKEN,
    demo_account,
)
from consumer.sandbox.validation import accepted_event_ids, validate_body, validate_detailed

PRESIGNED_PER_S = 1500  # OAuth headers signed ahead per second of a run (then: inline)
HASH = "d360d510a224510f373931ce2d6215a799f5a9c1cef221b0149b6b6b50cced62"
PHONE = "1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"


def build_bodies(count: int, events: int) -> list[bytes]:
    """Bodies shaped like the reference page's example (four identifiers, one content)."""
    bodies = []
    for body_index in range(count):
        conversions = [
            {
                "conversion_time": "2024-05-01T10:00:00.000Z",
                "event_id": "ol288",
                "identifiers": [
                    {"twclid": "23opevjt88psuo13lu8d020qkn"},
                    {"hashed_email": HASH},
                    {"hashed_phone_number": PHONE},
                    {"ip_address": "8.25.197.25", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
                ],
                "value": "20.00",
                "price_currency": "USD",
                "number_items": 3,
                "conversion_id": f"bench-{body_index}-{i}",
                "description": "Pet supply purchases",
                "contents": [
                    {
                        "content_id": "1",
                        "content_name": "Blankets",
                        "content_type": "Pet supplies",
                        "content_price": 100.99,
                        "num_items": 1,
                        "content_group_id": "123",
                    }
                ],
            }
            for i in range(events)
        ]
        bodies.append(orjson.dumps({"conversions": conversions}))
    return bodies


async def _drive(
    url: str, bodies: list[bytes], auth: str, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    signer = Client(
        DEMO_CONSUMER_KEY,
        client_secret=DEMO_CONSUMER_SECRET,
        resource_owner_key=DEMO_ACCESS_TOKEN,
        resource_owner_secret=DEMO_ACCESS_TOKEN_SECRET,
    )
    base_headers = {"Content-Type": "application/json"}
    if auth == "token":
        base_headers["X-Pixel-Token"] = DEMO_PIXEL_TOKEN
    # Signed before the clock starts (each with its own nonce; fresh for the sandbox's
    # 300 s skew): the client's signing must not be what limits the sandbox's rate.
    presigned = (
        [
            signer.sign(url, http_method="POST")[1]["Authorization"]
            for _ in range(int(PRESIGNED_PER_S * (warmup_s + duration_s)))
        ]
        if auth == "oauth"
        else []
    )
    counts = {"ok": 0, "other": 0}
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        n = offset
        while True:
            now = loop.time()
            if now >= stop_at:
                return
            headers = base_headers
            if auth == "oauth":
                signed = (
                    presigned.pop()
                    if presigned
                    else signer.sign(url, http_method="POST")[1]["Authorization"]
                )
                headers = {**base_headers, "Authorization": signed}
            async with session.post(url, data=bodies[n % len(bodies)], headers=headers) as resp:
                await resp.read()
                done = loop.time()
                if measure_from <= done < stop_at:
                    counts["ok" if resp.status == 200 else "other"] += 1
            n += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
    return {"ok": counts["ok"], "other": counts["other"], "seconds": duration_s}


def _client_process(
    url: str,
    bodies: list[bytes],
    auth: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    cpu: int | None,
    out: Any,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    out.put(asyncio.run(_drive(url, bodies, auth, concurrency, warmup_s, duration_s)))


def validation_ceiling(
    body: bytes, runs: int, repeat: int = 50, check: Any = validate_body
) -> list[float]:
    """Requests/s the validator alone allows (parse + rules, in this process, no HTTP)."""
    event_ids = accepted_event_ids("oka17", ["ol288"])
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(repeat):
            assert check(body, event_ids=event_ids).ok
        rates.append(repeat / (time.perf_counter() - started))
    return rates


def start_sandbox(
    workdir: Path, cpu: int | None, *, validation: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    account = demo_account().model_dump()
    account["rate_limit"] = {"enabled": False, "send_headers": False}
    config_path = workdir / "bench-sandbox.json"
    config: dict[str, Any] = {"accounts": [account]}
    if not validation:
        config["validation"] = False
    config_path.write_text(json.dumps(config))
    command = [
        sys.executable,
        "-m",
        "consumer.sandbox",
        "--port",
        "0",
        "--config",
        str(config_path),
    ]
    command += ["--log-level", "warning"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    if not ready:
        process.kill()
        raise RuntimeError("sandbox did not start")
    line = process.stdout.readline().decode().strip()
    return process, line.removeprefix("listening on ")


def _measure(
    context: Any,
    server: psutil.Process,
    endpoint: str,
    bodies: list[bytes],
    mode: str,
    validation: bool,
    args: argparse.Namespace,
) -> None:
    rates = []
    per_cpu_s = []
    for _ in range(args.runs):
        cpu_before = sum(server.cpu_times()[:2])
        queue = context.Queue()
        client = context.Process(
            target=_client_process,
            args=(
                endpoint,
                bodies,
                mode,
                args.concurrency,
                args.warmup,
                args.duration,
                1 if args.pin else None,
                queue,
            ),
        )
        client.start()
        result = queue.get(timeout=args.warmup + args.duration + 120)
        client.join()
        # The sandbox is busy for the warm-up too: CPU per request over the whole run.
        cpu_used = sum(server.cpu_times()[:2]) - cpu_before
        total_requests = result["ok"] * (args.warmup + args.duration) / args.duration
        per_cpu_s.append(total_requests / cpu_used if cpu_used else 0.0)
        if result["other"]:
            print(f"  warning: {result['other']} answers were not 200")
        rates.append(result["ok"] / result["seconds"])
    median = statistics.median(rates)
    label = f"{mode}, validation {'on' if validation else 'off'}"
    print(
        f"{label:>20}: median {median:7.1f} req/s ({median * args.events:,.0f} conv/s)"
        f"  min {min(rates):7.1f}  max {max(rates):7.1f}  runs {len(rates)}"
    )
    print(
        f"{'sandbox CPU':>20}: median {statistics.median(per_cpu_s):7.1f} req per "
        f"CPU-second (min {min(per_cpu_s):.1f}, max {max(per_cpu_s):.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds ignored per run")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--events", type=int, default=500, help="conversions per request")
    parser.add_argument("--auth", choices=["token", "oauth", "both"], default="both")
    parser.add_argument(
        "--validation",
        choices=["on", "off", "both"],
        default="both",
        help="the sandbox's field rules (config key validation)",
    )
    parser.add_argument(
        "--pin", action="store_true", help="pin the sandbox to CPU 0 and the client to CPU 1"
    )
    args = parser.parse_args()
    bodies = build_bodies(8, args.events)
    modes = ["token", "oauth"] if args.auth == "both" else [args.auth]
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"body: {len(bodies[0]):,} bytes, {args.events} conversions; cores: {os.cpu_count()}")
    for name, check in (("", validate_body), (" (detailed path)", validate_detailed)):
        ceiling = validation_ceiling(bodies[0], args.runs, check=check)
        print(
            f"validation alone{name}: median {statistics.median(ceiling):7.1f} req/s "
            f"(min {min(ceiling):.1f}, max {max(ceiling):.1f})"
        )
    context = multiprocessing.get_context("spawn")
    validations = {"on": [True], "off": [False], "both": [True, False]}[args.validation]
    for validation in validations:
        with tempfile.TemporaryDirectory() as tmp:
            process, url = start_sandbox(Path(tmp), 0 if args.pin else None, validation=validation)
            endpoint = f"{url}/12/measurement/conversions/oka17"
            try:
                server = psutil.Process(process.pid)
                for mode in modes:
                    _measure(context, server, endpoint, bodies, mode, validation, args)
            finally:
                process.terminate()
                process.wait(10)
    return 0


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"total {time.monotonic() - start:.0f} s")
    sys.exit(code)
