"""The floor under the engine's sending: CPU per event of its HTTP path alone.

Not a test. Transforms ``--events`` pool events once (outside the measurement), then
sends their conversions to a fresh sandbox in 500-event bodies through the engine's own
pieces (``make_session``, ``XAdsClient``, OAuth 1.0a signing, ``Batch.body``), with the
account's default 16 requests in flight, and prints the process's CPU per event while
sending (its body building, signing, aiohttp and the kernel's share of the socket
writes). With ``bench.consume_floor`` it says how much of the no-op engine's figure
any Python consumer that fetches with confluent-kafka and posts with aiohttp pays.
``raw`` sends the same bodies, signed alike, with a bare HTTP/1.1 client on asyncio
streams (one request per connection at a time, no aiohttp): aiohttp's share of it.

    python -m bench.http_floor --events 200000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bench import e2e
from bench.common import RUN_ROOT, process_cpu_s
from consumer.delivery.batcher import MAX_EVENTS_PER_REQUEST, Batch, new_batch_id
from consumer.delivery.client import XAdsClient, conversions_url, make_session
from consumer.delivery.engine import account_auth
from consumer.settings import Settings
from consumer.transform import Conversion, Transformer
from devtools.stack import DEMO_ACCOUNT


def _bodies(settings: Settings, values: list[bytes]) -> list[Batch]:
    transformer = Transformer(settings.transform, settings.routing)
    payloads = [r.payload for v in values if type(r := transformer.transform(v)) is Conversion]
    size = MAX_EVENTS_PER_REQUEST
    key = (DEMO_ACCOUNT["account_id"], DEMO_ACCOUNT["pixel_id"])
    return [
        Batch(new_batch_id(), key, payloads[i : i + size], [], [], 0.0)
        for i in range(0, len(payloads), size)
    ]


async def _timed(one: Callable[[Batch], Awaitable[None]], batches: list[Batch]) -> float:
    """CPU seconds to ``one`` every batch but the first, which connects and warms up."""
    await one(batches[0])
    start = process_cpu_s()
    await asyncio.gather(*(one(batch) for batch in batches[1:]))
    return process_cpu_s() - start


async def _send_all(settings: Settings, batches: list[Batch], in_flight: int) -> float:
    """CPU seconds to send every batch, ``in_flight`` at a time; all must be accepted."""
    api, account = settings.api, settings.accounts[0]
    session = make_session(api.connect_timeout_s, api.request_timeout_s)
    client = XAdsClient(session, api.base_url, api.version, account_auth(account))
    slots = asyncio.Semaphore(in_flight)

    async def one(batch: Batch) -> None:
        async with slots:
            answer = await client.send(account.pixel_id, batch.body())
            if answer.status != 200:
                raise RuntimeError(f"sandbox answered {answer.status}: {answer.body[:200]!r}")

    try:
        return await _timed(one, batches)
    finally:
        await session.close()


async def _send_all_raw(settings: Settings, batches: list[Batch], in_flight: int) -> float:
    """``_send_all`` with a bare HTTP/1.1 client: ``in_flight`` kept-alive connections."""
    api, account = settings.api, settings.accounts[0]
    auth = account_auth(account)
    url = conversions_url(api.base_url, api.version, account.pixel_id)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(in_flight):
        idle.put_nowait(await asyncio.open_connection(host, port))

    async def one(batch: Batch) -> None:
        async with asyncio.timeout(api.request_timeout_s):
            await exchange(batch)

    async def exchange(batch: Batch) -> None:
        reader, writer = await idle.get()
        body = batch.body()
        headers = {"Content-Type": "application/json", **auth.headers("POST", url)}
        head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        head += f"Content-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode())
        writer.write(body)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = await reader.readexactly(length)
        if status.split(b" ")[1:2] != [b"200"]:
            raise RuntimeError(f"sandbox answered {status!r}: {answer[:200]!r}")
        idle.put_nowait((reader, writer))

    try:
        return await _timed(one, batches)
    finally:
        while not idle.empty():
            idle.get_nowait()[1].close()


def floor_us_per_event(
    suite: e2e.Suite,
    pool: e2e.Pool,
    events: int,
    in_flight: int | None = None,
    client: Literal["xads", "raw"] = "xads",
) -> float:
    """CPU per event of sending ``events`` pool events' conversions, 500 per request,
    to a fresh sandbox (its validation on, its rate limit off), with the engine's
    client (``xads``) or the bare one (``raw``)."""
    suite.new_run({"accounts": [e2e._demo_sandbox_account({"enabled": False})]})
    settings = suite.settings()
    _, values = pool.tiled(events)
    batches = _bodies(settings, values)
    slots = in_flight or settings.accounts[0].max_in_flight
    send = _send_all if client == "xads" else _send_all_raw
    used = asyncio.run(send(settings, batches, slots))
    sent = sum(len(batch) for batch in batches[1:])
    return used / sent * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=RUN_ROOT / "http-floor")
    args = parser.parse_args(argv)
    suite = e2e.Suite(args.workdir)
    pool = e2e.Pool.make(20_000)
    try:
        for _ in range(args.rounds):
            for client in ("xads", "raw"):
                cost = floor_us_per_event(suite, pool, args.events, client=client)
                print(f"{client:4s} {cost:.2f} µs of CPU per event", flush=True)
    finally:
        suite.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
