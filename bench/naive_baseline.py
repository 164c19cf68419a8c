"""A naive baseline of our own: the yardstick for xconv's cost per event (issue 13).

What an engineer would write in an afternoon with confluent-kafka and aiohttp: the
project's own transform in pure Python (``Transformer`` with ``transform.engine =
"python"``, the reference: same outputs as ``xconv run``, but no compiled core, which
an afternoon's script would not have), batches of up to 500 events,
8 batches in flight, offsets committed in the order the batches were read once the API
answered 200 to all of a batch's requests. Rejected events go to the dead-letter topic
with ``xconv.reason``. No rate-limit pacing, no back-pressure beyond the in-flight cap,
every failure retried each second forever (a 400 ends the process), no rebalance care:
a benchmark helper, not a product.

    python -m bench.naive_baseline run --config FILE    (the file ``xconv run`` reads)
    python -m bench.naive_baseline --noop-transform run --config FILE

``--noop-transform`` hands out the first event's conversion for every later one (as
bench/noop_engine.py does for ``xconv run``): what such a script spends on everything
but the transform, beside the engine's own no-op figure.

It prints ``first fetch`` when the first messages arrive (the benchmark's clock starts).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from confluent_kafka import Consumer, Producer, TopicPartition
from oauthlib.oauth1 import Client

from bench.noop_engine import NoopTransformer
from consumer.settings import AccountSettings, Settings, load_settings
from consumer.transform import Conversion, Rejection, Transformer

BATCH = 500
IN_FLIGHT = 8

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read
Signer = Callable[[str], dict[str, str]]


@dataclass(slots=True)
class Pending:
    offsets: Offsets
    done: bool = False


@dataclass(slots=True)
class InOrderCommits:
    """Batches finish in any order; their offsets are released in the order they were read.

    Each batch is one ``consume()`` call, so a partition's offsets only grow from one batch
    to the next: the finished head of the queue is safe to commit, nothing behind it is.
    """

    queue: deque[Pending] = field(default_factory=deque)

    def add(self, offsets: Offsets) -> Pending:
        pending = Pending(offsets)
        self.queue.append(pending)
        return pending

    def ready(self) -> Offsets:
        out: Offsets = {}
        while self.queue and self.queue[0].done:
            out.update(self.queue.popleft().offsets)
        return out


def signer(account: AccountSettings) -> Signer:
    """X-Pixel-Token, or an OAuth 1.0a header signed per request."""
    if account.auth == "pixel_token" and account.pixel_token is not None:
        fixed = {"X-Pixel-Token": account.pixel_token.get_secret_value()}
        return lambda _url: fixed
    key, secret, token, token_secret = (
        s.get_secret_value() if s is not None else ""
        for s in (
            account.consumer_key,
            account.consumer_secret,
            account.access_token,
            account.access_token_secret,
        )
    )
    client = Client(
        key, client_secret=secret, resource_owner_key=token, resource_owner_secret=token_secret
    )
    return lambda url: {"Authorization": client.sign(url, http_method="POST")[1]["Authorization"]}


async def post(session: aiohttp.ClientSession, url: str, body: bytes, sign: Signer) -> None:
    """POST until the API answers 200."""
    while True:
        headers = {"Content-Type": "application/json", **sign(url)}
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                text = await resp.read()
                if resp.status == 200:
                    return
                if resp.status == 400:
                    raise RuntimeError(f"HTTP 400: {text[:500]!r}")
                print(f"HTTP {resp.status}, retrying", flush=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"{type(exc).__name__}, retrying", flush=True)
        await asyncio.sleep(1.0)


async def run(settings: Settings, noop_transform: bool = False) -> None:
    kafka = settings.kafka
    # The reference transform: a naive script is plain Python (xconv's native core is
    # part of what the comparison measures).
    kind = NoopTransformer if noop_transform else Transformer
    transformer = kind(settings.transform.model_copy(update={"engine": "python"}), settings.routing)
    signers = {a.account_id: signer(a) for a in settings.accounts}
    base = f"{settings.api.base_url.rstrip('/')}/{settings.api.version}/measurement/conversions/"
    common = kafka.client_config()
    consumer = Consumer(
        {
            **common,
            "group.id": kafka.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({**common, "linger.ms": 5})
    consumer.subscribe(kafka.topics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    order = InOrderCommits()
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def deliver(
        pending: Pending, groups: dict[tuple[str, str], list[bytes]], dlq: bool
    ) -> None:
        try:
            await asyncio.gather(
                *(
                    post(
                        session,
                        base + pixel,
                        b'{"conversions":[' + b",".join(p) + b"]}",
                        signers[acct],
                    )
                    for (acct, pixel), p in groups.items()
                )
            )
            if dlq:
                left: int = await asyncio.to_thread(producer.flush, 30.0)
                if left:
                    raise RuntimeError(f"{left} dead letters not acknowledged")
            pending.done = True
        finally:
            slots.release()

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            failures.append(error)
            stop.set()

    def commit(final: bool = False) -> None:
        ready = order.ready()
        if ready:
            parts = [TopicPartition(t, p, o) for (t, p), o in ready.items()]
            if final:
                consumer.commit(offsets=parts, asynchronous=False)
            else:
                consumer.commit(offsets=parts, asynchronous=True)

    first = True
    timeout = aiohttp.ClientTimeout(total=settings.api.request_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            await slots.acquire()
            messages = await asyncio.to_thread(consumer.consume, BATCH, 0.2)
            commit()
            if not messages:
                slots.release()
                continue
            if first:
                print("first fetch", flush=True)
                first = False
            offsets: Offsets = {}
            groups: dict[tuple[str, str], list[bytes]] = {}
            dlq = False
            for msg in messages:
                if msg.error() is not None:
                    print(f"kafka: {msg.error()}", flush=True)
                    continue
                value = msg.value() or b""
                result = transformer.transform(value)
                if isinstance(result, Conversion):
                    route = result.route
                    groups.setdefault((route.account_id, route.pixel_id), []).append(result.payload)
                elif isinstance(result, Rejection):
                    headers: list[tuple[str, str | bytes | None]] = [
                        ("xconv.reason", result.reason)
                    ]
                    producer.produce(kafka.dead_letter_topic, value, msg.key(), headers=headers)
                    dlq = True
                offsets[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            task = asyncio.create_task(deliver(order.add(offsets), groups, dlq))
            tasks.add(task)
            task.add_done_callback(finished)
        await asyncio.gather(*tasks, return_exceptions=True)
    commit(final=True)
    consumer.close()
    producer.flush(30)
    if failures:
        raise failures[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--noop-transform", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(run(load_settings(args.config), args.noop_transform))
    return 0


if __name__ == "__main__":
    sys.exit(main())
